"""How many deploys one server takes at once: its `servers.deploy_slots`, held as advisory locks.

The deployer's concurrency (`ORCH_DEPLOYER__CONCURRENCY`, the durable's `max_ack_pending`)
bounds deploys across every server; a small server may take fewer. Each of its slots is a
PostgreSQL session-level advisory lock, keyed by the server's name and the slot's number, taken
with `pg_try_advisory_lock` on a connection of its own (outside the step's transaction) and held
for the length of the deploy. A replica that finds every slot taken raises `ServerBusy`, and
the runtime puts the request back on the transient schedule: it waits, it is not a failure.
The server going away frees its slots with the connection, so a crashed replica never keeps
one. `None` (the default) means no limit of the server's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.db.models import Server


class ServerBusy(Exception):
    """Every deploy slot of the server is taken; the request waits and is retried."""


class DeploySlots(Protocol):
    def hold(self, server: str) -> AbstractAsyncContextManager[None]:
        """An async context holding one of `server`'s deploy slots; raise `ServerBusy` if none."""
        ...


def slot_key(server: str, slot: int) -> str:
    """The text hashed into the advisory lock key of one slot (stable across releases)."""
    return f"deploy-slot:{server}:{slot}"


class AdvisoryDeploySlots:
    """`DeploySlots` on the platform's database (see the module docstring)."""

    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self._engine = engine

    @asynccontextmanager
    async def hold(self, server: str) -> AsyncIterator[None]:
        engine = self._engine()
        assert engine is not None, "the deployer's engine starts with the process"
        async with engine.connect() as connection:
            slots = await connection.scalar(
                select(Server.deploy_slots).where(Server.name == server)
            )
            await connection.commit()  # a lock outlives transactions; a snapshot need not
            if slots is not None:
                key = await _take_one(connection, server, slots)
                try:
                    yield
                finally:
                    await connection.scalar(select(func.pg_advisory_unlock(key)))
                    await connection.commit()
                return
        yield  # no limit of its own: no connection is held while it deploys


async def _take_one(connection: AsyncConnection, server: str, slots: int) -> object:
    for slot in range(slots):
        key = func.hashtextextended(slot_key(server, slot), 0)
        if await connection.scalar(select(func.pg_try_advisory_lock(key))):
            await connection.commit()
            return key
    await connection.commit()
    raise ServerBusy(
        f"server {server} is deploying {slots} release(s) already, its limit "
        f"(`orchestrator servers set {server} --deploy-slots N` changes it); this deploy waits"
    )
