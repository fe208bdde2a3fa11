"""The project specification the analyst writes and every later step reads."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from contracts.fields import MAX_ITEMS, MAX_NAME, MAX_TEXT, SLUG_PATTERN, VAR_NAME_PATTERN


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

    @property
    def primary_kind(self) -> ServiceKind:
        """The kind whose template is the scaffold's base (HTTP wins, then bot, then worker)."""
        for kind in (ServiceKind.HTTP, ServiceKind.TELEGRAM_BOT, ServiceKind.WORKER):
            if kind in self.kinds:
                return kind
        return ServiceKind.HTTP

    @property
    def secret_names(self) -> tuple[str, ...]:
        return tuple(var.name for var in self.config if var.secret)
