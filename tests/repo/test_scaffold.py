"""What the scaffolder renders for each kind: files, configuration, deploy contract (no I/O)."""

from __future__ import annotations

import ast
import json

import pytest
import yaml

from consumers.analyst.rules import decide
from consumers.repo.scaffold import COMMON_FILES, JinjaScaffolder
from consumers.repo.scaffold_context import build_context, command_action, plural, snake_case
from contracts.spec import (
    ConfigVar,
    Entity,
    EntityField,
    Integration,
    Persistence,
    PersistenceKind,
    ProjectSpec,
    Schedule,
    ServiceKind,
)
from tests.repo.conftest import make_spec

HTTP, BOT, WORKER = ServiceKind.HTTP, ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER


def render(*kinds: ServiceKind, spec: ProjectSpec | None = None) -> dict[str, str]:
    return dict(JinjaScaffolder().render(spec or make_spec(*kinds, slug="family-expenses")).files)


def env_example(files: dict[str, str]) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in files[".env.example"].splitlines())
    return {name: value for name, value in (p for p in pairs if len(p) == 2) if "#" not in name}


@pytest.mark.parametrize("kinds", [(HTTP,), (BOT,), (WORKER,), (HTTP, WORKER), (BOT, HTTP, WORKER)])
def test_every_python_file_parses_and_every_yaml_and_json_loads(
    kinds: tuple[ServiceKind, ...],
) -> None:
    files = render(*kinds)
    for path, content in files.items():
        if path.endswith(".py"):
            ast.parse(content, filename=path)
        elif path.endswith((".yml", ".yaml")):
            assert yaml.safe_load(content), path
    assert json.loads(files["deploy.json"])["start"] == ["python", "-m", "app"]


def test_the_http_service_has_crud_api_and_tests_per_entity() -> None:
    files = render(HTTP)
    assert set(COMMON_FILES) <= set(files)
    assert {"app/api.py", "app/models.py", "app/store.py", "tests/test_api.py"} <= set(files)
    assert not {"app/bot.py", "app/worker.py"} & set(files)
    api, tests = files["app/api.py"], files["tests/test_api.py"]
    for path in ("/expenses", "/categories"):
        assert f'@router.post("{path}"' in api
        assert f'client.post("{path}"' in tests
    models = files["app/models.py"]
    assert "class ExpenseIn(BaseModel):" in models
    assert "    spent_on: date\n" in models
    assert "    created: datetime\n" in models
    assert "from datetime import date, datetime" in models
    assert "aiogram" not in files["requirements.txt"]


def test_deploy_json_tells_the_deployer_how_to_start_test_and_check() -> None:
    deploy = json.loads(render(WORKER)["deploy.json"])
    assert deploy == {
        "start": ["python", "-m", "app"],
        "health_path": "/health",
        "python": "3.11",
        "test": ["python", "-m", "pytest"],
        "requirements": "requirements.txt",
        "env_example": ".env.example",
        "version_env": "APP_VERSION",
        # Empty DATABASE_URL means SQLite in DATA_DIR: a deploy (or an adoption) never waits.
        "optional_secrets": ["DATABASE_URL"],
    }
    # A bot is useless without its token: its deploy waits for it (state awaiting_secrets).
    assert "TELEGRAM_BOT_TOKEN" not in json.loads(render(BOT)["deploy.json"])["optional_secrets"]


def test_env_example_lists_every_variable_and_leaves_secrets_empty() -> None:
    files = render(BOT, WORKER)
    values = env_example(files)
    assert values == {
        "HOST": "127.0.0.1",
        "PORT": "8000",
        "APP_VERSION": "dev",
        "LOG_LEVEL": "info",
        "DATA_DIR": "data",
        "OPENAI_API_KEY": "",
        "CURRENCY": "EUR",
        "REPORT_CHAT_ID": "",
        "TELEGRAM_BOT_TOKEN": "",
        "WORKER_INTERVAL_SECONDS": "60",
        "DATABASE_URL": "",
    }
    text = files[".env.example"]
    assert "# Categorises notes (secret, from Vault)\nOPENAI_API_KEY=\n" in text
    assert "(secret, from Vault)\nTELEGRAM_BOT_TOKEN=\n" in text
    settings = " ".join(files["app/settings.py"].split())
    for name in values:
        assert f" {name.lower()}: " in settings
    assert "openai_api_key: SecretStr = Field( description=" in settings
    assert 'telegram_bot_token: SecretStr = Field( SecretStr(""),' in settings
    assert "worker_interval_seconds: float = Field( 60.0," in settings


def test_a_secret_never_gets_a_default_even_if_the_spec_gives_one() -> None:
    spec = make_spec(HTTP).model_copy(
        update={"config": (ConfigVar(name="API_KEY", secret=True, default="leaked"),)}
    )
    files = render(spec=spec)
    assert "leaked" not in "".join(files.values())
    assert env_example(files)["API_KEY"] == ""


def test_the_bot_answers_every_spec_command_and_polls_only_with_a_token() -> None:
    files = render(BOT)
    bot = files["app/bot.py"]
    assert 'Command("add")' in bot
    assert 'Command("report")' in bot
    assert "if not token:" in bot
    assert "aiogram==" in files["requirements.txt"]
    # With entities, the spec's `add` and `report` commands store and count records.
    assert "stores.expenses.create(data)" in bot
    assert "def test_report_counts_every_entity" in files["tests/test_bot.py"]
    assert "app/api.py" not in files


def test_combined_kinds_share_one_process_and_one_health_endpoint() -> None:
    files = render(BOT, HTTP, WORKER)
    main = files["app/main.py"]
    assert "from app import bot, worker" in main
    assert "build_router(app.state.stores)" in main
    assert main.count('@app.get("/health")') == 1
    assert "Kind: http + telegram_bot + worker." in files["README.md"]


def test_compose_runs_the_service_with_its_env_file_restart_policy_and_healthcheck() -> None:
    compose = yaml.safe_load(render(HTTP)["compose.yaml"])
    service = compose["services"]["family-expenses"]
    assert service["env_file"] == ".env"
    assert service["restart"] == "unless-stopped"
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "app.healthcheck"]
    workflow = yaml.safe_load(render(HTTP)[".github/workflows/ci.yml"])
    steps = [step.get("run") for step in workflow["jobs"]["test"]["steps"]]
    assert "python -m pytest" in steps


def test_hostile_names_become_safe_identifiers_and_literals() -> None:
    spec = ProjectSpec(
        name='Evil """ name',
        slug="evil-service",
        summary='"""; import os; os.system("x") #',
        kinds=(HTTP,),
        entities=(
            Entity(
                name="class",
                fields=(
                    EntityField(name="import", type="weird"),
                    EntityField(name="2nd value", type="int"),
                    EntityField(name="id"),
                ),
            ),
        ),
        # The contract refuses such a name; the renderer must still be safe if one slipped by.
        config=(ConfigVar.model_construct(name="my-setting", default='a"b', secret=False),),
    )
    files = render(spec=spec)
    for path, content in files.items():
        if path.endswith(".py"):
            ast.parse(content, filename=path)
    assert "class ClassIn(BaseModel):" in files["app/models.py"]
    assert "    import_: str\n" in files["app/models.py"]
    assert "    field_2nd_value: int\n" in files["app/models.py"]
    assert 'my_setting: str = Field( "a\\"b",' in " ".join(files["app/settings.py"].split())


@pytest.mark.parametrize(
    ("word", "expected"),
    [("expense", "expenses"), ("category", "categories"), ("box", "boxes"), ("day", "days")],
)
def test_plural(word: str, expected: str) -> None:
    assert plural(word) == expected


def test_snake_case() -> None:
    assert snake_case("SpentOn date", "f") == "spent_on_date"
    assert snake_case("!!!", "field") == "field"


@pytest.mark.parametrize(
    ("command", "action", "entity"),
    [
        ("add", "add", "expense"),
        ("add_category", "add", "category"),
        ("list_categories", "list", "category"),
        ("show", "list", "expense"),
        ("delete_expense", "delete", "expense"),
        ("report", "report", None),
        ("add_unicorn", "", None),
        ("weather", "", None),
    ],
)
def test_bot_commands_map_to_the_crud_case_their_name_says(
    command: str, action: str, entity: str | None
) -> None:
    """The bot template implements a command only when its name says which CRUD case it is;
    anything else answers with its description, as before."""
    context = build_context(make_spec(BOT))
    entities = context["entities"]
    assert isinstance(entities, list)
    found, view = command_action(command, entities)
    assert (found, view.snake if view else None) == (action, entity)


def test_the_worker_interval_comes_from_the_spec_and_a_bad_one_falls_back() -> None:
    def settings_for(default: str) -> str:
        spec = make_spec(WORKER).model_copy(
            update={"config": (ConfigVar(name="WORKER_INTERVAL_SECONDS", default=default),)}
        )
        return " ".join(render(spec=spec)["app/settings.py"].split())

    assert "worker_interval_seconds: float = Field( 3600.0," in settings_for("3600")
    assert "worker_interval_seconds: float = Field( 60.0," in settings_for("hourly")
    assert "worker_interval_seconds: float = Field( 60.0," in settings_for("-5")


def test_the_spec_checks_become_the_projects_acceptance_tests() -> None:
    spec = decide("An API and a Telegram bot for tasks, with a daily background job", [])
    assert isinstance(spec, ProjectSpec)
    files = render(spec=spec)
    tests = files["tests/test_acceptance.py"]
    ast.parse(tests)
    literal = next(
        node.args[0]
        for node in ast.walk(ast.parse(tests))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "loads"
    )
    assert isinstance(literal, ast.Constant)
    assert isinstance(literal.value, str)
    assert json.loads(literal.value) == [c.model_dump(mode="json") for c in spec.checks]
    for test in ("def test_http_check", "def test_bot_checks_in_order", "def test_worker_check"):
        assert test in tests
    assert "tests/test_acceptance.py" not in render(HTTP)  # make_spec carries no checks


def test_a_secret_database_url_is_optional_and_read_as_a_secret() -> None:
    spec = make_spec(HTTP).model_copy(
        update={"config": (ConfigVar(name="DATABASE_URL", secret=True),)}
    )
    files = render(spec=spec)
    assert json.loads(files["deploy.json"])["optional_secrets"] == ["DATABASE_URL"]
    assert "settings.database_url.get_secret_value()" in files["app/main.py"]
    assert "psycopg[binary]==" in files["requirements.txt"]


def test_schedules_integrations_and_postgres_reach_the_readme_and_deploy_json() -> None:
    spec = make_spec(HTTP, WORKER).model_copy(
        update={
            "schedules": (
                Schedule(name="morning_digest", cron="0 8 * * *", action="send the digest"),
            ),
            "integrations": (
                Integration(
                    name="OpenWeather",
                    base_url="https://api.openweathermap.org/data/2.5",
                    env_vars=("OPENWEATHER_API_KEY",),
                ),
            ),
            "persistence": Persistence(kind=PersistenceKind.POSTGRES, stores="subscribers"),
        }
    )
    files = render(spec=spec)
    readme = files["README.md"]
    assert "- `morning_digest()`, cron `0 8 * * *` (UTC): send the digest" in readme
    assert "`GET /worker/status` shows each under `schedules`" in readme
    assert "OpenWeather at `https://api.openweathermap.org/data/2.5`" in readme
    assert "`OPENWEATHER_API_KEY`" in readme
    assert "PostgreSQL at `DATABASE_URL`" in readme
    # Asked for PostgreSQL, the URL is no longer optional: the deploy waits for it.
    assert json.loads(files["deploy.json"])["optional_secrets"] == []


def test_each_schedule_becomes_a_job_function_run_on_its_own_timing() -> None:
    spec = make_spec(HTTP, WORKER).model_copy(
        update={
            "schedules": (
                Schedule(name="weekly_digest", cron="0 9 * * 1", action='Send the """digest"""\\'),
                Schedule(name="job", every_seconds=3600, action="refresh the cache"),
                Schedule(name="if", cron="*/15 * * * *", action="poll the feed"),
            )
        }
    )
    files = render(spec=spec)
    module = ast.parse(files["app/worker.py"])
    functions = {node.name: node for node in module.body if isinstance(node, ast.AsyncFunctionDef)}
    # Named after the schedule, unless that name is the module's own or a keyword.
    assert {"job", "weekly_digest", "job_job", "if_job"} <= set(functions)
    docstring = ast.get_docstring(functions["weekly_digest"]) or ""
    assert docstring.startswith('Send the """digest"""\\\n')
    assert "Runs cron 0 9 * * 1 (UTC)" in docstring
    scheduled = " ".join(files["app/worker.py"].split("def scheduled_jobs", 1)[1].split())
    assert 'ScheduledJob("weekly_digest", Cron("0 9 * * 1"), partial(weekly_digest, stores)' in (
        scheduled
    )
    assert 'ScheduledJob("job_job", Every(3600), partial(job_job, stores), clock)' in scheduled
    assert 'ScheduledJob("if_job", Cron("*/15 * * * *")' in scheduled
    assert '"schedules": {schedule.name: schedule.status()' in files["app/worker.py"]
    tests = files["tests/test_worker.py"]
    ast.parse(tests)
    assert "def test_a_cron_expression_fires_at_its_next_matching_minute(" in tests
    assert 'jobs["weekly_digest"].next_run_at == Cron("0 9 * * 1").next_after(START)' in tests
    assert 'jobs["job_job"].next_run_at == START' in tests
    assert "- `if_job()`, cron `*/15 * * * *` (UTC): poll the feed" in files["README.md"]


def test_without_schedules_the_worker_runs_only_its_job() -> None:
    worker = render(HTTP, WORKER)["app/worker.py"]
    for name in ("ScheduledJob", "Cron", "schedules", "next_run_at"):
        assert name not in worker
    assert "task = asyncio.create_task(worker.run(stop))" in worker
