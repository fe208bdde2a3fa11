"""A pull loop's held database connection (issue 9), against a real nats-server and PostgreSQL.

The loop keeps one connection from one single-message step to the next instead of taking one
from the pool each time. What must not change: a connection that broke is replaced, not
reused, and the message in hand is still handled once, with nothing dead-lettered; and a slow
step still hands the connection back to the pool for its slow part.
"""

from __future__ import annotations

from typing import Any

import psycopg
from nats.aio.client import Client
from sqlalchemy import text
from sqlalchemy.event import listen as event_listen

from contracts import events as ev
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import StepContext
from infra.stack.nats_server import NatsServer

from .conftest import plain_url, sql, wait_for
from .test_runtime_faults import (
    acks_settled,
    dead_letters,
    effects,
    insert_effect,
    request,
    serving,
    worker_app,
)

_INSERT_EFFECT = insert_effect("held")


async def test_the_held_connection_is_kept_between_steps_and_replaced_once_it_breaks(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    app, spec = await worker_app(nc, fresh_nats.url, migrated_db)
    backends: list[int] = []

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        backend = await ctx.session.scalar(text("SELECT pg_backend_pid()"))
        assert isinstance(backend, int)
        backends.append(backend)
        await ctx.session.execute(_INSERT_EFFECT, {"e": event.event_id, "d": event.description})

    publisher = JetStreamPublisher.from_client(nc)
    stop, task = await serving(app)
    try:
        for count in (1, 2):
            await publisher.publish(request(f"on the held connection {count}"))
            await wait_for(lambda count=count: effects(migrated_db)[0] == count, 30)
        assert backends[0] == backends[1]

        # The server ends the held connection between two steps, as a database restart or
        # an idle timeout would: the next step meets it broken.
        with psycopg.connect(plain_url(migrated_db), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (backends[0],))
        await publisher.publish(request("after the break"))
        await wait_for(lambda: effects(migrated_db)[0] == 3, 30)
        assert backends[-1] != backends[0]
        assert effects(migrated_db) == (3, 3)
        assert sql(migrated_db, "SELECT count(*) FROM inbox") == [(3,)]
        assert await dead_letters(nc) == 0
        await acks_settled(nc, spec.durable, ack_pending=0)

        # The replacement is held in turn.
        await publisher.publish(request("on the new connection"))
        await wait_for(lambda: effects(migrated_db)[0] == 4, 30)
        assert backends[-1] == backends[-2]
    finally:
        stop.set()
        await task


async def test_a_slow_step_hands_the_held_connection_back_to_the_pool(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """The loop's connection is not kept idle through a slow part: the pool gets it back."""
    app, _spec = await worker_app(nc, fresh_nats.url, migrated_db)
    checked_in: list[int] = []
    seen: dict[str, bool] = {}

    def on_checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            checked_in.append(dbapi_connection.driver_connection.info.backend_pid)

    @app.handles(ev.ProjectRequested)
    async def handle(ctx: StepContext, event: ev.ProjectRequested) -> None:
        backend = await ctx.session.scalar(text("SELECT pg_backend_pid()"))
        # Whoever had this pooled connection before the loop took it checked it in then.
        checked_in.clear()
        async with ctx.without_transaction():
            seen["returned during"] = backend in checked_in
        await ctx.session.execute(_INSERT_EFFECT, {"e": event.event_id, "d": event.description})

    stop, task = await serving(app)
    assert app.engine is not None
    event_listen(app.engine.sync_engine, "checkin", on_checkin)
    try:
        await JetStreamPublisher.from_client(nc).publish(request("a slow build"))
        await wait_for(lambda: effects(migrated_db)[0] == 1, 30)
        assert seen == {"returned during": True}
        assert sql(migrated_db, "SELECT count(*) FROM inbox") == [(1,)]
    finally:
        stop.set()
        await task
