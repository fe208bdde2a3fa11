"""Transactional outbox and inbox.

A step writes its inbox row, its state change and its outbox rows in one transaction. After
commit the rows are published at once; if the process dies first, the relay publishes them
later. Publishing twice is harmless: the stream drops a repeated `Nats-Msg-Id`, and a
consumer's inbox drops a repeated event id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Event
from infra.bus.codec import encode
from infra.db.models import InboxEntry, OutboxMessage
from infra.metrics import OUTBOX_PENDING

log = structlog.get_logger(__name__)


class RawPublisher(Protocol):
    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> None: ...


def outbox_rows(events: Sequence[Event]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for event in events:
        subject, body, headers = encode(event)
        rows.append(
            {"event_id": event.event_id, "subject": subject, "payload": body, "headers": headers}
        )
    return rows


async def record_step(
    session: AsyncSession, consumer: str, event_id: uuid.UUID, emitted: Sequence[Event]
) -> None:
    """Write the inbox row and the outbox rows of one handled event (caller commits)."""
    await session.execute(
        insert(InboxEntry).values(
            consumer=consumer,
            event_id=event_id,
            result_event_ids=[str(e.event_id) for e in emitted],
        )
    )
    if emitted:
        await session.execute(insert(OutboxMessage), outbox_rows(emitted))


async def recorded_result(
    session: AsyncSession, consumer: str, event_id: uuid.UUID
) -> list[uuid.UUID] | None:
    """The ids a consumer emitted for `event_id`, or None if it never handled it."""
    row = await session.scalar(
        select(InboxEntry.result_event_ids).where(
            InboxEntry.consumer == consumer, InboxEntry.event_id == event_id
        )
    )
    return None if row is None else [uuid.UUID(str(i)) for i in row]


async def publish_outbox(
    sessionmaker: async_sessionmaker[AsyncSession],
    publisher: RawPublisher,
    event_ids: Sequence[uuid.UUID],
) -> None:
    """Publish the given outbox rows now and mark them published."""
    if not event_ids:
        return
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(
                    OutboxMessage.event_id,
                    OutboxMessage.subject,
                    OutboxMessage.payload,
                    OutboxMessage.headers,
                ).where(OutboxMessage.event_id.in_(event_ids))
            )
        ).all()
    await asyncio.gather(
        *(publisher.publish_raw(r.subject, r.payload, dict(r.headers)) for r in rows)
    )
    async with sessionmaker.begin() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.event_id.in_([r.event_id for r in rows]))
            .where(OutboxMessage.published_at.is_(None))
            .values(published_at=datetime.now(UTC))
        )


class OutboxRelay:
    """Publishes rows that were committed but not published (a crash after commit).

    Rows younger than `grace` are left to the step that wrote them, which publishes right
    after its commit; `FOR UPDATE SKIP LOCKED` lets every replica run a relay safely.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publisher: RawPublisher,
        *,
        interval: float = 1.0,
        grace: timedelta = timedelta(seconds=2),
        retention: timedelta = timedelta(days=1),
        batch: int = 200,
        process: str = "orchestrator",
    ) -> None:
        self._sessionmaker = sessionmaker
        self._publisher = publisher
        self._interval = interval
        self._grace = grace
        self._retention = retention
        self._batch = batch
        self._process = process

    async def relay_once(self) -> int:
        now = datetime.now(UTC)
        async with self._sessionmaker.begin() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxMessage)
                        .where(OutboxMessage.published_at.is_(None))
                        .where(OutboxMessage.created_at < now - self._grace)
                        .order_by(OutboxMessage.id)
                        .limit(self._batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            for row in rows:
                await self._publisher.publish_raw(row.subject, row.payload, dict(row.headers))
                row.published_at = now
            # Published rows are kept for re-publishing on duplicates, then purged.
            await session.execute(
                delete(OutboxMessage).where(OutboxMessage.published_at < now - self._retention)
            )
            pending = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))
            )
        OUTBOX_PENDING.labels(self._process).set(max((pending or 0) - len(rows), 0))
        if rows:
            log.info("outbox.relayed", count=len(rows))
        return len(rows)

    async def run(self) -> None:
        while True:
            try:
                await self.relay_once()
            except Exception:
                log.exception("outbox.relay_failed")
            await asyncio.sleep(self._interval)
