"""The outbox relay on its own, against a real PostgreSQL and nats-server.

Issue 9 found that the only relay test passed with the relay deleted (a redelivery re-published
first). These tests drive `OutboxRelay` directly, with no consumer around it: the grace, a row
that can never be published, two relays on one table, retention and inbox pruning, and that a
late duplicate does not send a consumer's published outputs down the chain again. The batched
marks (`PublishedMarks`) are driven directly too: rows get marked, and a failed mark is left to
the relay.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from nats.aio.client import Client
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import events as ev
from contracts.topology import INTENTS, NOTIFY
from infra.bus.codec import encode
from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_consumers
from infra.db import outbox as outbox_module
from infra.db.models import OutboxMessage
from infra.db.outbox import OutboxRelay, OutboxRow, PublishedMarks
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import project_request

from .conftest import plain_url, sql, wait_for
from .workload import build_workload, worker_spec


def request(description: str) -> ev.ProjectRequested:
    return project_request(description, user_id="cli:test", source="cli")


@dataclass
class CountingPublisher:
    """The real JetStream publisher, counting what it was asked to publish (by `Nats-Msg-Id`)."""

    inner: JetStreamPublisher
    delay: float = 0.0
    published: Counter[str] = field(default_factory=Counter)

    async def publish_raw(self, subject: str, body: bytes, headers: Mapping[str, str]) -> None:
        await asyncio.sleep(self.delay)
        await self.inner.publish_raw(subject, body, headers)
        self.published[headers["Nats-Msg-Id"]] += 1


@pytest.fixture
async def sessions(migrated_db: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_db, pool_size=4)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def store(
    sessions: async_sessionmaker[AsyncSession], rows: list[OutboxRow], *, age: float = 60.0
) -> None:
    """Commit rows to the outbox as a step would have, `age` seconds ago."""
    created = datetime.now(UTC) - timedelta(seconds=age)
    async with sessions.begin() as session:
        await session.execute(
            insert(OutboxMessage), [{**row.as_values(), "created_at": created} for row in rows]
        )


async def stream_count(nc: Client, stream: str) -> int:
    return (await nc.jsm().stream_info(stream)).state.messages


async def test_a_row_that_never_publishes_is_parked_and_the_rows_around_it_flow_once(
    nc: Client, sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    """A row over the server's max_payload fails every round; it must not hold the others."""
    before = OutboxRow.of(request("before the poison row"))
    poison = OutboxRow(
        uuid.uuid4(), before.subject, b"x" * (2 * 1024 * 1024), {"Nats-Msg-Id": "too big"}
    )
    after = OutboxRow.of(request("behind the poison row"))
    await store(sessions, [before, poison, after])
    publisher = CountingPublisher(JetStreamPublisher.from_client(nc))
    relay = OutboxRelay(sessions, publisher, grace=timedelta(0), max_attempts=3)

    assert await relay.relay_once() == 2
    for _ in range(3):
        assert await relay.relay_once() == 0

    assert publisher.published == {str(before.event_id): 1, str(after.event_id): 1}
    assert await stream_count(nc, INTENTS.name) == 2
    attempts, error, parked = sql(
        migrated_db,
        f"SELECT attempts, last_error, parked_at FROM outbox WHERE event_id = '{poison.event_id}'",
    )[0]
    assert attempts == 3 and parked is not None
    assert "MaxPayloadError" in str(error)
    # Parked: later rounds leave it alone, so the attempts stop growing.
    await relay.relay_once()
    assert sql(
        migrated_db, f"SELECT attempts FROM outbox WHERE event_id = '{poison.event_id}'"
    ) == [(3,)]


async def test_a_fresh_row_is_left_to_its_step_until_the_grace_passes(
    nc: Client, sessions: async_sessionmaker[AsyncSession]
) -> None:
    row = OutboxRow.of(request("just committed"))
    await store(sessions, [row], age=0.0)
    relay = OutboxRelay(sessions, JetStreamPublisher.from_client(nc), grace=timedelta(seconds=1))
    assert await relay.relay_once() == 0
    published: list[int] = []

    async def relayed() -> bool:
        published.append(await relay.relay_once())
        return published[-1] == 1

    for _ in range(50):
        if await relayed():
            break
        await asyncio.sleep(0.1)
    assert published[-1] == 1
    assert await stream_count(nc, INTENTS.name) == 1


async def test_two_relays_share_the_table_and_publish_each_row_once(
    fresh_nats: NatsServer, nc: Client, migrated_db: str
) -> None:
    """Two processes' relays (own engines) drain one backlog; SKIP LOCKED splits it."""
    rows = [OutboxRow.of(request(f"backlog {i}")) for i in range(300)]
    engines = [make_engine(migrated_db, pool_size=2) for _ in range(2)]
    try:
        makers = [make_sessionmaker(engine) for engine in engines]
        await store(makers[0], rows)
        publishers = [
            CountingPublisher(JetStreamPublisher.from_client(nc), delay=0.02) for _ in makers
        ]
        relays = [
            OutboxRelay(maker, pub, grace=timedelta(0), batch=40)
            for maker, pub in zip(makers, publishers, strict=True)
        ]

        async def drain(relay: OutboxRelay) -> None:
            while await relay.relay_once():
                pass

        await asyncio.gather(*(drain(relay) for relay in relays))
        await asyncio.gather(*(drain(relay) for relay in relays))
        counts = publishers[0].published + publishers[1].published
        assert len(counts) == 300 and set(counts.values()) == {1}
        assert all(sum(p.published.values()) > 0 for p in publishers)
        assert sql(migrated_db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == [(0,)]
        assert await stream_count(nc, INTENTS.name) == 300
    finally:
        for engine in engines:
            await engine.dispose()


async def test_retention_and_inbox_pruning_run_in_one_process_at_a_time(
    nc: Client, sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    old, recent, unpublished = (OutboxRow.of(request(f"row {i}")) for i in range(3))
    await store(sessions, [old, recent, unpublished])
    url = plain_url(migrated_db)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE outbox SET published_at = now() - interval '2 days' WHERE event_id = %s",
            (old.event_id,),
        )
        conn.execute(
            "UPDATE outbox SET published_at = now() WHERE event_id = %s", (recent.event_id,)
        )
        conn.execute(
            "INSERT INTO inbox (consumer, event_id, result_event_ids, processed_at) VALUES"
            " ('c', %s, '[]', now() - interval '40 days'), ('c', %s, '[]', now())",
            (uuid.uuid4(), uuid.uuid4()),
        )
    relay = OutboxRelay(sessions, JetStreamPublisher.from_client(nc), retention=timedelta(days=1))

    with psycopg.connect(url) as holder:
        # Another process is running the housekeeping: this one skips it.
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (0x6F7574626F78,))
        assert await relay.housekeeping() is False
        assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(3,)]
        holder.rollback()
    assert await relay.housekeeping() is True
    kept = {row[0] for row in sql(migrated_db, "SELECT event_id FROM outbox")}
    assert kept == {recent.event_id, unpublished.event_id}
    assert sql(migrated_db, "SELECT count(*) FROM inbox") == [(1,)]
    indexes = {row[0] for row in sql(migrated_db, "SELECT indexname FROM pg_indexes")}
    assert {"ix_outbox_published_at", "ix_inbox_processed_at"} <= indexes


def unpublished(migrated_db: str) -> int:
    return int(sql(migrated_db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0])


async def test_published_rows_are_marked_together_in_the_background(
    sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    rows = [OutboxRow.of(request(f"marked {i}")) for i in range(5)]
    await store(sessions, rows, age=0.0)
    marks = PublishedMarks(sessions, interval=0.01, batch=2)
    running = asyncio.create_task(marks.run())
    try:
        marks.add(rows[:3])
        marks.add(rows[3:])
        await wait_for(lambda: unpublished(migrated_db) == 0, 10)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_flush_at_shutdown_waits_for_the_flush_in_flight(
    sessions: async_sessionmaker[AsyncSession], migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background flush has taken the rows and is marking them when the process stops:
    the stop's flush waits for it, so the rows are marked before the runner is cancelled.
    (It used to see nothing pending and return, and the cancel then lost the marks.)"""
    rows = [OutboxRow.of(request(f"in flight {i}")) for i in range(3)]
    await store(sessions, rows, age=0.0)
    in_flight, release = asyncio.Event(), asyncio.Event()
    real_mark = outbox_module.mark_published

    async def slow_mark(
        sessionmaker: async_sessionmaker[AsyncSession], marked: list[OutboxRow]
    ) -> None:
        in_flight.set()
        await release.wait()
        await real_mark(sessionmaker, marked)

    monkeypatch.setattr(outbox_module, "mark_published", slow_mark)
    marks = PublishedMarks(sessions, interval=0.0)
    running = asyncio.create_task(marks.run())
    try:
        marks.add(rows)
        await asyncio.wait_for(in_flight.wait(), 10)
        stopping = asyncio.create_task(marks.flush())
        await asyncio.sleep(0)  # let it run up to where it waits
        assert not stopping.done(), "the stop's flush returned while rows were being marked"
        release.set()
        await asyncio.wait_for(stopping, 10)
        assert unpublished(migrated_db) == 0
    finally:
        release.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_failed_mark_is_left_to_the_relay(
    nc: Client, sessions: async_sessionmaker[AsyncSession], migrated_db: str
) -> None:
    row = OutboxRow.of(request("mark lost"))
    await store(sessions, [row])
    unreachable = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        marks = PublishedMarks(make_sessionmaker(unreachable))
        marks.add([row])
        await marks.flush()  # logs and returns: the row stays unmarked
    finally:
        await unreachable.dispose()
    assert unpublished(migrated_db) == 1
    relay = OutboxRelay(sessions, JetStreamPublisher.from_client(nc), grace=timedelta(0))
    assert await relay.relay_once() == 1
    assert unpublished(migrated_db) == 0


async def test_a_late_duplicate_does_not_publish_the_consumers_outputs_again(
    fresh_nats: NatsServer, nc: Client, migrated_db: str
) -> None:
    """The same event comes back after its outputs were published (a replay, a late redelivery).

    The inbox drops it, and its notification, already published and marked, is not published
    again: otherwise one late duplicate would travel down the whole chain.
    """
    await apply_consumers(nc.jsm(), (worker_spec(),))
    settings = Settings(
        nats={"url": fresh_nats.url},
        database={"url": migrated_db, "pool_size": 4},
        consumer={"backoff_seconds": [0.2]},
    )
    app = build_workload(settings, "dup")
    notified: list[str] = []

    async def count_notifications() -> None:
        assert app.publisher is not None
        real = app.publisher.publish_raw

        async def publish_raw(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
            if subject.startswith("notify."):
                notified.append(headers["Nats-Msg-Id"])
            await real(subject, body, headers)

        app.publisher.publish_raw = publish_raw  # type: ignore[method-assign]

    app.on_startup.append(count_notifications)
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    try:
        event = request("handled once")
        publisher = JetStreamPublisher.from_client(nc)
        await publisher.publish(event)
        await wait_for(
            lambda: (
                sql(migrated_db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
                == [(1,)]
            ),
            30,
        )
        # The same event again under another message id, as a DLQ replay publishes it.
        subject, body, headers = encode(event)
        await publisher.publish_raw(subject, body, {**headers, "Nats-Msg-Id": "late-copy"})

        async def settled() -> bool:
            info = await nc.jsm().consumer_info(INTENTS.name, "test-worker")
            return bool(info.delivered.stream_seq == 2 and info.num_ack_pending == 0)

        for _ in range(200):
            if await settled():
                break
            await asyncio.sleep(0.1)
        assert await settled()
        assert sql(migrated_db, "SELECT count(*) FROM effects") == [(1,)]
        assert len(notified) == 1
        assert await stream_count(nc, NOTIFY.name) == 1
    finally:
        stop.set()
        await task
