"""Ops health sweeps on the bus: an unhealthy service opens one incident; recovery resolves it."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nats.aio.client import Client

from consumers.ops.app import build_app
from contracts.topology import NOTIFY, OPS
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from producers.scheduler.ticks import tick_for

from .conftest import sql, wait_for
from .test_coordinator import sql_exec, stored


class Service:
    healthy = True


@pytest.fixture
def service() -> Iterator[tuple[Service, int]]:
    state = Service()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if state.healthy else 503)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, server.server_address[1]
    server.shutdown()


async def test_incident_opens_once_and_resolves(
    fresh_nats: NatsServer,
    migrated_db: str,
    nc: Client,
    service: tuple[Service, int],
    openbao: BootstrappedOpenBao,
) -> None:
    state, port = service
    project = uuid.uuid4()
    sql_exec(
        migrated_db,
        "INSERT INTO users (id, display_name, created_at) VALUES ('cli:ops', '', now())",
    )
    sql_exec(
        migrated_db,
        "INSERT INTO projects (id, flow_id, user_id, description, name, slug, state, version,"
        " answers, offline, attempts, url, created_at, updated_at) VALUES "
        f"('{project}', '{uuid.uuid4()}', 'cli:ops', 'x', 'Notes', 'notes', 'active', 1,"
        f" '[]', true, '{{}}', 'http://127.0.0.1:{port}', now(), now())",
    )
    app = build_app(
        Settings(
            nats={"url": fresh_nats.url},
            database={"url": migrated_db},
            vault={"addr": openbao.addr, "token": openbao.root_token},
        )
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    publisher = JetStreamPublisher.from_client(nc)
    now = datetime.now(UTC)
    try:
        await publisher.publish(tick_for("health", now, 60))
        await asyncio.sleep(1)
        assert sql(migrated_db, "SELECT count(*) FROM incidents")[0][0] == 0

        state.healthy = False
        for minute in (1, 2):  # two sweeps while it is down: still one incident
            await publisher.publish(tick_for("health", now + timedelta(minutes=minute), 60))
            await wait_for(
                lambda: sql(migrated_db, "SELECT count(*) FROM incidents")[0][0] == 1, 20
            )
        await asyncio.sleep(1)
        assert sql(migrated_db, "SELECT status, kind FROM incidents") == [
            ("open", "health_check_failed")
        ]
        opened = await stored(nc, OPS.name, "ops.incident.opened")
        assert len(opened) == 1 and "HTTP 503" in str(opened[0]["summary"])
        notes = await stored(nc, NOTIFY.name, "notify.requested")
        assert len(notes) == 1 and notes[0]["kind"] == "failure"

        state.healthy = True
        await publisher.publish(tick_for("health", now + timedelta(minutes=3), 60))
        await wait_for(
            lambda: sql(migrated_db, "SELECT status FROM incidents")[0][0] == "resolved", 20
        )
        assert len(await stored(nc, OPS.name, "ops.incident.resolved")) == 1
    finally:
        stop.set()
        await serving
