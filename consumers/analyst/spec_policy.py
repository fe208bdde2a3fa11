"""Rules every spec obeys, whichever analyst wrote it (offline rules or an LLM).

Later steps rely on them: the repo step names the repository after the slug, the deployer
writes one `.env` line per config variable and reads every secret from Vault, and the bot
template registers the commands with Telegram. An LLM that gets a detail slightly wrong (a
slug with capitals, a command with a slash, a default for a secret) is corrected here rather
than sent back for another paid round trip.
"""

from __future__ import annotations

import re
from typing import Any

from contracts.spec import BotCommand, ConfigVar, ProjectSpec, ServiceKind

from .slugs import is_valid_slug, slugify

#: The name (never the value) of the secret every Telegram bot needs.
BOT_TOKEN = "TELEGRAM_BOT_TOKEN"  # noqa: S105 - a variable name, not a credential


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
