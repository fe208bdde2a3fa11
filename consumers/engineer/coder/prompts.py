"""What the coding model is told: its job, the spec, the repository, and how the tests stand.

The first message carries a map of the workspace (`repo_map.py`) and the template's
conventions, so the model starts from where things live instead of spending its first calls
(each re-sending the conversation) discovering them.
"""

from __future__ import annotations

from consumers.engineer.test_runner import TestReport
from contracts.spec import ProjectSpec

SYSTEM_PROMPT = """\
You are the engineer of a code generation platform. You work inside one Python project whose \
layout was generated from a template: `requirements.txt`, the `app/` package, `tests/` (pytest) \
and `deploy.json`. Implement the specification by editing files with the tools. Keep the \
existing structure, add tests for what you build, and keep every test passing. The health \
endpoint (`app/main.py`, `app/healthcheck.py`), `deploy.json` and `tests/test_acceptance.py` are \
protected: the tools refuse to change them and a run that changes them fails. Tests define the \
behaviour the service must have: never delete, skip or weaken one to make the suite pass. Never \
write secret values into files: secrets reach the service as environment variables named in the \
specification. Use list_files, search and read_file before changing code; change part of a file \
with edit_file, write new or whole files with write_file; call run_tests to check your work. \
When you are done, stop calling tools and answer with one line summarising what you changed, \
for the user."""


#: Where things live in a scaffolded service, and what the platform relies on.
CONVENTIONS = """\
Template conventions:
- One FastAPI process serves everything: `app/main.py` (protected) builds the app \
(`create_app`) with its `GET /health`, and starts the bot and the worker in its lifespan.
- HTTP routes live in `app/api.py` (`build_router`), bot commands in `app/bot.py` \
(`build_dispatcher`), the background job in `app/worker.py`, data in `app/models.py` and \
`app/store.py`. Add modules beside them in `app/` when that reads better.
- Configuration is `app/settings.py` (pydantic-settings, read from the environment); every \
variable it reads is listed in `.env.example`. Secrets come from the environment only.
- `deploy.json` (protected) tells the deployer how to start the service (`start`, usually \
`python -m app`, with HOST and PORT from the environment) and where its health endpoint is. \
Before the work is accepted the platform starts the app that way, without network access \
and with the values of `.env.example` (secrets empty: a bot without its token stays idle, an \
empty DATABASE_URL means the SQLite store), and `GET /health` must answer 200: the app must \
import and start cleanly without its secrets.
- Tests are pytest under `tests/`, run as `python -m pytest` from the repository root with \
no network; `tests/conftest.py` gives a `client` fixture (a TestClient) and, for bots, a \
`bot_chat` fixture. New dependencies go in `requirements.txt` (package names only; they are \
installed as binary wheels).
- `tests/test_acceptance.py` (protected) holds the specification's executable acceptance \
checks: all of them must pass when you are done."""


def task_message(
    spec: ProjectSpec,
    report: TestReport,
    change: str = "",
    repo_map: str = "",
    acceptance: str = "",
) -> str:
    """The first user message: the spec as JSON, the repository's files and conventions, and
    the tests' state before any change; for a revision of a live service, also the change
    asked for (the workspace is its current code). `acceptance` says how the acceptance
    checks stand before any change (`guard.acceptance_note`)."""
    revision = (
        "This service is live and the workspace holds its current code. Its owner asked for "
        f"this change, which the specification below already includes:\n{change.strip()}\n\n"
        "Change the existing code for it; keep everything else working.\n\n"
        if change.strip()
        else ""
    )
    parts = [
        f"{revision}Specification (JSON):\n{spec.model_dump_json(indent=2)}\n\n",
        _requirements(spec),
        f"Files in the repository:\n{repo_map}\n\n" if repo_map else "",
        f"{CONVENTIONS}\n\n",
        f"Current test results:\n{report.summary(limit=10)}\n\n",
        f"{acceptance}\n\n" if acceptance else "",
        "Implement the specification so that all tests, old and new, pass.",
    ]
    return "".join(parts)


def _requirements(spec: ProjectSpec) -> str:
    """What the scaffold does not do by itself, spelled out: schedules, external APIs, storage."""
    lines: list[str] = []
    for schedule in spec.schedules:
        timing = (
            f"on cron '{schedule.cron}' (UTC)"
            if schedule.cron is not None
            else f"every {schedule.every_seconds} seconds"
        )
        lines.append(
            f"- Schedule {schedule.name}: app/worker.py already runs the function named after "
            f"it {timing}; fill it in (keep its name and timing): {schedule.action}"
        )
    for api in spec.integrations:
        keys = ", ".join(api.env_vars) or "no key"
        lines.append(
            f"- Call {api.name} at {api.base_url} with {keys} read from the environment; make "
            "the base URL a setting with that default so tests can point it at a fake"
        )
    if spec.persistence is not None:
        where = {
            "none": "keep nothing across restarts",
            "sqlite": "keep data in the SQLite store (app/store.py, DATA_DIR)",
            "postgres": "keep data in PostgreSQL at DATABASE_URL through app/store.py",
        }[spec.persistence.kind.value]
        stores = f": {spec.persistence.stores}" if spec.persistence.stores else ""
        lines.append(f"- Storage: {where}{stores}")
    return "Requirements beyond the scaffold:\n" + "\n".join(lines) + "\n\n" if lines else ""


def retry_message(iteration: int, problem: str) -> str:
    """After an iteration that is not done yet: why (failing tests, fewer tests than before,
    a protected file changed, nothing changed), so the model can fix it."""
    return (
        f"Iteration {iteration}: the work is not done yet.\n{problem}\n\n"
        "The tests define the behaviour the service must have and must not be weakened: fix "
        "the code, not the tests. Answer with a one-line summary when done."
    )
