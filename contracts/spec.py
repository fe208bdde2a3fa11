"""The project specification the analyst writes and every later step reads."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_validator,
)

from contracts.fields import (
    CAPTURE_NAME_PATTERN,
    JSON_PATH_PATTERN,
    MAX_ITEMS,
    MAX_NAME,
    MAX_TEXT,
    SLUG_PATTERN,
    VAR_NAME_PATTERN,
    CheckPath,
    check_https_url,
    check_var_name_not_value,
)


class ServiceKind(StrEnum):
    """What the generated service is; a spec may combine several."""

    HTTP = "http"
    TELEGRAM_BOT = "telegram_bot"
    WORKER = "worker"


class EntityField(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Field name, snake_case", max_length=MAX_NAME)
    type: str = Field(
        "str",
        description="Python type name: str, int, float, bool, date, datetime",
        max_length=MAX_NAME,
    )
    description: str = Field("", description="What the field holds", max_length=MAX_TEXT)


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Entity name, PascalCase (e.g. Expense)", max_length=MAX_NAME)
    fields: tuple[EntityField, ...] = Field(
        (), description="The entity's fields", max_length=MAX_ITEMS
    )


class Endpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str = Field("GET", description="HTTP method", max_length=16)
    path: str = Field(description="URL path, e.g. /expenses", max_length=2000)
    summary: str = Field("", description="What the endpoint does", max_length=MAX_TEXT)


class BotCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    command: str = Field(
        description="Telegram command without the slash, e.g. add", max_length=MAX_NAME
    )
    description: str = Field("", description="Shown in the bot's command menu", max_length=MAX_TEXT)


class ConfigVar(BaseModel):
    """A variable the generated service reads from its `.env`."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        description="Environment variable name, UPPER_SNAKE_CASE (it also names a Vault path)",
        pattern=VAR_NAME_PATTERN,
    )
    description: str = Field("", description="What it configures", max_length=MAX_TEXT)
    default: str | None = Field(
        None, description="Default value (never set for secrets)", max_length=MAX_TEXT
    )
    secret: bool = Field(
        False, description="True when the value lives in Vault; events carry only the name"
    )


#: A schedule's name: it becomes a Python function and a log field in the generated service.
SCHEDULE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
#: Interval bounds: at most once a minute (a tighter loop is a service, not a schedule), at
#: least once every 31 days.
MIN_INTERVAL_SECONDS = 60
MAX_INTERVAL_SECONDS = 31 * 24 * 3600
#: Each field of a five-field cron expression and the values it may take.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
                ("month", 1, 12), ("day of week", 0, 7))  # fmt: skip
_CRON_ITEM = re.compile(r"^(\*|\d{1,2}(?:-\d{1,2})?)(?:/(\d{1,2}))?$")


def check_cron(expression: str) -> str:
    """`expression` unchanged if it is a numeric five-field cron expression; else ValueError.

    Only what every cron implementation reads the same way is accepted: `*`, numbers, ranges
    `a-b`, steps `/n` and comma lists (e.g. `0 9 * * 1-5`). Names (`MON`), `@daily` and six-field
    forms with seconds are refused with a message that says so.
    """
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"e.g. '0 9 * * *' for every day at 09:00; got {len(fields)}"
        )
    for text, (label, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                raise ValueError(
                    f"cron {label} field {text!r} is not '*', a number, a range a-b, a step /n "
                    "or a comma list of those (names such as MON are not accepted)"
                )
            start, _, end = match.group(1).partition("-")
            values = [int(v) for v in (start, end) if v and v != "*"]
            if any(not low <= v <= high for v in values):
                raise ValueError(f"cron {label} field {text!r} is outside {low}-{high}")
            if end and int(end) < int(start):
                raise ValueError(f"cron {label} field {text!r} is a range that runs backwards")
            if match.group(2) is not None and int(match.group(2)) == 0:
                raise ValueError(f"cron {label} field {text!r} has a step of 0")
    return " ".join(fields)


Cron = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_cron)]
HttpsUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(check_https_url)]
IntegrationVar = Annotated[
    str, Field(pattern=VAR_NAME_PATTERN), AfterValidator(check_var_name_not_value)
]


class Schedule(BaseModel):
    """A job the service runs on its own, on a cron expression or at a fixed interval."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        description="snake_case name of the job, e.g. daily_digest", pattern=SCHEDULE_NAME_PATTERN
    )
    cron: Cron | None = Field(
        None,
        description=(
            "Five-field cron expression in UTC (minute hour day-of-month month day-of-week), "
            "e.g. '0 9 * * *' for every day at 09:00; set this or every_seconds, not both"
        ),
    )
    every_seconds: int | None = Field(
        None,
        ge=MIN_INTERVAL_SECONDS,
        le=MAX_INTERVAL_SECONDS,
        description="Run every this many seconds (e.g. 3600 for hourly); or set cron instead",
    )
    action: str = Field(
        description="What one run does, e.g. 'fetch the forecast and message every subscriber'",
        min_length=1,
        max_length=MAX_TEXT,
    )

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every_seconds is None):
            raise ValueError(
                f"schedule {self.name!r} needs exactly one of cron (e.g. '0 9 * * *') and "
                "every_seconds (e.g. 3600)"
            )
        return self


class Integration(BaseModel):
    """An external API the service calls. Its variables are secrets the deploy waits for."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(
        description="The service's name, e.g. OpenWeather", min_length=1, max_length=MAX_NAME
    )
    base_url: HttpsUrl = Field(
        description=(
            "The API's https base URL without credentials, e.g. "
            "https://api.openweathermap.org/data/2.5"
        )
    )
    env_vars: tuple[IntegrationVar, ...] = Field(
        (),
        description=(
            "NAMES of the environment variables it needs (UPPER_SNAKE_CASE, e.g. "
            "OPENWEATHER_API_KEY), never their values; each is a secret stored in Vault"
        ),
        max_length=20,
    )
    purpose: str = Field("", description="What the service uses it for", max_length=MAX_TEXT)


class PersistenceKind(StrEnum):
    NONE = "none"
    SQLITE = "sqlite"
    POSTGRES = "postgres"


class Persistence(BaseModel):
    """Where the service keeps its data across restarts and releases."""

    model_config = ConfigDict(frozen=True)

    kind: PersistenceKind = Field(
        description=(
            "none: nothing survives a restart; sqlite: a file in the service's DATA_DIR; "
            "postgres: a PostgreSQL database at DATABASE_URL (a secret the deploy waits for)"
        )
    )
    stores: str = Field(
        "", description="What is kept, e.g. 'expenses and their categories'", max_length=MAX_TEXT
    )


#: Bounds of the executable acceptance checks: a JSON body or expectation, steps, captures.
MAX_CHECK_JSON = 8000
MAX_CHECK_STEPS = 20
MAX_CAPTURES = 20
MAX_CHECKS = 50
MAX_BOT_MESSAGE = 4096
MAX_PATTERN = 1000


def _bounded_json(value: JsonValue) -> JsonValue:
    if len(json.dumps(value)) > MAX_CHECK_JSON:
        raise ValueError(f"a check's JSON may be at most {MAX_CHECK_JSON} characters")
    return value


class HttpStep(BaseModel):
    """One request of an HTTP check and what its answer must contain.

    `{name}` in the path or in a string of the body or expectation stands for a value an
    earlier step captured; a string that is exactly `{name}` takes the captured value's type.
    """

    model_config = ConfigDict(frozen=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = Field(
        "GET", description="HTTP method"
    )
    path: CheckPath = Field(
        description="Path on the service's own URL, e.g. /expenses/{id}; never a scheme or host"
    )
    body: JsonValue = Field(None, description="JSON request body (null for none)")
    expect_status: int = Field(200, ge=100, le=599, description="Expected HTTP status")
    expect_json: JsonValue = Field(
        None,
        description=(
            "A subset the JSON answer must contain (objects: these keys with matching values; "
            "lists: each item matches some item of the answer); null checks the status only"
        ),
    )
    capture: dict[
        Annotated[str, Field(pattern=CAPTURE_NAME_PATTERN)],
        Annotated[str, Field(pattern=JSON_PATH_PATTERN)],
    ] = Field(
        default_factory=dict,
        description="Values to remember for later steps: name -> dotted path in the answer "
        '(e.g. {"id": "id"})',
        max_length=MAX_CAPTURES,
    )

    _body = field_validator("body", "expect_json")(_bounded_json)


class HttpCheck(BaseModel):
    """Requests in order against the running service; every step must answer as expected."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["http"] = Field("http", description="Which kind of check this is")
    name: str = Field(
        description="What the check shows, e.g. 'POST /expenses stores one'", max_length=MAX_NAME
    )
    steps: tuple[HttpStep, ...] = Field(
        description="Requests in order", min_length=1, max_length=MAX_CHECK_STEPS
    )


class BotCheck(BaseModel):
    """A user's message to the bot and a pattern the bot's reply must match.

    Telegram cannot be reached from a deploy, so these run in the project's own tests only.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["bot"] = Field("bot", description="Which kind of check this is")
    name: str = Field(description="What the check shows", max_length=MAX_NAME)
    message: str = Field(
        description="What the user sends, e.g. '/add 12.5 food'",
        min_length=1,
        max_length=MAX_BOT_MESSAGE,
    )
    reply_pattern: str = Field(
        description="Python regular expression searched in the bot's reply", max_length=MAX_PATTERN
    )

    @field_validator("reply_pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"reply_pattern is not a valid regular expression: {exc}") from exc
        return pattern


class WorkerCheck(BaseModel):
    """An effect of the background job that the service shows over HTTP (e.g. its last run).

    The path is polled until its JSON answer contains `expect_json` or the time is up.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["worker"] = Field("worker", description="Which kind of check this is")
    name: str = Field(description="What the check shows", max_length=MAX_NAME)
    path: CheckPath = Field(description="Path showing the job's effect, e.g. /worker/status")
    expect_json: JsonValue = Field(description="A subset the JSON answer must come to contain")
    within_seconds: float = Field(
        30, gt=0, le=600, description="How long the effect may take to appear"
    )

    _expect = field_validator("expect_json")(_bounded_json)


AcceptanceCheck = Annotated[HttpCheck | BotCheck | WorkerCheck, Field(discriminator="kind")]


class ProjectSpec(BaseModel):
    """Everything later steps need to scaffold, build, configure and deploy the service."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Human name of the project", max_length=MAX_NAME)
    slug: str = Field(
        description="DNS- and repo-safe identifier: lowercase letters, digits and dashes",
        pattern=SLUG_PATTERN,
    )
    summary: str = Field(
        description="One paragraph: what the service does and for whom", max_length=MAX_TEXT
    )
    kinds: tuple[ServiceKind, ...] = Field(
        description="What is generated: HTTP service, Telegram bot, background worker or several",
        max_length=10,
    )
    language: str = Field(
        "en", description="Language of the user's description (ISO 639-1)", max_length=16
    )
    entities: tuple[Entity, ...] = Field((), description="The domain's data", max_length=MAX_ITEMS)
    endpoints: tuple[Endpoint, ...] = Field(
        (), description="HTTP endpoints, for HTTP services", max_length=MAX_ITEMS
    )
    commands: tuple[BotCommand, ...] = Field(
        (), description="Bot commands, for Telegram bots", max_length=MAX_ITEMS
    )
    config: tuple[ConfigVar, ...] = Field(
        (),
        description="Configuration and secrets the service needs (names only for secrets)",
        max_length=MAX_ITEMS,
    )
    acceptance_criteria: tuple[str, ...] = Field(
        (), description="Checks that say the service does what was asked", max_length=MAX_ITEMS
    )
    checks: tuple[AcceptanceCheck, ...] = Field(
        (),
        description=(
            "Executable acceptance checks: HTTP requests with expected answers, bot messages "
            "with expected replies, worker effects seen over HTTP; run by the project's tests "
            "and, except bot checks, against every deployed release"
        ),
        max_length=MAX_CHECKS,
    )
    schedules: tuple[Schedule, ...] = Field(
        (),
        description="Jobs the service runs on its own (cron or interval); they need the worker",
        max_length=50,
    )
    integrations: tuple[Integration, ...] = Field(
        (),
        description="External APIs the service calls: base URL and the names of their secrets",
        max_length=50,
    )
    persistence: Persistence | None = Field(
        None,
        description="Where the data is kept; null when not stated (specs written before it)",
    )

    @property
    def primary_kind(self) -> ServiceKind:
        """The kind whose template is the scaffold's base (HTTP wins, then bot, then worker)."""
        for kind in (ServiceKind.HTTP, ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER):
            if kind in self.kinds:
                return kind
        return ServiceKind.HTTP

    @property
    def secret_names(self) -> tuple[str, ...]:
        """Every secret the deploy reads from Vault: config secrets, then integrations' vars."""
        names = [var.name for var in self.config if var.secret]
        names += [name for i in self.integrations for name in i.env_vars]
        return tuple(dict.fromkeys(names))
