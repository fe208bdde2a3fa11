"""Rules every spec obeys, whichever analyst wrote it (offline rules or an LLM).

Later steps rely on them: the repo step names the repository after the slug, the deployer
writes one `.env` line per config variable and reads every secret from Vault, and the bot
template registers the commands with Telegram. An integration's variables and a PostgreSQL
database's URL become secret config variables, so the deploy waits for them exactly as it
waits for any other secret; a schedule needs the worker, which runs it.

An LLM that gets a detail slightly wrong (a
slug with capitals, a command with a slash, a default for a secret) is corrected here rather
than sent back for another paid round trip.
"""

from __future__ import annotations

import re
from typing import Any

from contracts.spec import BotCommand, ConfigVar, PersistenceKind, ProjectSpec, ServiceKind

from .slugs import is_valid_slug, slugify

#: The name (never the value) of the secret every Telegram bot needs.
BOT_TOKEN = "TELEGRAM_BOT_TOKEN"  # noqa: S105 - a variable name, not a credential
DATABASE_URL = "DATABASE_URL"


def repair_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Fix what can be fixed mechanically in a proposed spec before it is validated."""
    repaired = dict(arguments)
    slug = repaired.get("slug")
    if not isinstance(slug, str) or not is_valid_slug(slug):
        source = slug if isinstance(slug, str) and slug.strip() else repaired.get("name", "")
        repaired["slug"] = slugify(str(source))
    config = repaired.get("config")
    if isinstance(config, list):
        # The contract only accepts UPPER_SNAKE_CASE names (they name Vault paths too); a model
        # writing `api_key` or `bot-token` means API_KEY or BOT_TOKEN.
        repaired["config"] = [
            {**var, "name": _env_name(var["name"])}
            if isinstance(var, dict) and isinstance(var.get("name"), str)
            else var
            for var in config
        ]
    integrations = repaired.get("integrations")
    if isinstance(integrations, list):
        repaired["integrations"] = [
            {**item, "env_vars": [_env_name(n) if isinstance(n, str) else n for n in names]}
            if isinstance(item, dict) and isinstance(names := item.get("env_vars"), list)
            else item
            for item in integrations
        ]
    return repaired


def _command_name(command: str) -> str:
    # Telegram accepts 1-32 characters: lowercase Latin letters, digits and underscores.
    name = re.sub(r"[^a-z0-9_]+", "_", command.strip().lstrip("/").lower()).strip("_")
    return name[:32] or "start"


def _env_name(name: str) -> str:
    # A leading digit or underscore is not a valid variable name's start: drop it.
    return re.sub(r"[^A-Z0-9_]+", "_", name.strip().upper()).lstrip("_0123456789").rstrip("_")


def enforce(spec: ProjectSpec) -> ProjectSpec:
    """The spec with the invariants later steps rely on made true."""
    kinds = tuple(dict.fromkeys(spec.kinds)) or (ServiceKind.HTTP,)
    if spec.schedules and ServiceKind.WORKER not in kinds:
        kinds = (*kinds, ServiceKind.WORKER)

    config: dict[str, ConfigVar] = {}
    for var in spec.config:
        name = _env_name(var.name)
        if not name or name in config:
            continue
        # A secret's value lives in Vault only; a default would put it in the repo and events.
        config[name] = var.model_copy(
            update={"name": name, "default": None if var.secret else var.default}
        )
    if ServiceKind.TELEGRAM_BOT in kinds:
        config[BOT_TOKEN] = ConfigVar(
            name=BOT_TOKEN, description="Token of the bot from @BotFather", secret=True
        )
    for integration in spec.integrations:
        for name in integration.env_vars:
            described = config.get(name)
            config[name] = ConfigVar(
                name=name,
                description=described.description if described else f"{integration.name} key",
                secret=True,
            )
    if spec.persistence is not None and spec.persistence.kind is PersistenceKind.POSTGRES:
        # The URL carries the database password: a secret the deploy waits for.
        config[DATABASE_URL] = ConfigVar(
            name=DATABASE_URL,
            description="PostgreSQL URL (postgresql://user:password@host/db) of the data",
            secret=True,
        )

    commands: dict[str, BotCommand] = {}
    if ServiceKind.TELEGRAM_BOT in kinds:
        for command in (BotCommand(command="start", description="Start the bot"), *spec.commands):
            name = _command_name(command.command)
            commands.setdefault(name, command.model_copy(update={"command": name}))

    return spec.model_copy(
        update={
            "kinds": kinds,
            "config": tuple(config.values()),
            "commands": tuple(commands.values()),
        }
    )
