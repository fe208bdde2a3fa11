"""How the CLI reaches the bus: as the `admin` NATS user, whose password it reads from Vault."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from infra.bus.connection import connect
from infra.bus.credentials import read_credentials
from infra.bus.permissions import ADMIN
from infra.bus.publisher import JetStreamPublisher
from infra.vault import SecretNotFound, VaultClient

from .endpoints import Endpoints, NoStack


async def operator_nats_options(endpoints: Endpoints) -> dict[str, Any]:
    """The `admin` NATS user's connect options, read from Vault with the operator's token.

    Empty when no Vault token is known or Vault holds no NATS credentials (a server without
    authentication); a server that requires them then refuses the connection.
    """
    if not (endpoints.vault_addr and endpoints.vault_token):
        return {}
    vault = VaultClient(endpoints.vault_addr, token=endpoints.vault_token)
    try:
        credentials = await read_credentials(vault, ADMIN)
    except SecretNotFound:
        return {}
    return credentials.connect_options()


@asynccontextmanager
async def nats_client(endpoints: Endpoints) -> AsyncIterator[Client]:
    options = await operator_nats_options(endpoints)
    servers = endpoints.nats_url.split(",")
    # A refused user would otherwise be retried for minutes before nats-py gives up.
    await _check_accepted(servers, options, endpoints.nats_url)
    nc = await connect(servers, connect_timeout=5, **options)
    try:
        yield nc
    finally:
        await nc.close()


#: A person at a terminal would rather wait than read a traceback: while the server answers, a
#: stream that is slow to store (twenty requests at once on two cores beside a busy stack, a
#: stalled disk) gets five minutes before the CLI says so; a server that is gone is reported
#: after the first attempts (about 50 seconds).
CLI_PUBLISH_PATIENCE_SECONDS = 300.0


def publisher(nc: Client) -> JetStreamPublisher:
    """The CLI's publisher: the same event id on every attempt, so a retry never doubles it."""
    return JetStreamPublisher.from_client(
        nc, patience=CLI_PUBLISH_PATIENCE_SECONDS, on_wait=_tell_waiting
    )


def _tell_waiting(message: str) -> None:
    print(f"orchestrator: {message} (waiting while NATS answers)", file=sys.stderr, flush=True)


async def _check_accepted(servers: list[str], options: dict[str, Any], url: str) -> None:
    """Raise NoStack with what to do if the server refuses the CLI's NATS user."""

    async def quiet(error: Exception) -> None:
        return None

    try:
        probe = await nats.connect(
            servers, connect_timeout=5, allow_reconnect=False, error_cb=quiet, **options
        )
    except NatsError as exc:
        if "authorization violation" not in str(exc).lower():
            return
        raise NoStack(
            f"NATS at {url} refused the CLI: it connects as the `admin` user, whose password "
            "it reads from Vault (secret/platform/nats/admin) with the operator token; set "
            "ORCH_VAULT__ADDR and ORCH_VAULT__TOKEN (a deployed system) or run against the "
            "local stack's stack.json"
        ) from exc
    except OSError:
        return
    await probe.close()
