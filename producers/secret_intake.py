"""Storing a project secret the same way from every door (CLI, bot; the API can call it too).

The value goes to Vault only, at `projects/<project id>/<NAME>`; then `secret.stored` announces
the name and path, so a project waiting for that secret resumes. The value is never in the
event, a log line, the database or a reply.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Protocol

from contracts.events import SecretStored
from infra.bus.publisher import Publisher
from infra.vault import project_secret_path
from producers.intents import secret_stored

#: Environment-variable names: what the deploy writes into the service's `.env`.
SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


class InvalidSecretName(ValueError):
    pass


class SecretWriter(Protocol):
    async def write_secret(self, path: str, data: Mapping[str, str]) -> None: ...


def check_secret_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):
        raise InvalidSecretName(
            f"{name!r} is not a secret name: use capitals, digits and _, starting with a "
            "letter (e.g. TELEGRAM_BOT_TOKEN)"
        )
    return name


async def store_project_secret(
    vault: SecretWriter,
    publisher: Publisher,
    *,
    project_id: uuid.UUID,
    flow_id: uuid.UUID,
    name: str,
    value: str,
    user_id: str,
) -> SecretStored:
    """Write `value` to Vault, then publish its name (never the value) as `user_id`'s act."""
    path = project_secret_path(str(project_id), check_secret_name(name))
    await vault.write_secret(path, {"value": value})
    event = secret_stored(project_id, flow_id, name, path, user_id=user_id)
    await publisher.publish(event)
    return event
