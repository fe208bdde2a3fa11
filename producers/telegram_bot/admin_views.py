"""What an admin sees from the chat: servers, open incidents, dead letters, consumer lag, users.

The same sources as the CLI (`orchestrator servers list`, `lag`, `dlq list`): the inventory in
`infra.inventory`, the dead-letter queue in `infra.bus.dead_letter`, the durables declared in
`contracts.topology`. Read-only: replaying a dead letter or changing a server stays a host
operation. Every view is plain text that fits one Telegram message.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.js.errors import NotFoundError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import CONSUMERS
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import Incident, ServerState
from infra.inventory import list_servers
from producers.access import Person

_MAX_ROWS = 30


class AdminViews:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], nc: Client) -> None:
        self._sessionmaker = sessionmaker
        self._nc = nc

    async def servers(self) -> str:
        servers = await list_servers(self._sessionmaker)
        if not servers:
            return "No servers in the inventory (add one with `orchestrator servers add`)."
        lines = ["Servers:"]
        lines.extend(
            f"{s.name} {s.host}:{s.ssh_port} ports {s.used_ports}/{s.capacity} "
            f"({s.port_min}-{s.port_max})"
            + ("" if s.state == ServerState.READY else f" [{s.state}]")
            for s in servers
        )
        return "\n".join(lines)

    async def incidents(self) -> str:
        async with self._sessionmaker() as session:
            rows = list(
                await session.scalars(
                    select(Incident)
                    .where(Incident.status == "open")
                    .order_by(Incident.opened_at.desc())
                    .limit(_MAX_ROWS)
                )
            )
        if not rows:
            return "No open incidents."
        lines = ["Open incidents:"]
        lines.extend(f"{i.opened_at:%Y-%m-%d %H:%M} {i.kind}: {i.summary}" for i in rows)
        return "\n".join(lines)

    async def dead_letters(self) -> str:
        queue = DeadLetterQueue(self._nc.jsm(), JetStreamPublisher.from_client(self._nc))
        letters = await queue.list(limit=_MAX_ROWS)
        if not letters:
            return "The dead-letter queue is empty."
        lines = ["Dead letters (replay with `orchestrator dlq replay SEQ`):"]
        lines.extend(
            f"#{d.seq} {d.failed_at[:16]} {d.consumer} {d.subject} x{d.deliveries}: {d.error[:80]}"
            for d in letters
        )
        return "\n".join(lines)

    async def lag(self) -> str:
        jsm = self._nc.jsm()
        lines = ["Consumer lag (pending / ack pending / redelivered):"]
        for spec in CONSUMERS:
            try:
                info = await jsm.consumer_info(spec.stream.name, spec.durable)
            except NotFoundError:
                lines.append(f"{spec.durable}: not created yet")
                continue
            lines.append(
                f"{spec.durable}: {info.num_pending or 0} / {info.num_ack_pending or 0} / "
                f"{info.num_redelivered or 0}"
            )
        return "\n".join(lines)

    @staticmethod
    def users(people: list[Person]) -> str:
        lines = ["Users:"]
        lines.extend(
            f"{p.id} {p.role} {p.status}"
            + (f" ({p.display_name})" if p.display_name else "")
            + (f" added by {p.added_by}" if p.added_by else "")
            for p in people
        )
        return "\n".join(lines)
