"""Transactional outbox and inbox.

A step writes its inbox row, its state change and its outbox rows in one transaction. After
commit the rows are published at once; if the process dies first, the relay publishes them
later. Publishing twice is harmless: the stream drops a repeated `Nats-Msg-Id`, and a
consumer's inbox drops a repeated event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg
import structlog
from nats import errors as nats_errors
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Event
from contracts.topology import STREAMS
from infra.bus.codec import encode
from infra.db.models import InboxEntry, OutboxMessage
from infra.metrics import OUTBOX_PENDING

log = structlog.get_logger(__name__)


class RawPublisher(Protocol):
    async def publish_raw(self, subject: str, body: bytes, headers: dict[str, str]) -> None: ...


@dataclass(frozen=True)
class OutboxRow:
    """An event as it is stored in the outbox and published: subject, body, headers."""

    event_id: uuid.UUID
    subject: str
    payload: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, event: Event) -> OutboxRow:
        subject, body, headers = encode(event)
        return cls(event.event_id, subject, body, headers)

    def as_values(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "subject": self.subject,
            "payload": self.payload,
            "headers": self.headers,
        }


@dataclass(frozen=True)
class HandledEvent:
    """One handled event and what its handler emitted, ready to be recorded."""

    event_id: uuid.UUID
    emitted: tuple[OutboxRow, ...]


async def record_steps(
    session: AsyncSession, consumer: str, handled: Sequence[HandledEvent]
) -> None:
    """Write the inbox rows and outbox rows of handled events (the caller commits).

    Both are multi-row inserts, so a batch of events costs two statements, not two per event.
    """
    if not handled:
        return
    await session.execute(
        insert(InboxEntry),
        [
            {
                "consumer": consumer,
                "event_id": h.event_id,
                "result_event_ids": [str(row.event_id) for row in h.emitted],
            }
            for h in handled
        ],
    )
    rows = [row.as_values() for h in handled for row in h.emitted]
    if rows:
        await session.execute(insert(OutboxMessage), rows)


async def recorded_results(
    session: AsyncSession, consumer: str, event_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """For each id the consumer already handled, the ids of what it emitted then."""
    rows = await session.execute(
        select(InboxEntry.event_id, InboxEntry.result_event_ids).where(
            InboxEntry.consumer == consumer, InboxEntry.event_id.in_(event_ids)
        )
    )
    return {row.event_id: [uuid.UUID(str(i)) for i in row.result_event_ids] for row in rows}


#: One step's records in one statement: its inbox row and the outbox rows of what it emitted
#: (none or several). `clock_timestamp()`, not `now()`: the relay's grace counts from the
#: commit, not from the start of a transaction that may have run a slow step.
_RECORD_STEP = """
WITH inbox_row AS (
    INSERT INTO inbox (consumer, event_id, result_event_ids, processed_at)
    VALUES (%(consumer)s, %(event_id)s, %(results)s, clock_timestamp())
)
INSERT INTO outbox (event_id, subject, payload, headers, created_at)
SELECT event_id, subject, payload, headers, clock_timestamp()
FROM unnest(%(ids)s::uuid[], %(subjects)s::text[], %(payloads)s::bytea[], %(headers)s::jsonb[])
    AS emitted(event_id, subject, payload, headers)
"""
#: The same for a step that emitted exactly one event (most do): plain parameters, which
#: psycopg adapts with a fraction of the Python that arrays take.
_RECORD_ONE = """
WITH inbox_row AS (
    INSERT INTO inbox (consumer, event_id, result_event_ids, processed_at)
    VALUES (%(consumer)s, %(event_id)s, %(results)s, clock_timestamp())
)
INSERT INTO outbox (event_id, subject, payload, headers, created_at)
VALUES (%(id)s, %(subject)s, %(payload)s, %(headers)s, clock_timestamp())
"""
_LOOKUP_STEP = "SELECT result_event_ids FROM inbox WHERE consumer = %s AND event_id = %s"


async def _driver(session: AsyncSession) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under the session's transaction (begun if it was not)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    return driver


@contextlib.asynccontextmanager
async def _autocommit(driver: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """One statement that commits by itself (no `BEGIN`, no `COMMIT`: one round trip).

    The connection is put back in transaction mode afterwards, or the handler's statements
    of the next step would each commit alone. A connection that broke meanwhile is left as
    it is: it is discarded, never reused.
    """
    await driver.set_autocommit(True)
    try:
        yield
    finally:
        if not (driver.closed or driver.broken):
            await driver.set_autocommit(False)


async def begin_step(
    driver: psycopg.AsyncConnection[Any], consumer: str, event_id: uuid.UUID
) -> list[uuid.UUID] | None:
    """Look a step's event up in the inbox, in one round trip and before its transaction.

    None if the consumer has not handled the event yet; else the ids of what it emitted then.
    The lookup runs outside a transaction: under read committed a statement sees what was
    committed when it started, which is what it would see as the transaction's first
    statement, so no `BEGIN` round trip is spent on it. The transaction begins with the
    handler's first statement (psycopg sends `BEGIN` then) or not at all (`commit_step`).
    """
    async with _autocommit(driver):
        cursor = await driver.execute(_LOOKUP_STEP, (consumer, event_id))
        row = await cursor.fetchone()
    return None if row is None else [uuid.UUID(str(i)) for i in row[0]]


async def commit_step(
    session: AsyncSession | None,
    driver: psycopg.AsyncConnection[Any],
    consumer: str,
    handled: HandledEvent,
) -> None:
    """Record one handled event and commit: one round trip after the handler's own writes.

    `session` is the handler's (None if it used none), bound to `driver`'s connection. Its
    pending ORM changes are flushed first. If the handler's statements opened a transaction,
    the inbox and outbox rows go in one statement pipelined with `COMMIT`, so all of it
    commits atomically or not at all; if the handler touched no table, that one statement
    commits by itself. A concurrent replica that committed the same event first makes the
    inbox insert fail: the step is retried and then found a duplicate.
    """
    if session is not None and session.in_transaction():
        await session.flush()
    emitted = handled.emitted
    results = Jsonb([str(row.event_id) for row in emitted])
    params: dict[str, object]
    if len(emitted) == 1:
        [row] = emitted
        statement = _RECORD_ONE
        params = {
            "consumer": consumer,
            "event_id": handled.event_id,
            "results": results,
            "id": row.event_id,
            "subject": row.subject,
            "payload": row.payload,
            "headers": Jsonb(row.headers),
        }
    else:
        statement = _RECORD_STEP
        params = {
            "consumer": consumer,
            "event_id": handled.event_id,
            "results": results,
            "ids": [row.event_id for row in emitted],
            "subjects": [row.subject for row in emitted],
            "payloads": [row.payload for row in emitted],
            "headers": [Jsonb(row.headers) for row in emitted],
        }
    if driver.info.transaction_status == TransactionStatus.IDLE:
        async with _autocommit(driver):
            await driver.execute(statement, params)
    else:
        async with driver.pipeline():
            await driver.execute(statement, params)
            await driver.commit()
    if session is not None and session.in_transaction():
        # The driver has committed; this ends the session's transaction without a round trip.
        await session.commit()


async def stored_rows(
    sessionmaker: async_sessionmaker[AsyncSession],
    event_ids: Sequence[uuid.UUID],
    *,
    unpublished_only: bool = False,
) -> list[OutboxRow]:
    """Outbox rows by event id (to re-publish what a first run emitted).

    `unpublished_only` skips rows already marked published: a duplicate then finishes what its
    first run left undone without sending anything down the chain twice.
    """
    if not event_ids:
        return []
    async with sessionmaker() as session:
        query = select(
            OutboxMessage.event_id,
            OutboxMessage.subject,
            OutboxMessage.payload,
            OutboxMessage.headers,
        ).where(OutboxMessage.event_id.in_(event_ids))
        if unpublished_only:
            query = query.where(OutboxMessage.published_at.is_(None))
        rows = await session.execute(query)
        return [OutboxRow(r.event_id, r.subject, r.payload, dict(r.headers)) for r in rows]


async def publish_rows(publisher: RawPublisher, rows: Sequence[OutboxRow]) -> None:
    """Publish committed outbox rows, concurrently (each waits for the stream's ack)."""
    if len(rows) == 1:
        # Most steps emit one event: awaited here, it costs no task of its own.
        [row] = rows
        await publisher.publish_raw(row.subject, row.payload, row.headers)
        return
    await asyncio.gather(
        *(publisher.publish_raw(row.subject, row.payload, row.headers) for row in rows)
    )


_MARK_PUBLISHED = (
    "UPDATE outbox SET published_at = clock_timestamp()"
    " WHERE event_id = ANY(%s) AND published_at IS NULL"
)


async def mark_published(
    sessionmaker: async_sessionmaker[AsyncSession], rows: Sequence[OutboxRow]
) -> None:
    """Mark published rows in one round trip, without waiting for the WAL flush.

    A lost mark (a crash, a failed write) only makes the relay publish the rows again, and the
    stream's duplicate window drops them.
    """
    if not rows:
        return
    async with sessionmaker() as session:
        driver = await _driver(session)
        async with driver.pipeline():
            await driver.execute("SET LOCAL synchronous_commit TO OFF")
            await driver.execute(_MARK_PUBLISHED, ([row.event_id for row in rows],))
            await driver.commit()
        await session.commit()


class PublishedMarks:
    """Marks published outbox rows in batches, off every message's path.

    A step publishes its rows right after its commit; marking them published is only what
    keeps the relay from publishing them again. One `UPDATE` per message cost a transaction
    (four round trips) for each message, so rows are gathered and marked together every
    `interval` by one task per process. A mark that fails or is lost (a crash, a database
    blip) is harmless: the relay publishes the rows again after its grace and the stream's
    duplicate window drops them.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval: float = 1.0,
        batch: int = 1000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._interval = interval
        self._batch = batch
        self._pending: list[OutboxRow] = []
        self._arrived = asyncio.Event()
        # One flush at a time: a flush called at shutdown waits for the background one in
        # flight (whose rows are already out of `_pending`) instead of returning early.
        self._flushing = asyncio.Lock()

    def add(self, rows: Sequence[OutboxRow]) -> None:
        """Mark `rows` published at the next flush."""
        if rows:
            self._pending.extend(rows)
            self._arrived.set()

    async def flush(self) -> None:
        """Mark what is pending now, after any flush in flight; a failed mark is left to the
        relay."""
        async with self._flushing:
            while self._pending:
                rows, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                try:
                    await mark_published(self._sessionmaker, rows)
                except Exception as exc:
                    log.info("outbox.mark_deferred", count=len(rows), error=str(exc))
            self._arrived.clear()

    async def run(self) -> None:
        """Flush every `interval` while rows arrive, until cancelled."""
        while True:
            await self._arrived.wait()
            await asyncio.sleep(self._interval)
            await self.flush()


#: Errors that say NATS is away, not that the row is bad: they are not counted against a row.
_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    nats_errors.TimeoutError,
    nats_errors.NoRespondersError,
    nats_errors.ConnectionClosedError,
    nats_errors.StaleConnectionError,
    nats_errors.NoServersError,
    nats_errors.OutboundBufferLimitError,
    nats_errors.FlushTimeoutError,
    ConnectionError,
    TimeoutError,
)
#: Lets one process at a time (across replicas) run the relay's retention and pruning.
_HOUSEKEEPING_LOCK = 0x6F7574626F78  # "outbox"
#: Inbox rows are kept longer than any stream keeps a message (the DLQ's 30 days), so a
#: redelivery or a replay from the DLQ still finds the row and is dropped as a duplicate.
INBOX_RETENTION = timedelta(seconds=max(s.max_age_seconds for s in STREAMS)) + timedelta(days=1)


class OutboxRelay:
    """Publishes rows that were committed but not published (a crash after commit).

    Rows younger than `grace` are left to the step that wrote them, which publishes right
    after its commit; `FOR UPDATE SKIP LOCKED` lets every replica run a relay safely. Each row
    is published on its own: a row that fails is counted (`attempts`, `last_error`) and after
    `max_attempts` parked (`parked_at`), so one row that can never be published (over the
    server's `max_payload`) does not hold back the rows behind it, and the rows published in
    the same round are marked, never published again. A NATS outage is not counted.

    Retention (published rows older than `retention`, inbox rows older than `inbox_retention`)
    runs every `housekeeping_interval` in one process at a time (an advisory lock), on the
    `published_at` and `processed_at` indexes.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        publisher: RawPublisher,
        *,
        interval: float = 1.0,
        grace: timedelta = timedelta(seconds=2),
        retention: timedelta = timedelta(days=1),
        inbox_retention: timedelta = INBOX_RETENTION,
        housekeeping_interval: float = 60.0,
        max_attempts: int = 5,
        batch: int = 200,
        process: str = "orchestrator",
    ) -> None:
        self._sessionmaker = sessionmaker
        self._publisher = publisher
        self._interval = interval
        self._grace = grace
        self._retention = retention
        self._inbox_retention = inbox_retention
        self._housekeeping_interval = housekeeping_interval
        self._max_attempts = max_attempts
        self._batch = batch
        self._process = process
        self._last_housekeeping: float | None = None

    async def relay_once(self) -> int:
        """Publish what is due; the number of rows published in this round."""
        now = datetime.now(UTC)
        published = 0
        async with self._sessionmaker.begin() as session:
            rows = (
                (
                    await session.execute(
                        select(OutboxMessage)
                        .where(OutboxMessage.published_at.is_(None))
                        .where(OutboxMessage.parked_at.is_(None))
                        .where(OutboxMessage.created_at < now - self._grace)
                        .order_by(OutboxMessage.id)
                        .limit(self._batch)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            results = await asyncio.gather(
                *(
                    self._publisher.publish_raw(row.subject, row.payload, dict(row.headers))
                    for row in rows
                ),
                return_exceptions=True,
            )
            for row, result in zip(rows, results, strict=True):
                if not isinstance(result, BaseException):
                    row.published_at = now
                    published += 1
                elif not isinstance(result, _OUTAGE_ERRORS):
                    self._failed(row, result, now)
        if published:
            log.info("outbox.relayed", count=published)
        if self._housekeeping_due():
            await self.housekeeping()
        return published

    def _failed(self, row: OutboxMessage, error: BaseException, now: datetime) -> None:
        row.attempts = (row.attempts or 0) + 1
        row.last_error = f"{type(error).__name__}: {error}"[:2000]
        if row.attempts < self._max_attempts:
            log.warning("outbox.publish_failed", event_id=str(row.event_id), error=row.last_error)
            return
        row.parked_at = now
        log.error(
            "outbox.row_parked",
            event_id=str(row.event_id),
            subject=row.subject,
            attempts=row.attempts,
            error=row.last_error,
        )

    def _housekeeping_due(self) -> bool:
        clock = time.monotonic()
        if (
            self._last_housekeeping is not None
            and clock - self._last_housekeeping < self._housekeeping_interval
        ):
            return False
        self._last_housekeeping = clock
        return True

    async def housekeeping(self) -> bool:
        """Retention and the pending gauge; False if another process holds the lock."""
        now = datetime.now(UTC)
        async with self._sessionmaker.begin() as session:
            locked = await session.scalar(
                select(func.pg_try_advisory_xact_lock(_HOUSEKEEPING_LOCK))
            )
            if not locked:
                return False
            # Published rows are kept for a duplicate whose first run died unpublished, then purged.
            await session.execute(
                delete(OutboxMessage).where(OutboxMessage.published_at < now - self._retention)
            )
            await session.execute(
                delete(InboxEntry).where(InboxEntry.processed_at < now - self._inbox_retention)
            )
            pending = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))
                .where(OutboxMessage.parked_at.is_(None))
            )
        OUTBOX_PENDING.labels(self._process).set(pending or 0)
        return True

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until cancelled, or until `stop` is set (which a swallowed cancel cannot lose:
        Python 3.11's `asyncio.wait_for` drops a cancel that lands as its result arrives)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.relay_once()
            except Exception:
                log.exception("outbox.relay_failed")
            if stop.is_set():
                return
            await asyncio.sleep(self._interval)
