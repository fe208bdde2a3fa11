"""`/livez` and `/readyz` of a consumer process, asked over HTTP as a probe asks them.

A real runtime (`ConsumerApp`) against a real nats-server and PostgreSQL, serving its endpoints
on a random port. Each test takes one dependency away and checks what an orchestrator would
see: not ready, naming the dependency, but still live (a restart would not help); and a blocked
event loop, which is the one thing liveness is for.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from pydantic import ValidationError

from contracts import events as ev
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import ConsumerApp, StepContext
from infra.bus.topology import apply_consumers
from infra.db.migrate import upgrade
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.stack.postgres_server import PostgresServer
from infra.vault import VaultClient, VaultError
from producers.intents import project_request

from .workload import worker_spec


@dataclass
class Probe:
    """HTTP GETs against one process's endpoints."""

    base_url: str

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            response = await http.get(path)
        return response.status_code, response.json()

    def get_blocking(self, path: str) -> tuple[int, dict[str, Any]]:
        """For a thread: the test's own loop is blocked along with the process's."""
        response = httpx.get(self.base_url + path, timeout=5)
        return response.status_code, response.json()

    async def until(self, path: str, status: int, timeout: float = 60.0) -> dict[str, Any]:
        """Poll `path` until it answers `status`; its body then."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                code, body = await self.get(path)
            except httpx.TransportError as exc:
                last = exc
            else:
                if code == status:
                    return body
                last = (code, body)
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} did not answer {status} within {timeout}s; last: {last}")


def failing(body: dict[str, Any]) -> set[str]:
    return {name for name, check in body["checks"].items() if not check["ok"]}


class Wedge:
    """A handler that blocks the event loop, as a synchronous call inside a step would."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    async def __call__(self, ctx: StepContext, event: ev.ProjectRequested) -> None:
        if event.description == "wedge the loop":
            self.entered.set()
            self.release.wait(60)  # deliberately synchronous: nothing else on the loop runs


@pytest.fixture
async def consumer(
    request: pytest.FixtureRequest, fresh_nats: NatsServer, nc: Client
) -> AsyncIterator[tuple[ConsumerApp, Probe, Wedge]]:
    """A consumer process on its own NATS, on the database the test names (`db_url`)."""
    db_url: str = request.getfixturevalue(request.param)
    port = free_port()
    settings = Settings(
        nats={"url": fresh_nats.url},
        database={"url": db_url, "pool_size": 5},
        metrics={"port": port},
        health={"loop_stale_seconds": 2.0, "check_timeout_seconds": 2.0},
        consumer={"database_probe_seconds": 0.2},
    )
    spec = worker_spec()
    await apply_consumers(nc.jsm(), (spec,))
    app = ConsumerApp("test-worker", settings=settings, specs=[spec])
    wedge = Wedge()
    app.handles(ev.ProjectRequested)(wedge)
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    try:
        yield app, Probe(f"http://127.0.0.1:{port}"), wedge
    finally:
        wedge.release.set()
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.fixture
def own_db(own_postgres: PostgresServer) -> str:
    url = own_postgres.create_database(f"health_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    return url


@pytest.mark.parametrize("consumer", ["migrated_db"], indirect=True)
async def test_ready_once_connected_and_not_ready_while_nats_is_down_yet_live(
    consumer: tuple[ConsumerApp, Probe, Wedge], fresh_nats: NatsServer
) -> None:
    _, probe, _ = consumer
    ready = await probe.until("/readyz", 200)
    assert ready["status"] == "ok"
    assert set(ready["checks"]) == {"event_loop", "nats", "postgres"}
    assert not failing(ready)

    await asyncio.to_thread(fresh_nats.stop)
    try:
        down = await probe.until("/readyz", 503)
        assert failing(down) == {"nats"}
        assert "reconnecting" in down["checks"]["nats"]["detail"]
        code, live = await probe.get("/livez")
        assert code == 200, live
        assert live["checks"]["event_loop"]["ok"]
    finally:
        await asyncio.to_thread(fresh_nats.start)
    await probe.until("/readyz", 200)


@pytest.mark.parametrize("consumer", ["own_db"], indirect=True)
async def test_not_ready_while_postgres_is_down_yet_live(
    consumer: tuple[ConsumerApp, Probe, Wedge], own_postgres: PostgresServer
) -> None:
    _, probe, _ = consumer
    await probe.until("/readyz", 200)

    await asyncio.to_thread(own_postgres.stop)
    try:
        down = await probe.until("/readyz", 503)
        assert failing(down) == {"postgres"}
        code, live = await probe.get("/livez")
        assert code == 200, live
        # Metrics stay available for the dashboards meanwhile.
        async with httpx.AsyncClient(base_url=probe.base_url, timeout=5) as http:
            metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert "orchestrator_step_outcomes" in metrics.text
    finally:
        await asyncio.to_thread(own_postgres.start)
    await probe.until("/readyz", 200)


@pytest.mark.parametrize("consumer", ["migrated_db"], indirect=True)
async def test_a_blocked_event_loop_fails_liveness_until_it_runs_again(
    consumer: tuple[ConsumerApp, Probe, Wedge], nc: Client
) -> None:
    _, probe, wedge = consumer
    await probe.until("/readyz", 200)

    def observe_the_wedge() -> tuple[dict[str, Any], tuple[int, dict[str, Any]]]:
        """Runs in a thread: the loop (the process's and this test's) is blocked meanwhile."""
        try:
            # Only a 503 seen once the handler blocks counts: a loaded machine can delay a
            # beat on its own, and the loop runs again right after such a stall.
            if not wedge.entered.wait(60):
                raise AssertionError("the handler never got its message")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                code, live = probe.get_blocking("/livez")
                if code == 503:
                    return live, probe.get_blocking("/readyz")
                time.sleep(0.1)
            raise AssertionError("/livez never failed while the loop was blocked")
        finally:
            wedge.release.set()

    # The observer's thread starts before the message goes out: the handler can block the loop
    # (this test's too) before the publish returns, and a thread started after it would only
    # run once the wedge gave up (it did, under load).
    observer = asyncio.get_running_loop().run_in_executor(None, observe_the_wedge)
    await JetStreamPublisher.from_client(nc).publish(
        project_request("wedge the loop", user_id="cli:test", source="cli")
    )
    try:
        live, (ready_code, ready) = await observer
    except AssertionError as exc:
        # Where the message stood, for a run where the handler never got it.
        info = await nc.jsm().consumer_info(worker_spec().stream.name, worker_spec().durable)
        raise AssertionError(
            f"{exc}; durable: {info.num_pending} pending, {info.num_ack_pending} unacknowledged, "
            f"{info.num_redelivered} redelivered, {info.num_waiting} pull requests waiting"
        ) from None
    assert live["status"] == "failing"
    assert "the event loop is blocked" in live["checks"]["event_loop"]["detail"]
    assert ready_code == 503
    assert failing(ready) == {"event_loop", "nats", "postgres"}
    assert "not checked" in ready["checks"]["nats"]["detail"]

    await probe.until("/livez", 200)
    await probe.until("/readyz", 200)


async def test_the_vault_check_fails_for_a_refused_token_and_for_a_vault_that_is_away(
    openbao: BootstrappedOpenBao,
) -> None:
    await VaultClient(openbao.addr, token=openbao.root_token).check_token()
    with pytest.raises(VaultError, match="refused this process's token"):
        await VaultClient(openbao.addr, token="not-a-token").check_token()
    with pytest.raises(VaultError, match="does not answer"):
        await VaultClient(f"http://127.0.0.1:{free_port()}", token="any").check_token()


def test_a_stale_limit_the_heartbeat_itself_would_cross_is_refused() -> None:
    """The loop beats once a second: a 1 s limit would fail a loop that is merely busy."""
    with pytest.raises(ValidationError, match="loop_stale_seconds"):
        Settings(health={"loop_stale_seconds": 1.0})
    assert Settings(health={"loop_stale_seconds": 2.0}).health.loop_stale_seconds == 2.0
