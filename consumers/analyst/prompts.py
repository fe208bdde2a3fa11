"""What the LLM analyst is told. Built only from the user's words: no secret ever enters it.

The model answers by calling one of two tools (OpenAI tool calling / Anthropic tool use), so
the answer is structured and validated against the same `ProjectSpec` the offline rules fill.
"""

# The Russian examples are data, not look-alike typos.
# ruff: noqa: RUF001

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

_INSTRUCTIONS = """\
You are the analyst of a platform that turns a person's description of a small software \
project into a running service. Read the description (and any answers to your earlier \
questions) and call exactly one tool:

- `ProjectSpec` when you know what the service must do. Fill every field:
  * name: short human name; slug: lowercase Latin letters, digits and dashes, starting with a \
letter (transliterate other scripts, e.g. "Расходы" -> "raskhody");
  * kinds: one or more of "http" (HTTP API), "telegram_bot", "worker" (background job);
  * language: ISO 639-1 code of the user's language;
  * entities with typed fields (str, int, float, bool, date, datetime);
  * endpoints for HTTP services (always include GET /health), commands for bots (without \
the slash; always include "start");
  * config: environment variables the service reads. Secrets (tokens, API keys, passwords) \
are listed by NAME only with secret=true and no default: e.g. TELEGRAM_BOT_TOKEN for every \
bot. Add DATABASE_URL only if the service stores data;
  * acceptance_criteria: concrete checks a test can make, in words;
  * checks: the same checks made executable. "http": ordered steps (method, path relative \
to the service such as /expenses, JSON body, expect_status, expect_json = a subset the answer \
must contain, capture = name -> dotted path in the answer, reused later as {name}), e.g. POST \
/expenses -> 201 capturing id, then GET /expenses/{id} -> 200 containing the sent fields. \
"bot": a message and a reply_pattern (regular expression). "worker": a path showing the \
job's effect (e.g. /worker/status) and the expect_json it comes to contain;
  * schedules: jobs the service runs on its own, each with a snake_case name, what one run \
does (action) and either cron (five fields, UTC; a time the user gave without a zone keeps its \
hour and the summary says it is read as UTC) or every_seconds (at least 60). A schedule needs \
the "worker" kind;
  * integrations: external APIs the service calls: name, https base_url, and env_vars = the \
NAMES of the variables holding their keys (UPPER_SNAKE_CASE); each is a secret the user stores \
later, so never invent or ask for a value;
  * persistence: where data is kept: "none", "sqlite" (a file; the default for a small \
service that keeps records) or "postgres" (only when the user asks for it; DATABASE_URL then \
becomes a secret), with what it stores;
  * summary: one paragraph in the user's language.
- `AskClarification` only when the description is too thin to know what the service does \
(e.g. "make me a bot"). Ask one short question in the user's language.

Never ask for secret values and never put credentials anywhere in the spec.

{examples}"""

#: Worked examples (abridged: a real spec also has entities' fields, criteria and checks for
#: every part). They cover each kind, a combination with a schedule, an integration and
#: storage, in English and Russian, and two requests too vague to guess from. A unit test
#: validates every spec here against `ProjectSpec`, so the examples cannot teach a wrong shape.
EXAMPLES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "A REST API for my book collection; keep it in Postgres",
        "ProjectSpec",
        {
            "name": "Bookshelf API", "slug": "bookshelf-api", "kinds": ["http"],
            "language": "en",
            "summary": "An HTTP API to add, list and delete the books of one collection.",
            "entities": [{"name": "Book", "fields": [
                {"name": "title", "type": "str"}, {"name": "author", "type": "str"}]}],
            "endpoints": [{"method": "GET", "path": "/health"},
                          {"method": "GET", "path": "/books"},
                          {"method": "POST", "path": "/books"}],
            "persistence": {"kind": "postgres", "stores": "books"},
            "config": [{"name": "DATABASE_URL", "secret": True}],
            "checks": [{"kind": "http", "name": "POST /books stores a book", "steps": [
                {"method": "POST", "path": "/books", "body": {"title": "Dune", "author": "Herbert"},
                 "expect_status": 201, "expect_json": {"title": "Dune"}}]}],
        },
    ),
    (
        "Телеграм-бот для учёта расходов по категориям с отчётом за месяц",
        "ProjectSpec",
        {
            "name": "Расходы бот", "slug": "raskhody-bot", "kinds": ["telegram_bot"],
            "language": "ru",
            "summary": "Telegram-бот: записывает расходы по категориям и показывает отчёт "
                       "за месяц.",
            "entities": [{"name": "Expense", "fields": [
                {"name": "amount", "type": "float"}, {"name": "category", "type": "str"}]}],
            "commands": [{"command": "start"}, {"command": "add"}, {"command": "report"}],
            "persistence": {"kind": "sqlite", "stores": "расходы"},
            "config": [{"name": "TELEGRAM_BOT_TOKEN", "secret": True}],
        },
    ),
    (
        "Every 15 minutes read my blog's RSS feed and post new entries to a Slack channel",
        "ProjectSpec",
        {
            "name": "Feed to Slack", "slug": "feed-to-slack", "kinds": ["worker"],
            "language": "en",
            "summary": "A background worker that posts new RSS entries to Slack.",
            "schedules": [{"name": "relay_feed", "every_seconds": 900,
                           "action": "fetch RSS_FEED_URL and post unseen entries to Slack"}],
            "integrations": [{"name": "Slack", "base_url": "https://slack.com/api",
                              "env_vars": ["SLACK_BOT_TOKEN"], "purpose": "chat.postMessage"}],
            "persistence": {"kind": "sqlite", "stores": "ids of entries already posted"},
            "config": [{"name": "RSS_FEED_URL", "description": "The feed to read"}],
        },
    ),
    (
        "Бот и API: каждый день в 8 утра присылать подписчикам прогноз погоды из OpenWeather; "
        "подписка через бота, список подписчиков через API",
        "ProjectSpec",
        {
            "name": "Погода по утрам", "slug": "pogoda-po-utram",
            "kinds": ["telegram_bot", "http", "worker"], "language": "ru",
            "summary": "Бот принимает подписки, API отдаёт подписчиков, каждый день в 8:00 "
                       "(время принято как UTC) подписчики получают прогноз.",
            "entities": [{"name": "Subscriber", "fields": [
                {"name": "chat_id", "type": "int"}, {"name": "city", "type": "str"}]}],
            "commands": [{"command": "start"}, {"command": "subscribe"}],
            "endpoints": [{"method": "GET", "path": "/health"},
                          {"method": "GET", "path": "/subscribers"}],
            "schedules": [{"name": "morning_forecast", "cron": "0 8 * * *",
                           "action": "send each subscriber the forecast for their city"}],
            "integrations": [{"name": "OpenWeather",
                              "base_url": "https://api.openweathermap.org/data/2.5",
                              "env_vars": ["OPENWEATHER_API_KEY"]}],
            "persistence": {"kind": "sqlite", "stores": "subscribers"},
            "config": [{"name": "TELEGRAM_BOT_TOKEN", "secret": True}],
        },
    ),
    (
        "Make me something cool for my friends",
        "AskClarification",
        {"question": "What should it do for your friends, and where will they use it: "
                     "a Telegram bot, a web API or a background job?",
         "missing": ["purpose", "kind"]},
    ),
    (
        "Хочу бота",
        "AskClarification",
        {"question": "Что должен делать бот? Опишите главные действия и данные, которые он "
                     "хранит.", "missing": ["purpose", "entities"]},
    ),
)  # fmt: skip


def _render_examples() -> str:
    lines = ["Examples (abridged; always fill every field that applies):"]
    for request, tool, arguments in EXAMPLES:
        lines += ["", f"Request: {request}", f"{tool}: {json.dumps(arguments, ensure_ascii=False)}"]
    return "\n".join(lines)


SYSTEM_PROMPT = _INSTRUCTIONS.replace("{examples}", _render_examples())

DECIDE_NOW = """\
You have already asked the maximum number of questions. Call `ProjectSpec` now: choose \
sensible defaults for anything still unknown and say in the summary which defaults you assumed."""

RETRY = """\
That answer was not usable: {error}
Call the tool again with corrected arguments."""


class AskClarification(BaseModel):
    """Ask the user one question because the description is too thin to write a spec."""

    question: str = Field(description="One short question, in the user's language")
    missing: list[str] = Field(
        default_factory=list,
        description="Which parts of the spec are unknown, e.g. purpose, kind, entities",
    )


def build_messages(
    description: str, questions: list[str], answers: list[str], decide_now: bool
) -> list[BaseMessage]:
    """The conversation the analyst sees for one round."""
    lines = ["Project description:", description.strip()]
    if answers:
        lines += ["", "Your earlier questions and the user's answers:"]
        for index, answer in enumerate(answers):
            question = questions[index] if index < len(questions) else "(question not recorded)"
            lines += [f"Q{index + 1}: {question}", f"A{index + 1}: {answer.strip()}"]
    if decide_now:
        lines += ["", DECIDE_NOW]
    return [SystemMessage(content=SYSTEM_PROMPT), HumanMessage(content="\n".join(lines))]
