"""What the templates see: the spec turned into names and literals that are safe to paste into code.

A spec is written by a person or an LLM, so every name that becomes a Python identifier, an
environment variable or a Telegram command is normalised here, and every free text reaches a
template only through `repr` (for code) or a single-line form (for comments). Templates then
stay free of logic beyond loops.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass

from contracts.spec import (
    BotCheck,
    ConfigVar,
    Entity,
    HttpCheck,
    PersistenceKind,
    ProjectSpec,
    Schedule,
    ServiceKind,
    WorkerCheck,
)

#: Python annotation and an example value (as Python source, JSON-compatible) per spec type.
_FIELD_TYPES: dict[str, tuple[str, str]] = {
    "str": ("str", '"example"'),
    "int": ("int", "1"),
    "float": ("float", "1.5"),
    "bool": ("bool", "True"),
    "date": ("date", '"2024-01-31"'),
    "datetime": ("datetime", '"2024-01-31T12:00:00"'),
}

#: Variables every generated service reads; spec variables with these names are dropped.
RESERVED_VARS = ("HOST", "PORT", "APP_VERSION")

_BOT_VAR = "TELEGRAM_BOT_TOKEN"
_WORKER_INTERVAL = "WORKER_INTERVAL_SECONDS"
_DATABASE_URL = "DATABASE_URL"
#: The worker's interval when the spec gives none (or one that is not a positive number).
DEFAULT_WORKER_INTERVAL = "60"


@dataclass(frozen=True)
class FieldView:
    name: str
    annotation: str
    example: str
    description: str


@dataclass(frozen=True)
class EntityView:
    class_name: str
    snake: str
    plural: str
    fields: tuple[FieldView, ...]

    @property
    def path(self) -> str:
        return f"/{self.plural}"


@dataclass(frozen=True)
class VarView:
    """One environment variable of the generated service."""

    env: str
    field: str
    description: str
    default: str | None
    secret: bool
    annotation: str = "str"

    @property
    def default_literal(self) -> str:
        """The default as Python source of the field's type (defaults are not validated)."""
        if self.default is None:
            raise ValueError(f"{self.env} has no default")
        if self.annotation == "float":
            return repr(float(self.default))
        return python_literal(self.default)


@dataclass(frozen=True)
class ScheduleView:
    """A schedule of the spec as the worker template runs it: `function` is the Python name of
    the job the coder fills in; exactly one of `cron` and `every_seconds` is set."""

    name: str
    function: str
    timing: str
    action: str
    cron: str | None
    every_seconds: int | None


@dataclass(frozen=True)
class CommandView:
    """A bot command; `action` (add, list, delete, report) names the CRUD case it performs on
    `entity`, or is empty for a command the rules do not recognise (it answers its description).
    """

    command: str
    function: str
    description: str
    action: str = ""
    entity: EntityView | None = None


def _words(text: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def snake_case(text: str, fallback: str) -> str:
    """A valid, non-keyword Python identifier in snake_case."""
    name = "_".join(w.lower() for w in _words(text)) or fallback
    if name[0].isdigit():
        name = f"{fallback}_{name}"
    return f"{name}_" if keyword.iskeyword(name) else name


def pascal_case(text: str, fallback: str) -> str:
    name = "".join(w[:1].upper() + w[1:] for w in _words(text)) or fallback
    return f"{fallback}{name}" if name[0].isdigit() else name


def plural(word: str) -> str:
    """English plural of a snake_case noun, good enough for URL paths."""
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    return word + "s"


def python_literal(value: object) -> str:
    """Python source for `value`; strings become double-quoted (JSON strings are valid Python)."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def docstring_text(text: str) -> str:
    """Free text that cannot end a triple-quoted docstring early or start an escape."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def one_line(text: str) -> str:
    """Free text collapsed to one line, for comments and YAML/README fragments."""
    return " ".join(text.split())


def _entity(entity: Entity) -> EntityView:
    fields: list[FieldView] = []
    seen = {"id"}
    for field in entity.fields:
        name = snake_case(field.name, "field")
        if name in seen:
            continue
        seen.add(name)
        annotation, example = _FIELD_TYPES.get(field.type.strip().lower(), _FIELD_TYPES["str"])
        fields.append(FieldView(name, annotation, example, one_line(field.description)))
    snake = snake_case(entity.name, "item")
    return EntityView(pascal_case(entity.name, "Item"), snake, plural(snake), tuple(fields))


def _var(var: ConfigVar) -> VarView:
    env = "_".join(w.upper() for w in _words(var.name)) or "SETTING"
    # A default must stay on its `.env` line; a secret never has one (it comes from Vault).
    default = None if var.secret or var.default is None else one_line(var.default)
    return VarView(env, env.lower(), one_line(var.description), default, var.secret)


def _worker_interval(spec: ProjectSpec) -> str:
    """The spec's WORKER_INTERVAL_SECONDS default when it is a positive number of seconds."""
    for var in spec.config:
        if var.name == _WORKER_INTERVAL and var.default is not None:
            try:
                seconds = float(var.default)
            except ValueError:
                break
            if 0 < seconds < 10**7:
                return var.default.strip()
    return DEFAULT_WORKER_INTERVAL


def _variables(
    spec: ProjectSpec, kinds: tuple[ServiceKind, ...], has_entities: bool = False
) -> tuple[VarView, ...]:
    variables: dict[str, VarView] = {}
    for var in map(_var, spec.config):
        if var.env not in RESERVED_VARS and var.env not in variables:
            variables[var.env] = var
    if has_entities:
        # Storage is always there: empty means a SQLite file in DATA_DIR, so the variable is
        # optional whatever the spec said; a spec may still make it a secret (a password).
        secret = variables[_DATABASE_URL].secret if _DATABASE_URL in variables else False
        variables[_DATABASE_URL] = VarView(
            _DATABASE_URL,
            _DATABASE_URL.lower(),
            "PostgreSQL URL (postgresql://...) to store records in; empty: SQLite in DATA_DIR",
            "",
            secret,
        )
    if ServiceKind.TELEGRAM_BOT in kinds:
        # The bot starts polling only when the token is set, so it is optional; it is
        # always a secret whatever the spec says.
        variables[_BOT_VAR] = VarView(
            _BOT_VAR, _BOT_VAR.lower(), "Telegram Bot API token from @BotFather", "", True
        )
    if ServiceKind.WORKER in kinds:
        # The worker needs a number here, whatever type or default the spec gave the name.
        variables[_WORKER_INTERVAL] = VarView(
            _WORKER_INTERVAL,
            _WORKER_INTERVAL.lower(),
            "Seconds between two runs of the background job",
            _worker_interval(spec),
            False,
            "float",
        )
    return tuple(variables.values())


#: Command verbs the bot template implements, by the CRUD case they perform.
_ACTIONS: dict[str, str] = {
    "add": "add", "new": "add", "create": "add", "save": "add", "record": "add",
    "list": "list", "show": "list", "all": "list", "view": "list",
    "delete": "delete", "remove": "delete", "del": "delete",
    "report": "report", "stats": "report", "summary": "report", "total": "report",
    "totals": "report",
}  # fmt: skip


def command_action(name: str, entities: list[EntityView]) -> tuple[str, EntityView | None]:
    """What a command named `name` does: `add_expense` adds an Expense, `list` lists the first
    entity, `report` counts every entity; ("", None) when it is none of those."""
    verb, _, noun = name.partition("_")
    action = _ACTIONS.get(verb, "")
    if not action or not entities:
        return "", None
    if action == "report":
        return ("report", None) if not noun else ("", None)
    if not noun:
        return action, entities[0]
    for entity in entities:
        if noun in (entity.snake, entity.plural):
            return action, entity
    return "", None


def _commands(
    spec: ProjectSpec, entities: list[EntityView] | None = None
) -> tuple[CommandView, ...]:
    commands: dict[str, CommandView] = {}
    for cmd in spec.commands:
        name = snake_case(cmd.command.lstrip("/"), "command")[:32]
        if name in {"start", "help"} or name in commands:
            continue
        action, entity = command_action(name, entities or [])
        commands[name] = CommandView(
            name, f"on_{name}", one_line(cmd.description) or name, action, entity
        )
    return tuple(commands.values())


def effective_kinds(spec: ProjectSpec) -> tuple[ServiceKind, ...]:
    """The spec's kinds, primary first and without repeats (an empty list means HTTP)."""
    return tuple(dict.fromkeys((spec.primary_kind, *spec.kinds)))


def build_context(spec: ProjectSpec) -> dict[str, object]:
    """Everything the templates of `spec`'s kinds render from."""
    entities: dict[str, EntityView] = {}
    for view in map(_entity, spec.entities):
        entities.setdefault(view.snake, view)
    kinds = effective_kinds(spec)
    variables = _variables(spec, kinds, has_entities=bool(entities))
    annotations = {f.annotation for e in entities.values() for f in e.fields}
    return {
        "datetime_imports": sorted(annotations & {"date", "datetime"}),
        "slug": spec.slug,
        "name": one_line(spec.name),
        "summary": one_line(spec.summary),
        "kinds": [kind.value for kind in kinds],
        "has_http": ServiceKind.HTTP in kinds,
        "has_bot": ServiceKind.TELEGRAM_BOT in kinds,
        "has_worker": ServiceKind.WORKER in kinds,
        "entities": list(entities.values()),
        "endpoints": [
            {"method": e.method.upper(), "path": one_line(e.path), "summary": one_line(e.summary)}
            for e in spec.endpoints
        ],
        "commands": list(_commands(spec, list(entities.values()))),
        "variables": list(variables),
        "required_vars": [v for v in variables if v.default is None and v.env != _BOT_VAR],
        "acceptance": [one_line(text) for text in spec.acceptance_criteria],
        "test_values": {v.env: _test_value(v) for v in variables if v.env != _BOT_VAR},
        "worker_interval": float(_worker_interval(spec)),
        "database_secret": any(v.env == _DATABASE_URL and v.secret for v in variables),
        # DATABASE_URL is always optional (empty: SQLite in DATA_DIR). deploy.json says so, so
        # a deploy never waits for it, whoever reads the repository later (an adoption reads
        # any *_URL as a possible credential).
        # A spec that asks for PostgreSQL makes the URL required: the deploy waits for it.
        "database_optional": any(v.env == _DATABASE_URL for v in variables)
        and not _wants_postgres(spec),
        "schedules": list(_schedules(spec)),
        "integrations": [
            {
                "name": one_line(i.name),
                "base_url": i.base_url,
                "env_vars": list(i.env_vars),
                "purpose": one_line(i.purpose),
            }
            for i in spec.integrations
        ],
        "persistence": (
            {"kind": spec.persistence.kind.value, "stores": one_line(spec.persistence.stores)}
            if spec.persistence is not None
            else None
        ),
        # The checks reach the generated tests as one JSON document inside a Python literal.
        "checks_json": json.dumps(
            [check.model_dump(mode="json") for check in spec.checks], ensure_ascii=False
        ),
        "has_http_checks": any(isinstance(c, HttpCheck) for c in spec.checks),
        # Bot checks need the bot's handlers, which only a spec with the bot kind renders.
        "has_bot_checks": ServiceKind.TELEGRAM_BOT in kinds
        and any(isinstance(c, BotCheck) for c in spec.checks),
        "has_worker_checks": ServiceKind.WORKER in kinds
        and any(isinstance(c, WorkerCheck) for c in spec.checks),
    }


def _wants_postgres(spec: ProjectSpec) -> bool:
    return spec.persistence is not None and spec.persistence.kind is PersistenceKind.POSTGRES


#: Names `app/worker.py` defines or imports; a schedule with one of these names gets a suffix.
_WORKER_NAMES = frozenset(
    {"asyncio", "logging", "partial", "log", "job", "utc_now", "Clock", "Cron", "Every",
     "ScheduledJob", "scheduled_jobs", "Worker", "running", "Settings", "Stores", "UTC",
     "datetime", "date", "timedelta", "suppress", "asynccontextmanager", "AsyncIterator",
     "Awaitable", "Callable", "MAX_WAIT_SECONDS", "SEARCH_DAYS"}
)  # fmt: skip


def _schedules(spec: ProjectSpec) -> tuple[ScheduleView, ...]:
    """The spec's schedules with a distinct function name each, clear of the module's names."""
    views: list[ScheduleView] = []
    taken = set(_WORKER_NAMES)
    for schedule in spec.schedules:
        function = schedule.name
        if function in taken or keyword.iskeyword(function):
            function = f"{function}_job"
        while function in taken:
            function = f"{function}_{len(views) + 1}"
        taken.add(function)
        views.append(
            ScheduleView(
                schedule.name,
                function,
                _timing(schedule),
                one_line(schedule.action),
                schedule.cron,
                schedule.every_seconds,
            )
        )
    return tuple(views)


def _timing(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"cron `{schedule.cron}` (UTC)"
    return f"every {schedule.every_seconds} s"


def _test_value(var: VarView) -> str:
    return var.default if var.default is not None else f"test-{var.field.replace('_', '-')}"
