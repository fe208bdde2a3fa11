"""How a process gets its NATS user and connects with it.

Each process's NATS password lives in Vault at `platform/nats/<process>` (written by the stack
launcher, or by the deployment's bootstrap job), readable only by that process's policy. A
process logs in to Vault (with its AppRole, or its service account in Kubernetes), reads its
password and connects with it and with its own inbox prefix; the password never travels through
argv, the environment or a log line.

A process with no Vault configured (a unit of the test suite against a bare nats-server)
connects without credentials; a server that requires authentication then refuses it with
"Authorization Violation", which is the intended failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.client import Client

from infra.bus.connection import connect as connect_established
from infra.bus.permissions import EXTERNAL, inbox_prefix
from infra.settings import Settings, VaultSettings
from infra.vault import SecretNotFound, VaultClient

log = structlog.get_logger(__name__)

NATS_KV_PREFIX = "platform/nats"


def nats_secret_path(user: str) -> str:
    """The Vault KV path holding `user`'s NATS password (key `password`)."""
    return f"{NATS_KV_PREFIX}/{user}"


@dataclass(frozen=True)
class NatsCredentials:
    """One NATS user's name and password."""

    user: str
    password: str = field(repr=False)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`: the user, its password and its inbox prefix."""
        options: dict[str, Any] = {"user": self.user, "password": self.password}
        if self.user != EXTERNAL:
            options["inbox_prefix"] = inbox_prefix(self.user)
        return options


async def read_credentials(vault: VaultClient, user: str) -> NatsCredentials:
    """`user`'s credentials from Vault; raises SecretNotFound (with the path) if none are stored."""
    data = await vault.read_secret(nats_secret_path(user))
    password = data.get("password", "")
    if not password:
        raise SecretNotFound(
            f"the Vault secret {nats_secret_path(user)} has no `password`; restart the stack "
            "(`orchestrator up`) or rerun the deployment's NATS bootstrap to regenerate it"
        )
    return NatsCredentials(user, password)


async def store_credentials(vault: VaultClient, passwords: Mapping[str, str]) -> None:
    """Write every user's password to its Vault path (the launcher does this at each start)."""
    for user, password in passwords.items():
        # The password only: every value read from Vault is masked in logs, and a user name
        # such as "coordinator" must stay readable there.
        await vault.write_secret(nats_secret_path(user), {"password": password})


async def process_credentials(
    settings: Settings, vault: VaultClient | None = None
) -> NatsCredentials | None:
    """This process's NATS credentials, read from Vault after its login (AppRole or Kubernetes).

    `vault` is the process's client if it already logged in (else one is made from settings).
    None when Vault is not configured at all, or when it holds no NATS secret for this process
    (a server without authentication then accepts the connection; one with it refuses it).
    """
    if vault is None:
        if not _vault_configured(settings.vault):
            return None
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
    try:
        return await read_credentials(vault, settings.process_name)
    except SecretNotFound:
        log.warning(
            "nats.no_credentials",
            process=settings.process_name,
            path=nats_secret_path(settings.process_name),
        )
        return None


async def connect(
    settings: Settings, *, vault: VaultClient | None = None, **options: Any
) -> Client:
    """Connect to `settings.nats.url` as this process's NATS user (see `process_credentials`)."""
    credentials = await process_credentials(settings, vault)
    extra = credentials.connect_options() if credentials is not None else {}
    return await connect_established(settings.nats.url.split(","), **extra, **options)


def _vault_configured(vault: VaultSettings) -> bool:
    return bool(vault.role_id or vault.auth == "kubernetes" or vault.token.get_secret_value())
