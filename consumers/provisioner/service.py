"""The provisioner's step: give a project a server and a port, and take them back.

The database is the authority. `UNIQUE(server_id, port)` makes two projects sharing a port
impossible and `UNIQUE(project_id)` makes a redelivered request find the allocation it made
the first time, whichever replica handles it. Each server's row is locked while its
allocations are counted, so capacity holds under concurrency too; the lock lives in a
SAVEPOINT, so a server found full is unlocked at once and never holds up the rest.

All work happens in the caller's session: in the consumer it is the transaction that also
records the inbox row and the outbox event, so an allocation and its announcement commit
together or not at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from consumers.provisioner.placement import ServerLoad, free_ports, rank_servers
from infra.db.models import PortAllocation, Server, ServerState
from infra.stack.ports import tcp_accepts

#: The constraint whose violation means "this project already has an allocation".
_PROJECT_UNIQUE = "uq_port_allocations_project_id"
#: A port that accepts a connection within this long is taken; a filtered port counts as free.
PROBE_TIMEOUT_SECONDS = 0.2


@dataclass(frozen=True)
class Allocation:
    """Where a project's service listens: inventory name, reachable address, port."""

    server_name: str
    host: str
    port: int


class NoCapacityError(Exception):
    """No ready server has every requested label and a free slot.

    The message is written for the operator who reads it in the project's timeline or
    the dead-letter listing: it says what is missing, which registered servers are not
    ready (and why), and the command that fixes it.
    """

    def __init__(self, labels: Sequence[str], not_ready: Sequence[tuple[str, str]] = ()) -> None:
        self.labels = tuple(labels)
        self.not_ready = tuple(not_ready)
        label_option = f" --labels {','.join(self.labels)}" if self.labels else ""
        waiting = ""
        if self.not_ready:
            listed = ", ".join(f"{name} is {state}" for name, state in self.not_ready)
            waiting = (
                f"; not ready, so not used: {listed} (a new or unreachable server becomes "
                "ready with `orchestrator servers bootstrap NAME`)"
            )
        super().__init__(
            f"no server with free capacity and labels [{', '.join(self.labels)}] is ready"
            f"{waiting}; or add one with "
            f"`orchestrator servers add NAME --host HOST --key-file PATH{label_option} --scan` "
            "and prepare it with `orchestrator servers bootstrap NAME`"
        )


class ProvisionerService:
    """Allocation and release of (server, port) pairs inside one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def allocate(self, project_id: uuid.UUID, labels: Sequence[str] = ()) -> Allocation:
        """The project's allocation, created on first call and returned unchanged afterwards.

        Raises `NoCapacityError` when no server qualifies.
        """
        existing = await self.find(project_id)
        if existing is not None:
            return existing
        for candidate in rank_servers(await self._loads(), labels):
            allocation = await self._allocate_on(candidate.server_id, project_id)
            if allocation is not None:
                return allocation
        raise NoCapacityError(labels, await self._not_ready())

    async def find(self, project_id: uuid.UUID) -> Allocation | None:
        """The project's current allocation, if it has one."""
        row = (
            await self._session.execute(
                select(Server.name, Server.host, Server.public_host, PortAllocation.port)
                .join(Server, Server.id == PortAllocation.server_id)
                .where(PortAllocation.project_id == project_id)
            )
        ).one_or_none()
        if row is None:
            return None
        name, host, public_host, port = row
        return Allocation(server_name=name, host=public_host or host, port=port)

    async def release(self, project_id: uuid.UUID) -> Allocation | None:
        """Delete the project's allocation and return what it was (None if it had none)."""
        allocation = await self.find(project_id)
        if allocation is not None:
            await self._session.execute(
                delete(PortAllocation).where(PortAllocation.project_id == project_id)
            )
        return allocation

    async def _not_ready(self) -> list[tuple[str, str]]:
        """(name, state) of every registered server placement skips, retired ones aside."""
        rows = await self._session.execute(
            select(Server.name, Server.state)
            .where(Server.state.not_in((ServerState.READY, ServerState.RETIRED)))
            .order_by(Server.name)
        )
        return [(name, state) for name, state in rows.tuples()]

    async def _loads(self) -> list[ServerLoad]:
        rows = await self._session.execute(
            select(
                Server.id,
                Server.name,
                Server.labels,
                Server.capacity,
                func.count(PortAllocation.id),
            )
            .outerjoin(PortAllocation, PortAllocation.server_id == Server.id)
            .where(Server.state == ServerState.READY)
            .group_by(Server.id)
        )
        return [
            ServerLoad(
                server_id=server_id,
                name=name,
                labels=frozenset(str(label) for label in labels),
                capacity=capacity,
                used=used,
            )
            for server_id, name, labels, capacity, used in rows
        ]

    async def _allocate_on(self, server_id: int, project_id: uuid.UUID) -> Allocation | None:
        """Take the lowest free port on one server, or None if it is full (or gone)."""
        savepoint = await self._session.begin_nested()
        server = (
            await self._session.execute(
                select(Server.name, Server.host, Server.public_host, Server.capacity,
                       Server.port_min, Server.port_max)
                .where(Server.id == server_id, Server.state == ServerState.READY)
                .with_for_update()
            )
        ).one_or_none()  # fmt: skip
        if server is None:
            await savepoint.rollback()
            return None
        name, host, public_host, capacity, port_min, port_max = server
        used = set(
            (
                await self._session.execute(
                    select(PortAllocation.port).where(PortAllocation.server_id == server_id)
                )
            ).scalars()
        )
        if len(used) >= capacity:
            await savepoint.rollback()
            return None
        for port in free_ports(port_min, port_max, used):
            if await asyncio.to_thread(tcp_accepts, port, host, PROBE_TIMEOUT_SECONDS):
                # Something the inventory does not know (a stale service, another stack on
                # the same machine) already listens there; a deploy would fail to bind it.
                continue
            try:
                async with self._session.begin_nested():
                    self._session.add(
                        PortAllocation(server_id=server_id, port=port, project_id=project_id)
                    )
                    await self._session.flush()
            except IntegrityError as exc:
                if _violated_constraint(exc) == _PROJECT_UNIQUE:
                    # A concurrent delivery of the same request committed first: converge on it.
                    await savepoint.rollback()
                    return await self.find(project_id)
                # Someone outside the server lock took this port; the constraint caught it.
                continue
            await savepoint.commit()
            return Allocation(server_name=name, host=public_host or host, port=port)
        await savepoint.rollback()
        return None


def _violated_constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return str(name) if name is not None else None
