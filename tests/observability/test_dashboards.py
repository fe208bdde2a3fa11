"""Every query of every Grafana panel returns data from a real Prometheus scraping a live run.

The live run is the real coordinator process (its own composition root on the bus runtime) and
the lag exporter process against a real nats-server, PostgreSQL and OpenBao, fed real events
from the test: new projects, a malformed message (dead-lettered) and a deploy outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest

from contracts import events as ev
from infra.bus.publisher import JetStreamPublisher
from infra.db.migrate import upgrade
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.vault import VaultClient

from .conftest import Prometheus
from .lag_exporter_process import lag_exporter

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "infra" / "grafana" / "dashboards").glob("*.json"))
# Grafana's own variables, as Grafana would expand them for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
SECRET = f"live-secret-{uuid.uuid4().hex}"


def dashboard_queries() -> list[tuple[str, str]]:
    queries = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                queries.append((f"{path.stem}: {panel['title']} [{target['refId']}]", expr))
    return queries


@pytest.fixture
def live_coordinator(
    nats_server: NatsServer, database_url: str, openbao: BootstrappedOpenBao, tmp_path: Path
) -> Iterator[tuple[int, Path]]:
    upgrade(database_url)
    # The coordinator refuses requests of people it does not know: register the feed's user.
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, display_name, role, status, created_at)"
            " VALUES ('cli:live', '', 'admin', 'active', now()) ON CONFLICT (id) DO NOTHING"
        )
    asyncio.run(
        VaultClient(openbao.addr, token=openbao.root_token).write_secret(
            "platform/live-test", {"value": SECRET}
        )
    )
    port = free_port()
    stderr_path = tmp_path / "coordinator.log"
    env = {
        **os.environ,
        "ORCH_NATS__URL": nats_server.url,
        "ORCH_DATABASE__URL": database_url,
        "ORCH_DATABASE__POOL_SIZE": "4",
        "ORCH_METRICS__HOST": "127.0.0.1",
        "ORCH_METRICS__PORT": str(port),
        "ORCH_LLM__PROVIDER": "offline",
        "LIVE_VAULT_ADDR": openbao.addr,
        "LIVE_VAULT_TOKEN": openbao.root_token,
        "LIVE_VAULT_PATH": "platform/live-test",
    }
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "live_coordinator.py")],
            env=env,
            cwd=REPO,
            stdout=stderr,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for_metric(proc, port, "orchestrator_consumer_pending{", stderr_path)
            yield port, stderr_path
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_metric(proc: subprocess.Popen[bytes], port: int, needle: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"coordinator exited:\n{log.read_text()}"
        try:
            if needle in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"coordinator never exported {needle}:\n{log.read_text()}")


async def _feed(nats_url: str) -> None:
    """Real traffic: projects requested, one poison message, one deploy outcome."""
    nc = await nats.connect(nats_url)
    try:
        publisher = JetStreamPublisher(nc.jetstream())
        for i in range(5):
            project_id = uuid.uuid4()
            await publisher.publish(
                ev.ProjectRequested(
                    correlation_id=uuid.uuid4(),
                    actor="user:live",
                    project_id=project_id,
                    description=f"A todo list HTTP API number {i} with users and tags",
                    user_id="cli:live",
                    source="cli",
                )
            )
        await publisher.publish_raw(
            ev.ProjectRequested.TYPE,
            b'{"not": "an event"}',
            {"Nats-Msg-Id": str(uuid.uuid4()), "Orch-Event-Type": ev.ProjectRequested.TYPE},
        )
        await publisher.publish(
            ev.DeployFailed(
                correlation_id=uuid.uuid4(),
                actor="deployer",
                project_id=uuid.uuid4(),
                commit="0" * 40,
                reason="health check timed out",
                rolled_back=True,
            )
        )
    finally:
        await nc.drain()


def _wait_for_data(prometheus: Prometheus, queries: list[tuple[str, str]]) -> dict[str, Any]:
    missing = dict(queries)
    deadline = time.monotonic() + 60
    while missing and time.monotonic() < deadline:
        for title, expr in list(missing.items()):
            if prometheus.query(expr):
                del missing[title]
        time.sleep(1)
    return missing


@pytest.fixture
def exporter(
    nats_server: NatsServer, openbao: BootstrappedOpenBao, tmp_path: Path
) -> Iterator[str]:
    """The lag exporter beside the coordinator, as every deployment runs it."""
    password = "unused-on-a-server-without-users"
    with lag_exporter(nats_server, openbao, password, tmp_path) as target:
        yield target


async def test_every_dashboard_query_returns_data(
    live_coordinator: tuple[int, Path],
    exporter: str,
    nats_server: NatsServer,
    start_prometheus: Any,
) -> None:
    port, _ = live_coordinator
    prometheus: Prometheus = start_prometheus(
        {f"127.0.0.1:{port}": "coordinator", exporter: "lag_exporter"}
    )
    await _feed(nats_server.url)

    queries = dashboard_queries()
    assert len(queries) >= 15
    missing = await asyncio.to_thread(_wait_for_data, prometheus, queries)
    assert not missing, "panels without data:\n" + "\n".join(
        f"  {title}: {expr}" for title, expr in missing.items()
    )

    dead = prometheus.query('sum(orchestrator_dead_letters_total{consumer="coordinator-intents"})')
    assert float(dead[0]["value"][1]) >= 1, "the poison message was not dead-lettered"
    handled = prometheus.query(
        'sum(orchestrator_step_outcomes_total{consumer="coordinator-intents",outcome="ok"})'
    )
    assert float(handled[0]["value"][1]) >= 5


async def test_secrets_never_reach_a_live_process_log(
    live_coordinator: tuple[int, Path],
) -> None:
    _, log_path = live_coordinator
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    leaks = [r for r in records if r.get("logger") in ("live.leaks", "some.library")]
    assert len(leaks) == 3, lines
    assert all("***" in json.dumps(r) for r in leaks)
    assert SECRET not in log_path.read_text()
    assert all(r["process"] == "coordinator" for r in records)
