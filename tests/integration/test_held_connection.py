"""A pull loop's held database connection (issue 9), against a real nats-server and PostgreSQL.

The loop keeps one connection from one single-message step to the next instead of taking one
from the pool each time. What must not change: a connection that broke is replaced, not
reused, and the message in hand is still handled once, with nothing dead-lettered.
"""

from __future__ import annotations

import psycopg
from nats.aio.client import Client
from sqlalchemy import text

from contracts import events as ev
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
    request,
    serving,
)
from .workload import worker_spec

_INSERT_EFFECT = text(
    "INSERT INTO effects (event_id, replica, description) VALUES (:e, 'held', :d)"
)


async def test_the_held_connection_is_kept_between_steps_and_replaced_once_it_breaks(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    spec = worker_spec()
    await apply_consumers(nc.jsm(), (spec,))
    app = ConsumerApp(
        "test-worker", settings=fault_settings(fresh_nats.url, migrated_db), specs=[spec]
    )
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
