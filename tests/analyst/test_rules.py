"""The offline analyst's rules and the slug rules, without I/O."""

from __future__ import annotations

import pytest

from consumers.analyst.rules import OFFLINE_PREFIX, Question, decide
from consumers.analyst.slugs import SLUG_PATTERN, slugify
from contracts.spec import BotCheck, HttpCheck, ProjectSpec, ServiceKind, WorkerCheck


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
