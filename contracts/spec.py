"""The project specification the analyst writes and every later step reads."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ServiceKind(StrEnum):
    """What the generated service is; a spec may combine several."""

    HTTP = "http"
    TELEGRAM_BOT = "telegram_bot"
    WORKER = "worker"


class EntityField(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Field name, snake_case")
    type: str = Field("str", description="Python type name: str, int, float, bool, date, datetime")
    description: str = Field("", description="What the field holds")


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Entity name, PascalCase (e.g. Expense)")
    fields: tuple[EntityField, ...] = Field((), description="The entity's fields")


class Endpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str = Field("GET", description="HTTP method")
    path: str = Field(description="URL path, e.g. /expenses")
    summary: str = Field("", description="What the endpoint does")


class BotCommand(BaseModel):
    model_config = ConfigDict(frozen=True)

    command: str = Field(description="Telegram command without the slash, e.g. add")
    description: str = Field("", description="Shown in the bot's command menu")


class ConfigVar(BaseModel):
    """A variable the generated service reads from its `.env`."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Environment variable name, UPPER_SNAKE_CASE")
    description: str = Field("", description="What it configures")
    default: str | None = Field(None, description="Default value (never set for secrets)")
    secret: bool = Field(
        False, description="True when the value lives in Vault; events carry only the name"
    )


class ProjectSpec(BaseModel):
    """Everything later steps need to scaffold, build, configure and deploy the service."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Human name of the project")
    slug: str = Field(
        description="DNS- and repo-safe identifier: lowercase letters, digits and dashes",
        pattern=r"^[a-z][a-z0-9-]{1,48}[a-z0-9]$",
    )
    summary: str = Field(description="One paragraph: what the service does and for whom")
    kinds: tuple[ServiceKind, ...] = Field(
        description="What is generated: HTTP service, Telegram bot, background worker or several"
    )
    language: str = Field("en", description="Language of the user's description (ISO 639-1)")
    entities: tuple[Entity, ...] = Field((), description="The domain's data")
    endpoints: tuple[Endpoint, ...] = Field((), description="HTTP endpoints, for HTTP services")
    commands: tuple[BotCommand, ...] = Field((), description="Bot commands, for Telegram bots")
    config: tuple[ConfigVar, ...] = Field(
        (), description="Configuration and secrets the service needs (names only for secrets)"
    )
    acceptance_criteria: tuple[str, ...] = Field(
        (), description="Checks that say the service does what was asked"
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
