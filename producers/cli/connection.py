"""Where the CLI finds the system: `ORCH_*` variables, else the local stack's `stack.json`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.bus.credentials import read_credentials
from infra.bus.permissions import ADMIN
from infra.db.session import make_engine, make_sessionmaker
from infra.stack.launcher import read_stack_info
from infra.vault import SecretNotFound, VaultClient


class NoStack(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoints:
    nats_url: str
    database_url: str
    vault_addr: str
    vault_token: str
    state_dir: Path


def resolve(state_dir: Path) -> Endpoints:
    """Explicit variables win (a remote deployment); otherwise the running local stack."""
    env = os.environ
    if env.get("ORCH_NATS__URL") and env.get("ORCH_DATABASE__URL"):
        return Endpoints(
            nats_url=env["ORCH_NATS__URL"],
            database_url=env["ORCH_DATABASE__URL"],
            vault_addr=env.get("ORCH_VAULT__ADDR", ""),
            vault_token=env.get("ORCH_VAULT__TOKEN", ""),
            state_dir=state_dir,
        )
    info = read_stack_info(state_dir)
    if info is None:
        raise NoStack(
            f"no running stack in {state_dir}: start one with `orchestrator up` "
            "(or set ORCH_NATS__URL and ORCH_DATABASE__URL to reach a deployed one)"
        )
    return Endpoints(
        nats_url=info.nats_url,
        database_url=info.database_url,
        vault_addr=info.vault_addr,
        vault_token=info.vault_token,
        state_dir=state_dir,
    )


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
    nc = await nats.connect(servers, connect_timeout=5, **options)
    try:
        yield nc
    finally:
        await nc.close()


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


@asynccontextmanager
async def database(endpoints: Endpoints) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(endpoints.database_url, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
