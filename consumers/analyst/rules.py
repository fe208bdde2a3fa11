"""The offline analyst: deterministic rules that turn a description into a spec or a question.

It runs when no LLM provider is configured. It recognises, in English and Russian, what kind
of service is wanted (keywords for bots, HTTP services and background workers), the domain's
data (a small dictionary: expenses, tasks, notes, reminders, ...), external services that
need a key (three known APIs with their base URLs), a schedule stated plainly ("every day at
9", "каждый час", "every 5 minutes") and PostgreSQL or SQLite named as the store. From those it
derives endpoints, bot commands, configuration and acceptance criteria. A schedule it cannot
read exactly (e.g. "twice a week") is not guessed: the worker keeps its interval setting.

A description with neither a recognisable domain nor enough content words gets a
question; after `MAX_QUESTIONS` answers it proceeds with defaults and says so in the summary.
"""

# Russian keywords are this module's data, not look-alike typos.
# ruff: noqa: RUF001

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.spec import (
    AcceptanceCheck,
    BotCheck,
    BotCommand,
    ConfigVar,
    Endpoint,
    Entity,
    EntityField,
    HttpCheck,
    HttpStep,
    Integration,
    Persistence,
    PersistenceKind,
    ProjectSpec,
    Schedule,
    ServiceKind,
    WorkerCheck,
)

from .slugs import slugify
from .spec_policy import enforce

#: Questions asked before the analyst proceeds with defaults.
MAX_QUESTIONS = 2
OFFLINE_PREFIX = "[offline mode] "


@dataclass(frozen=True)
class EntityRule:
    """A domain entity recognised by keywords, with the fields a first version needs."""

    name: str
    plural: str
    label_ru: str
    patterns: tuple[str, ...]
    fields: tuple[tuple[str, str, str], ...]


ENTITIES: tuple[EntityRule, ...] = (
    EntityRule(
        "Expense", "expenses", "Расходы",
        (r"\bexpens", r"\bspending", r"\bbudget", r"\bрасход", r"\bтрат", r"\bбюджет"),
        (("amount", "float", "How much was spent"), ("category", "str", "e.g. food, transport"),
         ("spent_on", "date", "When"), ("note", "str", "Free text")),
    ),
    EntityRule(
        "Task", "tasks", "Задачи",
        (r"\btasks?\b", r"\btodo", r"\bto-do", r"\bзадач", r"\bсписок дел"),
        (("title", "str", "What to do"), ("done", "bool", "Whether it is finished"),
         ("due_on", "date", "Deadline")),
    ),
    EntityRule(
        "Note", "notes", "Заметки",
        (r"\bnotes?\b", r"\bзаметк", r"\bзаметок"),
        (("title", "str", "Short title"), ("text", "str", "The note itself")),
    ),
    EntityRule(
        "Reminder", "reminders", "Напоминания",
        (r"\bremind", r"\bнапомин", r"\bнапомн"),
        (("text", "str", "What to remind about"), ("remind_at", "datetime", "When to remind")),
    ),
    EntityRule(
        "Order", "orders", "Заказы",
        (r"\borders?\b", r"\bзаказ"),
        (("item", "str", "What was ordered"), ("quantity", "int", "How many"),
         ("total", "float", "Order total"), ("status", "str", "new, paid, shipped")),
    ),
    EntityRule(
        "Product", "products", "Товары",
        (r"\bproduct", r"\bcatalog", r"\binventory", r"\bshop\b", r"\bтовар", r"\bкаталог",
         r"\bмагазин"),
        (("name", "str", "Product name"), ("price", "float", "Unit price"),
         ("stock", "int", "Units in stock")),
    ),
    EntityRule(
        "Booking", "bookings", "Бронирования",
        (r"\bbooking", r"\bappointment", r"\breservation", r"\bбронир", r"\bзапис[ьи] на\b"),
        (("client_name", "str", "Who booked"), ("starts_at", "datetime", "Start time"),
         ("service", "str", "What is booked")),
    ),
    EntityRule(
        "Habit", "habits", "Привычки",
        (r"\bhabit", r"\bпривыч"),
        (("name", "str", "The habit"), ("streak", "int", "Days in a row"),
         ("last_done_on", "date", "Last day it was done")),
    ),
    EntityRule(
        "Contact", "contacts", "Контакты",
        (r"\bcontacts?\b", r"\bконтакт"),
        (("name", "str", "Full name"), ("phone", "str", "Phone number"),
         ("email", "str", "E-mail address")),
    ),
    EntityRule(
        "Article", "articles", "Статьи",
        (r"\barticle", r"\bblog", r"\bposts?\b", r"\bстать[яией]\b", r"\bстатей\b", r"\bблог"),
        (("title", "str", "Headline"), ("body", "str", "Text"),
         ("published_at", "datetime", "Publication time")),
    ),
    EntityRule(
        "Book", "books", "Книги",
        (r"\bbooks?\b", r"\bкниг"),
        (("title", "str", "Title"), ("author", "str", "Author"),
         ("finished", "bool", "Whether it has been read")),
    ),
    EntityRule(
        "Event", "events", "События",
        (r"\bevents?\b", r"\bсобыти", r"\bмероприят"),
        (("title", "str", "What happens"), ("starts_at", "datetime", "When"),
         ("place", "str", "Where")),
    ),
)  # fmt: skip

KIND_PATTERNS: dict[ServiceKind, tuple[str, ...]] = {
    ServiceKind.TELEGRAM_BOT: (r"\bbot", r"\btelegram", r"\btg\b", r"\bбот", r"\bтелеграм"),
    ServiceKind.HTTP: (
        r"\bapi\b", r"\bhttp", r"\brest\b", r"\bendpoint", r"\bweb", r"\bsite", r"\bbackend",
        r"\bservice", r"\bсайт", r"\bвеб", r"\bапи\b", r"\bэндпоинт", r"\bбэкенд", r"\bсервис",
    ),
    ServiceKind.WORKER: (
        r"\bworker", r"\bbackground", r"\bcron", r"\bschedul", r"\bperiodic", r"\bdaily",
        r"\bhourly", r"\bevery (day|hour|minute|morning|evening|week)", r"\bворкер",
        r"\bфонов", r"\bрасписани", r"\bежедневн", r"\bпериодическ",
        r"\bкажд(ый|ое|ую|час) ?(день|час|утро|вечер|минуту|неделю)?\b",
    ),
}  # fmt: skip

#: Third-party APIs recognised by name, with the variable naming their key (a secret: the
#: name travels, the value is stored in Vault by the user).
INTEGRATIONS: tuple[tuple[tuple[str, ...], Integration], ...] = (
    (
        (r"\bweather", r"\bпогод", r"\bopenweather"),
        Integration(name="OpenWeather", base_url="https://api.openweathermap.org/data/2.5",
                    env_vars=("OPENWEATHER_API_KEY",), purpose="Weather data"),
    ),
    (
        (r"\bopenai", r"\bgpt", r"\bchatgpt", r"\bllm\b", r"\bнейросет"),
        Integration(name="OpenAI", base_url="https://api.openai.com/v1",
                    env_vars=("OPENAI_API_KEY",), purpose="Text generation"),
    ),
    (
        (r"\bstripe", r"\bpayment", r"\bоплат", r"\bплатеж"),
        Integration(name="Stripe", base_url="https://api.stripe.com/v1",
                    env_vars=("STRIPE_API_KEY",), purpose="Payments"),
    ),
)  # fmt: skip

#: A time of day after "every day at" / "каждый день в" (9, 9:30, 21.00, 9am, 9 pm).
_AT_TIME = r"(?:at|в)\s+(\d{1,2})(?:[:.](\d{2}))?\s*(am|pm|утра|вечера)?"
_DAILY = r"(?:every\s+day|daily|each\s+day|каждый\s+день|ежедневно)"
_EVERY_N = re.compile(
    r"(?:every|each|каждые|раз\s+в)\s+(\d{1,3})\s*"
    r"(min|minute|minutes|мин|минут[уы]?|h|hour|hours|час|часа|часов)\b"
)
_HOURLY = re.compile(r"\b(?:every\s+hour|hourly|каждый\s+час|ежечасно|раз\s+в\s+час)")
_DAILY_ANY = re.compile(rf"\b{_DAILY}")
_WEEKLY = re.compile(r"\b(?:every\s+week|weekly|каждую\s+неделю|еженедельно|раз\s+в\s+неделю)")

_PERSISTENCE: tuple[tuple[str, PersistenceKind], ...] = (
    (r"\bpostgres|\bпостгрес|\bpostgresql", PersistenceKind.POSTGRES),
    (r"\bsqlite", PersistenceKind.SQLITE),
)

REPORT_PATTERNS = (r"\breport", r"\bstatistic", r"\bstats\b", r"\bsummar", r"\bотч[её]т",
                   r"\bстатистик", r"\bитог")  # fmt: skip

#: Words that say nothing about what the service does ("make me a simple bot").
_STOPWORD_TEXT = (
    "a an the and or to of for in on at by with me my i we our you your it its this that "
    "which who please make create build write develop want need would like could should can "
    "just some something simple small new little quick app application service bot program "
    "project thing system tool anything сделай сделайте сделать создай создайте создать "
    "напиши напишите написать разработай нужен нужна нужно надо хочу хотим мне нам для меня "
    "мой моя мое мои это этот эта который которая которое простой простая простое простую "
    "небольшой новый новую какой какую нибудь что-нибудь что чтобы как бот бота сервис "
    "сервиса приложение программу программа проект пожалуйста и или в на с по к "
    # Answers that decline to add detail are not detail.
    "know dunno don whatever idea sure yes okay any anything decide surprise "
    "знаю не нет да любой любая любое всё все равно решай сам сама угадай "
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Question:
    text: str
    missing: tuple[str, ...]


def _matches(text: str, patterns: tuple[str, ...]) -> bool:
    return any(re.search(pattern, text) for pattern in patterns)


def detect_language(text: str) -> str:
    cyrillic = len(re.findall(r"[а-яё]", text.lower()))
    latin = len(re.findall(r"[a-z]", text.lower()))
    return "ru" if cyrillic > latin else "en"


def _content_words(text: str) -> list[str]:
    words = re.findall(r"[a-zа-яё][a-zа-яё-]{2,}", text)
    kind_patterns = tuple(p for patterns in KIND_PATTERNS.values() for p in patterns)
    return [w for w in words if w not in STOPWORDS and not _matches(w, kind_patterns)]


def _explicit_name(text: str) -> str | None:
    quoted = re.search(r"[«\"“']([^«»\"“”']{2,40})[»\"”']", text)
    if quoted:
        return quoted.group(1).strip()
    called = re.search(
        r"\b(?:called|named|name it|под названием|с названием|называется"
        r"|назови(?:те)?(?: его| её)?)\s+([\w-]{2,40})",
        text,
        flags=re.IGNORECASE,
    )
    return called.group(1) if called else None


def decide(
    description: str, answers: list[str], max_questions: int = MAX_QUESTIONS
) -> ProjectSpec | Question:
    """A spec for `description` plus the user's `answers`, or the next question."""
    original = " ".join([description, *answers]).strip()
    text = original.lower()
    language = detect_language(description)
    kinds = tuple(kind for kind, patterns in KIND_PATTERNS.items() if _matches(text, patterns))
    if schedule_of(original) is not None and ServiceKind.WORKER not in kinds:
        kinds = (*kinds, ServiceKind.WORKER)
    entities = [rule for rule in ENTITIES if _matches(text, rule.patterns)]
    thin = not entities and len(_content_words(text)) < 2

    if thin and len(answers) < max_questions:
        return _question(language, kinds, asked=len(answers))

    notes: list[str] = []
    if not kinds:
        kinds = (ServiceKind.HTTP,)
        notes.append(
            "Тип сервиса не указан: сделан HTTP-сервис."
            if language == "ru"
            else "No kind of service was named: an HTTP service is assumed."
        )
    if not entities and not thin:
        notes.append(
            "Предметная область не распознана: предполагается одна сущность Item."
            if language == "ru"
            else "No domain data was recognised: one generic Item entity is assumed."
        )
    if thin:
        notes.append(
            f"Описание осталось неполным после {max_questions} вопросов: приняты значения по "
            "умолчанию (одна сущность Item)."
            if language == "ru"
            else f"The description stayed too thin after {max_questions} questions: defaults "
            "were assumed (one generic Item entity)."
        )
    return _spec(original, language, kinds, entities, notes)


def schedule_of(description: str) -> Schedule | None:
    """The one schedule a description states plainly, or None (nothing is guessed)."""
    text = description.lower()
    cron: str | None = None
    seconds: int | None = None
    if at := re.search(rf"\b{_DAILY}\s+{_AT_TIME}", text):
        hour, minute = int(at.group(1)), int(at.group(2) or 0)
        if at.group(3) in ("pm", "вечера") and hour < 12:
            hour += 12
        if hour < 24 and minute < 60:
            cron = f"{minute} {hour} * * *"
    elif every := _EVERY_N.search(text):
        unit = 60 if every.group(2).startswith(("m", "м")) else 3600
        if 60 <= int(every.group(1)) * unit <= 7 * 24 * 3600:
            seconds = int(every.group(1)) * unit
    elif _HOURLY.search(text):
        seconds = 3600
    elif _DAILY_ANY.search(text):
        seconds = 24 * 3600
    elif _WEEKLY.search(text):
        seconds = 7 * 24 * 3600
    if cron is None and seconds is None:
        return None
    return Schedule(
        name="scheduled_job", cron=cron, every_seconds=seconds, action=_sentence_of(description)
    )


def _sentence_of(description: str) -> str:
    """The sentence of the description that states the schedule: the best the rules know of
    what the job does."""
    for sentence in re.split(r"(?<=[.!?;\n])\s*", description):
        if any(p.search(sentence.lower()) for p in (_EVERY_N, _HOURLY, _DAILY_ANY, _WEEKLY)):
            return " ".join(sentence.split())[:500]
    return " ".join(description.split())[:500]


def _persistence(text: str, rules: list[EntityRule]) -> Persistence:
    """PostgreSQL or SQLite when named; otherwise the scaffold's default, a SQLite file."""
    kind = next((k for pattern, k in _PERSISTENCE if re.search(pattern, text)), None)
    stores = ", ".join(rule.plural for rule in rules)
    return Persistence(kind=kind or PersistenceKind.SQLITE, stores=stores)


def _question(language: str, kinds: tuple[ServiceKind, ...], asked: int) -> Question:
    missing = ["purpose", "entities"] + ([] if kinds else ["kind"])
    if language == "ru":
        what = (
            {
                ServiceKind.TELEGRAM_BOT: "бот",
                ServiceKind.HTTP: "сервис",
                ServiceKind.WORKER: "фоновый процесс",
            }.get(kinds[0], "сервис")
            if kinds
            else "сервис"
        )
        text = (
            ("Пока всё ещё мало деталей. " if asked else "")
            + f"Что именно должен делать {what}? Опишите главные действия и данные, которые он "
            "хранит (например: «бот, который записывает расходы по категориям и показывает "
            "отчёт за месяц»)."
        )
        if not kinds:
            text += " И что это должно быть: Telegram-бот, HTTP API или фоновый процесс?"
    else:
        what = (
            {
                ServiceKind.TELEGRAM_BOT: "bot",
                ServiceKind.HTTP: "service",
                ServiceKind.WORKER: "background worker",
            }.get(kinds[0], "service")
            if kinds
            else "service"
        )
        text = (
            ("That is still not enough to write a spec. " if asked else "")
            + f"What should the {what} do? Name its main actions and the data it keeps "
            "(e.g. 'a Telegram bot that records expenses by category and shows a monthly "
            "report')."
        )
        if not kinds:
            text += " Should it be a Telegram bot, an HTTP API or a background worker?"
    return Question(text=OFFLINE_PREFIX + text, missing=tuple(missing))


def _entity(rule: EntityRule) -> Entity:
    return Entity(
        name=rule.name,
        fields=tuple(EntityField(name=n, type=t, description=d) for n, t, d in rule.fields),
    )


_DEFAULT_ENTITY = EntityRule(
    "Item", "items", "Записи", (),
    (("name", "str", "What the item is"), ("created_at", "datetime", "When it was added")),
)  # fmt: skip

_KIND_LABEL = {
    "en": {ServiceKind.TELEGRAM_BOT: "Bot", ServiceKind.HTTP: "API", ServiceKind.WORKER: "Worker"},
    "ru": {ServiceKind.TELEGRAM_BOT: "бот", ServiceKind.HTTP: "API", ServiceKind.WORKER: "воркер"},
}
_KIND_PHRASE = {
    "en": {
        ServiceKind.TELEGRAM_BOT: "Telegram bot",
        ServiceKind.HTTP: "HTTP service",
        ServiceKind.WORKER: "background worker",
    },
    "ru": {
        ServiceKind.TELEGRAM_BOT: "Telegram-бот",
        ServiceKind.HTTP: "HTTP-сервис",
        ServiceKind.WORKER: "фоновый процесс",
    },
}


#: A value of each field type that the generated service stores and returns unchanged.
_EXAMPLES: dict[str, object] = {
    "str": "example",
    "int": 3,
    "float": 12.5,
    "bool": True,
    "date": "2024-01-31",
    "datetime": "2024-01-31T12:00:00",
}


def _http_checks(rule: EntityRule) -> HttpCheck:
    """POST stores one entity, GET reads it back by the captured id and lists it."""
    base = f"/{rule.plural}"
    body = {name: _EXAMPLES[kind] for name, kind, _ in rule.fields}
    return HttpCheck(
        name=f"POST {base} stores one {rule.name} that GET {base}/{{id}} and GET {base} return",
        steps=(
            HttpStep(method="POST", path=base, body=body, expect_status=201,
                     expect_json=body, capture={"id": "id"}),
            HttpStep(path=f"{base}/{{id}}", expect_json={**body, "id": "{id}"}),
            HttpStep(path=base, expect_json=[{"id": "{id}"}]),
        ),
    )  # fmt: skip


def _bot_checks(rule: EntityRule, add: str, show: str) -> tuple[BotCheck, ...]:
    """`/add` with the fields in order stores one; `/list` shows it (one chat, one store)."""
    values = " ".join(
        str(_EXAMPLES[kind]).lower() if kind == "bool" else str(_EXAMPLES[kind])
        for _, kind, _ in rule.fields
    )
    return (
        BotCheck(
            name=f"/{add} stores one {rule.name}",
            message=f"/{add} {values}",
            reply_pattern=rf"^Saved {rule.name} #\d+",
        ),
        BotCheck(
            name=f"/{show} answers with the stored {rule.plural} or says there are none",
            message=f"/{show}",
            reply_pattern=rf"(#\d+|No {rule.plural} yet)",
        ),
    )


def _spec(
    original: str,
    language: str,
    kinds: tuple[ServiceKind, ...],
    rules: list[EntityRule],
    notes: list[str],
) -> ProjectSpec:
    text = original.lower()
    rules = rules or [_DEFAULT_ENTITY]
    primary = next(k for k in (ServiceKind.HTTP, ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER)
                   if k in kinds)  # fmt: skip
    label = rules[0].label_ru if language == "ru" else rules[0].name
    name = _explicit_name(original) or f"{label} {_KIND_LABEL[language][primary]}"
    report = _matches(text, REPORT_PATTERNS)
    single = len(rules) == 1

    endpoints: list[Endpoint] = []
    commands: list[BotCommand] = []
    criteria: list[str] = []
    checks: list[AcceptanceCheck] = []
    if ServiceKind.HTTP in kinds:
        endpoints.append(Endpoint(method="GET", path="/health", summary="Liveness check"))
        criteria.append("GET /health answers 200")
        checks.append(
            HttpCheck(
                name="GET /health answers ok",
                steps=(HttpStep(path="/health", expect_json={"status": "ok"}),),
            )
        )
        for rule in rules:
            base = f"/{rule.plural}"
            endpoints += [
                Endpoint(method="GET", path=base, summary=f"List {rule.plural}"),
                Endpoint(method="POST", path=base, summary=f"Create a {rule.name}"),
                Endpoint(method="GET", path=f"{base}/{{id}}", summary=f"Get one {rule.name}"),
                Endpoint(method="DELETE", path=f"{base}/{{id}}", summary=f"Delete a {rule.name}"),
            ]
            criteria.append(f"POST {base} creates a {rule.name} and GET {base} lists it")
            checks.append(_http_checks(rule))
        if report:
            endpoints.append(Endpoint(method="GET", path="/report", summary="Totals and counts"))
            criteria.append("GET /report summarises the stored records")
    if ServiceKind.TELEGRAM_BOT in kinds:
        commands += [
            BotCommand(command="start", description="Greeting and the list of commands"),
            BotCommand(command="help", description="How to use the bot"),
        ]
        criteria.append("/start replies with a greeting that lists the commands")
        checks.append(BotCheck(name="/start greets", message="/start", reply_pattern=r"^Hi!"))
        for rule in rules:
            add = "add" if single else f"add_{rule.name.lower()}"
            show = "list" if single else f"list_{rule.plural}"
            commands += [
                BotCommand(command=add, description=f"Add a {rule.name}"),
                BotCommand(command=show, description=f"Show {rule.plural}"),
            ]
            criteria.append(f"/{add} stores a {rule.name} and /{show} shows it")
            checks += _bot_checks(rule, add, show)
        if report:
            commands.append(BotCommand(command="report", description="Totals and counts"))
            criteria.append("/report summarises the stored records")
    if ServiceKind.WORKER in kinds:
        criteria.append("The worker runs its job every WORKER_INTERVAL_SECONDS and logs each run")
        checks.append(
            WorkerCheck(
                name="the background job has run and shows its last run at /worker/status",
                path="/worker/status",
                expect_json={"last_ok": True},
            )
        )

    config = [ConfigVar(name="LOG_LEVEL", description="Logging level", default="INFO")]
    config.append(
        ConfigVar(
            name="DATABASE_URL",
            description=(
                "A PostgreSQL URL (postgresql://...) to store records in; empty: a SQLite "
                "file in the service's DATA_DIR"
            ),
            default="",
        )
    )
    schedule = schedule_of(original)
    if ServiceKind.WORKER in kinds:
        interval = schedule.every_seconds if schedule and schedule.every_seconds else 3600
        config.append(
            ConfigVar(
                name="WORKER_INTERVAL_SECONDS",
                description="Seconds between runs",
                default=str(interval),
            )
        )
    integrations = [item for patterns, item in INTEGRATIONS if _matches(text, patterns)]

    if schedule is not None and schedule.cron is not None:
        notes.append(
            f"Время расписания ({schedule.cron}) принято в UTC."
            if language == "ru"
            else f"The schedule's time ({schedule.cron}) is taken as UTC."
        )
    phrases = " + ".join(_KIND_PHRASE[language][kind] for kind in kinds)
    if language == "ru":
        keeps = ", ".join(rule.label_ru.lower() for rule in rules)
        summary = f"{phrases}. Хранит: {keeps}. Запрос пользователя: {original[:600]}"
    else:
        keeps = ", ".join(rule.plural for rule in rules)
        summary = f"{phrases}. Keeps: {keeps}. As requested: {original[:600]}"
    if notes:
        summary += " " + " ".join(notes)

    return enforce(
        ProjectSpec(
            name=name,
            slug=slugify(name),
            summary=summary,
            kinds=kinds,
            language=language,
            entities=tuple(_entity(rule) for rule in rules),
            endpoints=tuple(endpoints),
            commands=tuple(commands),
            config=tuple(config),
            acceptance_criteria=tuple(criteria),
            checks=tuple(checks),
            schedules=(schedule,) if schedule else (),
            integrations=tuple(integrations),
            persistence=_persistence(text, rules),
        )
    )
