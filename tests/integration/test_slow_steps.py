"""A slow step (a container run, an Ansible run) holds no database transaction while it works.

Against a real nats-server and a real PostgreSQL (issue 9): the step's transaction is seen
from PostgreSQL's side (`pg_stat_activity`), so what is asserted is what a DBA would see, not
what the session object believes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import psycopg
from nats.aio.client import Client
from sqlalchemy import text

from contracts import events as ev
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import ConsumerApp, StepContext
from infra.bus.topology import apply_consumers
from infra.stack.nats_server import NatsServer

from .conftest import plain_url, sql, wait_for
from .test_runtime_faults import (
    acks_settled,
    dead_letters,
    effects,
    fault_settings,
    fetched,
    insert_effect,
    request,
    serving,
    serving_without_pullers,
    worker_app,
)
from .workload import worker_spec

_INSERT_EFFECT = insert_effect("slow")


async def transaction_still_open(db_url: str, backend: int, since: datetime) -> bool:
    """Whether `backend` is in a transaction that began at or before `since` (ours, not a
    later one of whoever took the pooled connection next)."""
    async with await psycopg.AsyncConnection.connect(plain_url(db_url)) as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND xact_start <= %s",
                (backend, since),
            )
        ).fetchone()
    assert row is not None
    return bool(row[0])


async def test_a_slow_step_commits_its_reads_works_with_no_transaction_then_records_once(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    app, _spec = await worker_app(nc, fresh_nats.url, migrated_db)
    seen: dict[str, object] = {}

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> ev.Event:
        backend, read_at = (
            await ctx.session.execute(text("SELECT pg_backend_pid(), statement_timestamp()"))
        ).one()
        seen["open before"] = await transaction_still_open(migrated_db, backend, read_at)
        async with ctx.without_transaction():
            seen["open during"] = await transaction_still_open(migrated_db, backend, read_at)
        await ctx.session.execute(_INSERT_EFFECT, {"e": event.event_id, "d": event.description})
        return event.derive(
            ev.NotificationRequested,
            actor="test-worker",
            user_id=event.user_id,
            kind=ev.NotificationKind.INFO,
            text="built",
        )

    stop, task = await serving(app)
    try:
        event = request("a slow build")
        await JetStreamPublisher.from_client(nc).publish(event)
        await wait_for(lambda: effects(migrated_db)[0] == 1, 30)
        # The probe itself is the method's control: it saw the step's transaction before.
        assert seen == {"open before": True, "open during": False}
        # The effect, the inbox record and the outbox row were committed together, once.
        [(inbox_xmin,)] = sql(
            migrated_db, f"SELECT xmin::text FROM inbox WHERE event_id = '{event.event_id}'"
        )
        [(effect_xmin,)] = sql(migrated_db, "SELECT xmin::text FROM effects")
        assert inbox_xmin == effect_xmin
        assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(1,)]
        assert await dead_letters(nc) == 0
    finally:
        stop.set()
        await task


async def test_a_step_that_writes_before_its_slow_part_is_refused_and_its_write_undone(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """Its write would otherwise commit apart from the inbox record (done twice on a retry)."""
    app, _spec = await worker_app(nc, fresh_nats.url, migrated_db, max_deliver=1)

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        await ctx.session.execute(_INSERT_EFFECT, {"e": event.event_id, "d": "too early"})
        async with ctx.without_transaction():
            pass

    stop, task = await serving(app)
    try:
        await JetStreamPublisher.from_client(nc).publish(request("writes first"))
        async with asyncio.timeout(30):
            while await dead_letters(nc) == 0:
                await asyncio.sleep(0.1)
        [letter] = await DeadLetterQueue(nc.jsm(), JetStreamPublisher.from_client(nc)).list()
        assert "wrote or locked before `without_transaction`" in letter.error
        assert effects(migrated_db) == (0, 0)
    finally:
        stop.set()
        await task


async def test_a_batch_with_a_slow_step_is_split_and_each_step_commits_on_its_own(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """A batch shares one transaction, which a step cannot close for the others: the batch is
    split and each message runs alone, its slow part outside any transaction."""
    spec = worker_spec()
    await apply_consumers(nc.jsm(), (spec,))
    app = ConsumerApp("test-worker", settings=fault_settings(fresh_nats.url, migrated_db), specs=())
    runs: list[uuid.UUID] = []

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        runs.append(event.event_id)
        async with ctx.without_transaction():
            pass
        await ctx.session.execute(_INSERT_EFFECT, {"e": event.event_id, "d": event.description})

    stop, task = await serving_without_pullers(app)
    try:
        await JetStreamPublisher.from_client(nc).publish_many(
            [request(f"slow {i}") for i in range(3)]
        )
        batch = await fetched(nc, spec.durable, 3)
        await app.process_batch(spec, batch)
        assert effects(migrated_db) == (3, 3)
        assert sql(migrated_db, "SELECT count(DISTINCT xmin::text) FROM effects") == [(3,)]
        assert sql(migrated_db, "SELECT count(*) FROM inbox") == [(3,)]
        # The first handler stopped at the block in the batch; then each ran once alone.
        assert len(runs) == 4 and len(set(runs)) == 3
        await acks_settled(nc, spec.durable, ack_pending=0)
    finally:
        stop.set()
        await task
