"""The runtime under infrastructure faults, against a real nats-server and a real PostgreSQL.

Each test injects one fault the review of the runtime found dangerous (issue 9): the database
going away mid-stream, the dead-letter publish failing on a message's last delivery, a handler
that hangs, a heartbeat that would cancel a nak's delay. What is asserted is what an operator
cares about: nothing dead-lettered that was healthy, nothing lost, nothing done twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping

import psycopg
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from sqlalchemy import TextClause, text

from contracts import events as ev
from contracts.topology import DLQ, INTENTS, ConsumerSpec, dlq_subject
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import ConsumerApp, StepContext, TransientError
from infra.bus.topology import apply_consumers, server_max_deliver
from infra.db.migrate import upgrade
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from infra.stack.postgres_server import PostgresServer
from producers.intents import project_request

from .conftest import plain_url, sql, wait_for
from .workload import EFFECTS_DDL, build_workload, worker_spec


def request(description: str) -> ev.ProjectRequested:
    return project_request(description, user_id="cli:test", source="cli")


def fault_settings(nats_url: str, db_url: str, **consumer: object) -> Settings:
    return Settings(
        nats={"url": nats_url},
        database={"url": db_url, "pool_size": 5},
        consumer={
            "backoff_seconds": [0.2],
            "heartbeat_seconds": 0.5,
            "database_probe_seconds": 0.2,
            **consumer,
        },
    )


async def worker_app(
    nc: Client, nats_url: str, db_url: str, **spec_options: object
) -> tuple[ConsumerApp, ConsumerSpec]:
    """A `test-worker` app on the worker durable (applied to the server), with fault settings."""
    spec = worker_spec(**spec_options)  # type: ignore[arg-type]
    await apply_consumers(nc.jsm(), (spec,))
    return ConsumerApp("test-worker", settings=fault_settings(nats_url, db_url), specs=[spec]), spec


def insert_effect(replica: str) -> TextClause:
    """The effect a test handler writes: one `effects` row per event, labelled `replica`."""
    return text(
        f"INSERT INTO effects (event_id, replica, description) VALUES (:e, '{replica}', :d)"
    )


async def serving(app: ConsumerApp) -> tuple[asyncio.Event, asyncio.Task[int]]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    await wait_for(lambda: app.publisher is not None and bool(app._pullers), 30)
    return stop, task


async def acks_settled(nc: Client, durable: str, *, ack_pending: int) -> None:
    """Wait until the server counts `ack_pending` unacknowledged messages and none waiting.

    The runtime acks on its own connection, so the server may take a moment to count them."""
    async with asyncio.timeout(30):
        while True:
            info = await nc.jsm().consumer_info(INTENTS.name, durable)
            if info.num_ack_pending == ack_pending and info.num_pending == 0:
                return
            await asyncio.sleep(0.05)


async def dead_letters(nc: Client) -> int:
    return (await nc.jsm().stream_info(DLQ.name)).state.messages


def effects(db_url: str) -> tuple[int, int]:
    total, distinct = sql(db_url, "SELECT count(*), count(DISTINCT event_id) FROM effects")[0]
    return int(total), int(distinct)  # type: ignore[call-overload]


@pytest.fixture
def outage_db(own_postgres: PostgresServer) -> str:
    url = own_postgres.create_database(f"outage_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    with psycopg.connect(plain_url(url), autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)
    return url


async def test_postgres_outage_longer_than_the_retry_budget_dead_letters_nothing(
    fresh_nats: NatsServer,
    nc: Client,
    own_postgres: PostgresServer,
    outage_db: str,
) -> None:
    """Postgres stops mid-stream for longer than every delivery of a message could last.

    With the test's settings a failing step spends its whole budget (3 deliveries, 0.2 s apart)
    in well under a second; the database stays down several times that long. Before the fix
    every message in hand was dead-lettered; now the runtime pauses and waits on the same
    delivery, and the backlog drains once the database is back.
    """
    max_deliver, backoff = 3, 0.2
    budget = max_deliver * backoff
    await apply_consumers(nc.jsm(), (worker_spec(max_deliver=max_deliver),))
    app = build_workload(
        fault_settings(fresh_nats.url, outage_db), "steady", max_deliver=max_deliver
    )
    stop, task = await serving(app)
    publisher = JetStreamPublisher.from_client(nc)
    events = [request(f"through outage {i}") for i in range(200)]

    async def publish_all() -> None:
        for event in events:
            await publisher.publish(event)
            await asyncio.sleep(0.01)

    producing = asyncio.create_task(publish_all())
    try:
        await wait_for(lambda: effects(outage_db)[0] >= 20, 30)
        await asyncio.to_thread(own_postgres.stop)
        stopped_at = time.monotonic()
        assert app.database is not None
        # The runtime met the outage (a step failed on it) and paused.
        await wait_for(lambda: app.database is not None and not app.database.is_open, 30)
        await wait_for(lambda: time.monotonic() - stopped_at > max(10 * budget, 5.0), 30)
        down_for = time.monotonic() - stopped_at
        await asyncio.to_thread(own_postgres.start)
        await producing
        await wait_for(lambda: effects(outage_db)[1] == 200, 90)
        assert down_for > budget
        assert app.database.outages >= 1
        assert effects(outage_db) == (200, 200)
        assert await dead_letters(nc) == 0
        info = await nc.jsm().consumer_info(INTENTS.name, "test-worker")
        assert info.num_pending == 0
        assert sql(outage_db, "SELECT count(*) FROM inbox")[0][0] == 200
    finally:
        producing.cancel()
        stop.set()
        await task


async def test_a_failed_dead_letter_publish_leaves_the_message_redeliverable(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """The last delivery's dead-letter publish fails: the message comes back and is parked then.

    The poison message shares a batch with twenty healthy ones; the failed publish must not
    abort the batch, so the healthy ones are handled before the poison's next delivery.
    """
    spec = worker_spec(max_deliver=1)
    await apply_consumers(nc.jsm(), (spec,))
    info = await nc.jsm().consumer_info(INTENTS.name, spec.durable)
    assert info.config.max_deliver == server_max_deliver(spec) > spec.max_deliver

    publisher = JetStreamPublisher.from_client(nc)
    poison = request("poison pill")
    behind = [request(f"behind {i}") for i in range(20)]
    await publisher.publish(poison)
    await publisher.publish_many(behind)

    app = build_workload(
        fault_settings(fresh_nats.url, migrated_db, batch_size=50, backoff_seconds=[2.0]),
        "x",
        max_deliver=1,
        fail_poison=True,
    )
    attempts: list[tuple[float, bool]] = []

    async def failing_dead_letter_once() -> None:
        assert app.publisher is not None
        real = app.publisher.publish_raw

        async def publish_raw(subject: str, body: bytes, headers: Mapping[str, str]) -> None:
            if subject == dlq_subject(spec.durable):
                failing = not attempts
                attempts.append((time.time(), failing))
                if failing:
                    raise ConnectionError("injected: the dead-letter stream is unreachable")
            await real(subject, body, headers)

        app.publisher.publish_raw = publish_raw  # type: ignore[method-assign]

    app.on_startup.append(failing_dead_letter_once)
    stop, task = await serving(app)
    try:
        dlq = DeadLetterQueue(nc.jsm(), publisher)
        await wait_for(lambda: len(attempts) >= 2, 30)
        await wait_for(lambda: effects(migrated_db)[0] == 20, 30)
        letters = await dlq.list()
        assert len(letters) == 1
        assert "poison" in letters[0].error and letters[0].deliveries == 2
        assert [failing for _, failing in attempts] == [True, False]
        # The healthy twenty were handled in the first pass, before the poison came back.
        last_effect = sql(migrated_db, "SELECT extract(epoch FROM max(at)) FROM effects")[0][0]
        assert float(last_effect) < attempts[1][0]  # type: ignore[arg-type]
        await acks_settled(nc, spec.durable, ack_pending=0)
    finally:
        stop.set()
        await task


async def test_a_hanging_step_is_cancelled_at_its_deadline_and_retried(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """A handler that hangs on its first delivery is cancelled at the deadline and retried.

    The ack wait is long (60 s): the retry must come from the runtime's nak, not from the
    server giving up on a silent consumer, and the heartbeat must not keep the hung step alive.
    """
    spec = worker_spec(ack_wait=60.0, max_deliver=3)
    await apply_consumers(nc.jsm(), (spec,))
    settings = fault_settings(
        fresh_nats.url,
        migrated_db,
        heartbeat_seconds=0.2,
        step_timeouts={spec.durable: 1.0},
    )
    app = ConsumerApp("test-worker", settings=settings, specs=[spec])
    deliveries: list[int] = []

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        deliveries.append(ctx.delivery)
        if ctx.delivery == 1:
            await asyncio.Event().wait()  # hangs for ever
        await ctx.session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', :d)"),
            {"e": event.event_id, "d": event.description},
        )

    stop, task = await serving(app)
    try:
        started = time.monotonic()
        await JetStreamPublisher.from_client(nc).publish(request("hangs once"))
        await wait_for(lambda: effects(migrated_db)[0] == 1, 30)
        assert time.monotonic() - started < spec.ack_wait_seconds / 2
        assert deliveries == [1, 2]
        assert await dead_letters(nc) == 0
    finally:
        stop.set()
        await task


async def test_a_heartbeat_does_not_cancel_the_delay_of_a_nak(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """A failed message's retry is due after its nak delay, even while its batch runs on.

    The batch holds a failing message and a slow one (heartbeaten every 0.2 s for 4 s). A
    heartbeat sent for the nacked message would reset its pending timer to the full 60 s ack
    wait; it must come back as soon as the slow step frees the loop.
    """
    spec = worker_spec(ack_wait=60.0, max_deliver=5)
    await apply_consumers(nc.jsm(), (spec,))
    settings = fault_settings(
        fresh_nats.url, migrated_db, batch_size=10, heartbeat_seconds=0.2, backoff_seconds=[0.5]
    )
    app = ConsumerApp("test-worker", settings=settings, specs=[spec])
    seen: list[tuple[str, int]] = []

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        seen.append((event.description, ctx.delivery))
        if event.description == "fails once" and ctx.delivery == 1:
            raise RuntimeError("first attempt fails")
        if event.description == "slow":
            await asyncio.sleep(4)
        await ctx.session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', :d)"),
            {"e": event.event_id, "d": event.description},
        )

    publisher = JetStreamPublisher.from_client(nc)
    await publisher.publish(request("fails once"))
    await publisher.publish(request("slow"))
    started = time.monotonic()
    stop, task = await serving(app)
    try:
        await wait_for(lambda: effects(migrated_db)[0] == 2, 45)
        assert time.monotonic() - started < spec.ack_wait_seconds / 2
        assert ("fails once", 2) in seen
    finally:
        stop.set()
        await task


async def fetched(nc: Client, durable: str, count: int) -> list[Msg]:
    """Pull `count` messages of `durable` by hand, so a test decides what one batch holds."""
    subscription = await nc.jetstream().pull_subscribe_bind(durable=durable, stream=INTENTS.name)
    msgs: list[Msg] = []
    while len(msgs) < count:
        msgs += await subscription.fetch(count - len(msgs), timeout=10)
    await subscription.unsubscribe()
    return msgs


async def test_a_redelivered_poison_message_does_not_split_the_fresh_batch_it_lands_in(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """A message that failed before is handled alone; the fresh ones keep their one transaction.

    Before, the poison (redeliveries come first) failed the batch's transaction and the twenty
    healthy messages were re-run one by one, twenty transactions instead of one.
    """
    spec = worker_spec(max_deliver=5)
    await apply_consumers(nc.jsm(), (spec,))
    app = build_workload(
        fault_settings(fresh_nats.url, migrated_db), "batch", max_deliver=5, fail_poison=True
    )
    publisher = JetStreamPublisher.from_client(nc)
    await publisher.publish(request("poison pill"))
    app.specs = ()  # no pull loops: the test hands the runtime its batches
    stop, task = await serving_without_pullers(app)
    try:
        [first] = await fetched(nc, spec.durable, 1)
        await first.nak()
        await publisher.publish_many([request(f"healthy {i}") for i in range(20)])
        batch = await fetched(nc, spec.durable, 21)
        assert batch[0].metadata.num_delivered == 2
        await app.process_batch(spec, batch)
        assert effects(migrated_db) == (20, 20)
        # One transaction wrote all twenty effects.
        assert sql(migrated_db, "SELECT count(DISTINCT xmin::text) FROM effects") == [(1,)]
        await acks_settled(nc, spec.durable, ack_pending=1)  # the poison, nacked for a retry
    finally:
        stop.set()
        await task


async def test_an_unknown_event_type_is_handed_back_not_dead_lettered(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """An old replica in a rolling upgrade fetches a type only the new version handles.

    It must not dead-letter it: it naks it with a delay so a new replica takes it.
    """
    spec = worker_spec()
    await apply_consumers(nc.jsm(), (spec,))
    app = ConsumerApp(
        "test-worker",
        settings=fault_settings(fresh_nats.url, migrated_db, transient_backoff_seconds=[0.5]),
        specs=(),
    )
    stop, task = await serving_without_pullers(app)
    try:
        await JetStreamPublisher.from_client(nc).publish(request("only the new version knows"))
        batch = await fetched(nc, spec.durable, 1)
        await app.process_batch(spec, batch)
        assert await dead_letters(nc) == 0
        [again] = await fetched(nc, spec.durable, 1)
        assert again.metadata.num_delivered == 2
    finally:
        stop.set()
        await task


async def serving_without_pullers(app: ConsumerApp) -> tuple[asyncio.Event, asyncio.Task[int]]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    await wait_for(lambda: app.publisher is not None, 30)
    return stop, task


async def test_a_transient_error_outlives_the_durables_own_retry_budget(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """A dependency that is down (TransientError) gets the long transient budget, not max_deliver.

    The durable allows one delivery for ordinary failures; the step fails transiently four
    times, then its dependency is back: it completes instead of being dead-lettered.
    """
    spec = worker_spec(max_deliver=1)
    await apply_consumers(nc.jsm(), (spec,))
    app = ConsumerApp(
        "test-worker",
        settings=fault_settings(fresh_nats.url, migrated_db, transient_backoff_seconds=[0.2]),
        specs=[spec],
    )
    deliveries: list[int] = []

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        deliveries.append(ctx.delivery)
        if ctx.delivery <= 4:
            raise TransientError("the LLM provider answers 503")
        await ctx.session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', :d)"),
            {"e": event.event_id, "d": event.description},
        )

    stop, task = await serving(app)
    try:
        await JetStreamPublisher.from_client(nc).publish(request("needs the LLM"))
        await wait_for(lambda: effects(migrated_db)[0] == 1, 30)
        assert deliveries == [1, 2, 3, 4, 5]
        assert await dead_letters(nc) == 0
        assert Settings().consumer.transient_backoff_seconds[-1] == 300.0
    finally:
        stop.set()
        await task


async def test_a_step_that_waits_too_long_for_a_lock_is_retried_not_dead_lettered(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """Contention is not the step's fault: a lock held past `lock_timeout` fails the statement
    (instead of the step waiting unseen for ever), and the step is retried on the long transient
    schedule even though its durable allows a single delivery for its own failures."""
    spec = worker_spec(max_deliver=1)
    await apply_consumers(nc.jsm(), (spec,))
    settings = fault_settings(fresh_nats.url, migrated_db, transient_backoff_seconds=[0.2])
    settings.database.lock_timeout_seconds = 0.3
    app = ConsumerApp("test-worker", settings=settings, specs=[spec])
    deliveries: list[int] = []

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        deliveries.append(ctx.delivery)
        await ctx.session.execute(text("SELECT id FROM effects WHERE id = -1 FOR UPDATE"))
        await ctx.session.execute(
            text("INSERT INTO effects (event_id, replica, description) VALUES (:e, 'r', :d)"),
            {"e": event.event_id, "d": event.description},
        )

    sql(
        migrated_db,
        "INSERT INTO effects (id, event_id, replica, description) VALUES "
        f"(-1, '{uuid.uuid4()}', 'holder', 'locked row') RETURNING id",
    )
    stop, task = await serving(app)
    try:
        with psycopg.connect(plain_url(migrated_db)) as holder:
            holder.execute("SELECT id FROM effects WHERE id = -1 FOR UPDATE")
            await JetStreamPublisher.from_client(nc).publish(request("waits for a lock"))
            await wait_for(lambda: len(deliveries) >= 3, 30)
            holder.rollback()
        await wait_for(lambda: effects(migrated_db)[0] == 2, 30)
        assert await dead_letters(nc) == 0
    finally:
        stop.set()
        await task
