"""The offline analyst's rules and the slug rules, without I/O."""

from __future__ import annotations

import pytest

from consumers.analyst.rules import OFFLINE_PREFIX, Question, decide
from consumers.analyst.slugs import SLUG_PATTERN, slugify
from contracts.spec import (
    BotCheck,
    HttpCheck,
    PersistenceKind,
    ProjectSpec,
    ServiceKind,
    WorkerCheck,
)


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Расходы бот", "raskhody-bot"),
        ("Копилка", "kopilka"),
        ("Щука и Ёжик", "shchuka-i-ezhik"),
        ("My Expense Tracker!", "my-expense-tracker"),
        ("Café API", "cafe-api"),
        ("42", "project"),
        ("x", "project-x"),
    ],
)
def test_slugify_transliterates_and_matches_the_contract(text: str, slug: str) -> None:
    assert slugify(text) == slug
    assert SLUG_PATTERN.match(slug)


def test_english_bot_for_expenses() -> None:
    spec = decide("A Telegram bot that tracks my expenses by category, with a report", [])
    assert isinstance(spec, ProjectSpec)
    assert spec.kinds == (ServiceKind.TELEGRAM_BOT,)
    assert spec.language == "en"
    expense = spec.entities[0]
    assert expense.name == "Expense"
    assert {"amount", "category"} <= {f.name for f in expense.fields}
    assert [c.command for c in spec.commands] == ["start", "help", "add", "list", "report"]
    token = next(var for var in spec.config if var.name == "TELEGRAM_BOT_TOKEN")
    assert token.secret
    assert token.default is None
    assert spec.endpoints == ()


def test_russian_description_gives_a_transliterated_slug() -> None:
    spec = decide("Сделай телеграм-бота для учёта расходов по категориям", [])
    assert isinstance(spec, ProjectSpec)
    assert spec.language == "ru"
    assert spec.name == "Расходы бот"
    assert spec.slug == "raskhody-bot"
    assert spec.entities[0].name == "Expense"
    assert "TELEGRAM_BOT_TOKEN" in spec.secret_names


def test_http_api_with_a_worker_and_an_integration() -> None:
    spec = decide('An API called "Bookshelf" for my books, with a daily weather digest', [])
    assert isinstance(spec, ProjectSpec)
    assert spec.name == "Bookshelf"
    assert spec.slug == "bookshelf"
    assert set(spec.kinds) == {ServiceKind.HTTP, ServiceKind.WORKER}
    paths = {(e.method, e.path) for e in spec.endpoints}
    assert {("GET", "/health"), ("GET", "/books"), ("POST", "/books")} <= paths
    assert spec.secret_names == ("OPENWEATHER_API_KEY",)
    assert spec.commands == ()


@pytest.mark.parametrize(
    ("description", "marker"),
    [("make me a bot", "What should the bot do?"), ("сделай сервис", "Что именно должен делать")],
)
def test_thin_description_gets_an_offline_question(description: str, marker: str) -> None:
    question = decide(description, [])
    assert isinstance(question, Question)
    assert question.text.startswith(OFFLINE_PREFIX)
    assert marker in question.text
    assert "purpose" in question.missing


def test_after_two_unhelpful_answers_defaults_are_assumed_and_said() -> None:
    assert isinstance(decide("make me a bot", ["I don't know"]), Question)
    spec = decide("make me a bot", ["I don't know", "whatever"])
    assert isinstance(spec, ProjectSpec)
    assert spec.kinds == (ServiceKind.TELEGRAM_BOT,)
    assert spec.entities[0].name == "Item"
    assert "defaults were assumed" in spec.summary


def test_every_offline_spec_carries_executable_checks_for_what_it_generates() -> None:
    """The offline analyst writes typed checks, not only prose: the repo step renders them into
    the project's tests and the deployer runs the HTTP and worker ones on every release."""
    spec = decide("An API and a Telegram bot for tasks, with a daily background job", [])
    assert isinstance(spec, ProjectSpec)
    http = [c for c in spec.checks if isinstance(c, HttpCheck)]
    assert [c.steps[0].path for c in http] == ["/health", "/tasks"]
    create, read, listed = http[1].steps
    assert (create.method, create.expect_status, create.capture) == ("POST", 201, {"id": "id"})
    assert isinstance(create.body, dict)
    assert set(create.body) == {"title", "done", "due_on"}
    assert read.path == "/tasks/{id}"
    assert read.expect_json == {**create.body, "id": "{id}"}
    assert listed.expect_json == [{"id": "{id}"}]
    bot = [c for c in spec.checks if isinstance(c, BotCheck)]
    assert [c.message.split()[0] for c in bot] == ["/start", "/add", "/list"]
    assert bot[1].message == "/add example true 2024-01-31"
    (worker,) = [c for c in spec.checks if isinstance(c, WorkerCheck)]
    assert (worker.path, worker.expect_json) == ("/worker/status", {"last_ok": True})


def test_a_bot_only_spec_has_no_http_checks() -> None:
    spec = decide("A Telegram bot that keeps my notes", [])
    assert isinstance(spec, ProjectSpec)
    assert spec.checks
    assert all(isinstance(c, BotCheck) for c in spec.checks)


@pytest.mark.parametrize(
    ("description", "cron", "every_seconds"),
    [
        ("A Telegram bot that sends me the weather every day at 9", "0 9 * * *", None),
        ("Бот, который каждый день в 21:30 присылает отчёт по расходам", "30 21 * * *", None),
        ("Воркер, который каждый час проверяет курс валют", None, 3600),
        ("A worker that checks my website every 5 minutes", None, 300),
        ("Каждые 2 часа собирать статьи из блога", None, 7200),
    ],
)
def test_a_plainly_stated_schedule_becomes_a_schedule_run_by_the_worker(
    description: str, cron: str | None, every_seconds: int | None
) -> None:
    spec = decide(description, [])
    assert isinstance(spec, ProjectSpec)
    assert ServiceKind.WORKER in spec.kinds
    (schedule,) = spec.schedules
    assert (schedule.cron, schedule.every_seconds) == (cron, every_seconds)
    assert schedule.action  # the sentence that asked for it
    interval = next(v for v in spec.config if v.name == "WORKER_INTERVAL_SECONDS")
    assert interval.default == str(every_seconds or 3600)
    if cron:
        assert "UTC" in spec.summary


def test_a_schedule_the_rules_cannot_read_exactly_is_not_guessed() -> None:
    spec = decide("A background worker that tidies my notes twice a week", [])
    assert isinstance(spec, ProjectSpec)
    assert spec.schedules == ()


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("REST API for my books, store them in Postgres", PersistenceKind.POSTGRES),
        ("API для заметок, хранить в PostgreSQL", PersistenceKind.POSTGRES),
        ("A notes API on sqlite", PersistenceKind.SQLITE),
        ("Бот для учёта расходов", PersistenceKind.SQLITE),
    ],
)
def test_the_store_is_postgres_when_asked_and_a_sqlite_file_otherwise(
    description: str, kind: PersistenceKind
) -> None:
    spec = decide(description, [])
    assert isinstance(spec, ProjectSpec)
    assert spec.persistence is not None
    assert spec.persistence.kind is kind
    assert spec.persistence.stores
    # PostgreSQL's URL carries a password: a secret the deploy waits for; SQLite needs none.
    assert ("DATABASE_URL" in spec.secret_names) is (kind is PersistenceKind.POSTGRES)


@pytest.mark.parametrize(
    "description",
    ["A worker that posts the OpenWeather forecast to my chat", "Бот: прогноз погоды утром"],
)
def test_a_known_api_becomes_an_integration_whose_key_is_a_secret(description: str) -> None:
    spec = decide(description, [])
    assert isinstance(spec, ProjectSpec)
    (weather,) = spec.integrations
    assert weather.name == "OpenWeather"
    assert weather.base_url.startswith("https://api.openweathermap.org/")
    assert weather.env_vars == ("OPENWEATHER_API_KEY",)
    key = next(var for var in spec.config if var.name == "OPENWEATHER_API_KEY")
    assert key.secret
    assert key.default is None


def test_a_combination_fills_every_new_field_at_once() -> None:
    spec = decide(
        "Telegram bot and API: every day at 8 send subscribers the weather, keep them in postgres",
        [],
    )
    assert isinstance(spec, ProjectSpec)
    assert set(spec.kinds) == {ServiceKind.TELEGRAM_BOT, ServiceKind.HTTP, ServiceKind.WORKER}
    assert [s.cron for s in spec.schedules] == ["0 8 * * *"]
    assert [i.name for i in spec.integrations] == ["OpenWeather"]
    assert spec.persistence is not None
    assert spec.persistence.kind is PersistenceKind.POSTGRES
    assert set(spec.secret_names) == {"TELEGRAM_BOT_TOKEN", "OPENWEATHER_API_KEY", "DATABASE_URL"}
