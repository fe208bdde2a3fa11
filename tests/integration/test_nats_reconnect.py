"""What a process's requests become when nats-server restarts under them (issue 9).

A server that restarts forgets the requests it held: the pull request a loop keeps outstanding,
and the publish whose acknowledgement a step or a producer is waiting for. Neither gets an
answer on the new connection, so without help a loop waits out its request's expiry and a
publish its timeout before anything moves again. The client tells both when it reconnects
(the runtime's `_reconnected`, `infra.bus.connection.on_reconnect`). Each test gives the
forgotten request an hour to expire: the work gets through within the test's wait only because
the request was sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid

import nats
from nats.aio.client import Client

from contracts.topology import INTENTS
from infra.bus.codec import encode
from infra.bus.connection import connect
from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_consumers, apply_topology
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import project_request

from .conftest import sql, wait_for
from .workload import build_workload, worker_spec

AN_HOUR = 3600.0


async def restart(server: NatsServer) -> None:
    """SIGKILL the server (file storage, nothing flushed) and start it again on its port."""
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)


async def test_a_consumer_asks_again_at_once_when_the_server_forgot_its_pull_request(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    await apply_consumers(nc.jsm(), (worker_spec(),))
    settings = Settings(
        nats={"url": fresh_nats.url},
        database={"url": migrated_db, "pool_size": 5},
        consumer={"fetch_wait_seconds": AN_HOUR},
    )
    app = build_workload(settings, "patient")
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    publisher = JetStreamPublisher.from_client(nc)
    try:
        await publisher.publish(project_request("before", user_id="cli:test", source="cli"))
        await wait_for(lambda: sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 1, 60)
        # The loop's next request is outstanding now, and the server is about to forget it.
        await restart(fresh_nats)
        await publisher.publish(project_request("after", user_id="cli:test", source="cli"))
        await wait_for(lambda: sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 2, 60)
    finally:
        stop.set()
        await serving
    assert sorted(row[0] for row in sql(migrated_db, "SELECT description FROM effects")) == [
        "after",
        "before",
    ]


async def test_a_publish_sends_again_when_the_connection_comes_back_without_its_ack(
    fresh_nats: NatsServer,
) -> None:
    """A producer's publisher (API, bot, scheduler, CLI), made with `from_client` on a
    connection from `infra.bus.connection.connect`: nothing wired by hand."""
    await apply_topology(fresh_nats.url)
    restored = asyncio.Event()

    async def reconnected() -> None:
        restored.set()

    client = await connect(
        fresh_nats.url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        reconnected_cb=reconnected,
    )
    publisher = JetStreamPublisher.from_client(client, timeout=AN_HOUR)
    event = project_request(f"sent once {uuid.uuid4()}", user_id="cli:test", source="cli")
    subject, body, headers = encode(event)
    try:
        # The server is frozen, so the publish goes out and no acknowledgement can come back;
        # then it dies with the request unread, and comes back empty-handed.
        assert fresh_nats.pid is not None
        os.kill(fresh_nats.pid, signal.SIGSTOP)
        publishing = asyncio.create_task(publisher.publish_raw(subject, body, headers))
        # A PING queued behind the publish writes both to the socket; its PONG cannot come.
        with contextlib.suppress(nats.errors.TimeoutError):
            await client.flush(timeout=0.2)
        assert not publishing.done()
        await restart(fresh_nats)
        await asyncio.wait_for(restored.wait(), 60)
        await asyncio.wait_for(publishing, 60)
        stored = await client.jsm().stream_info(INTENTS.name)
        assert stored.state.messages == 1
    finally:
        await client.close()
