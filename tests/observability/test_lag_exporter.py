"""Lag stays visible while a consumer is down: the lag exporter, a real Prometheus, the real rules.

No engineer process runs in this test. Events for it pile up on its durable, the exporter (its
own process, with its own read-only NATS user on a server that requires authentication) reports
them, and the shipped `OrchestratorConsumerLagHigh` expression returns the durable in a real
Prometheus scraping the exporter, with the alert itself pending on its `for:` clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.topology import ENGINEER, NOTIFIER, PROJECT
from infra.bus.permissions import LAG_EXPORTER, all_permissions, new_passwords
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao

from .conftest import RULES, Prometheus
from .lag_exporter_process import authenticated_nats, lag_exporter, publish_backlog

PASSWORDS = new_passwords(all_permissions())
BACKLOG = 120


def lag_rule() -> dict[str, Any]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (rule,) = [
        r for g in groups for r in g["rules"] if r.get("alert") == "OrchestratorConsumerLagHigh"
    ]
    return dict(rule)


@pytest.fixture
def auth_nats(tmp_path: Path) -> Iterator[NatsServer]:
    with authenticated_nats(tmp_path / "nats", PASSWORDS) as server:
        yield server


def wait_for(prometheus: Prometheus, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prometheus.query(expr)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"no data for {expr} within {timeout}s")


def test_lag_of_a_stopped_consumer_fires_the_lag_alert_expression(
    auth_nats: NatsServer,
    openbao: BootstrappedOpenBao,
    start_prometheus: Any,
    tmp_path: Path,
) -> None:
    with lag_exporter(auth_nats, openbao, PASSWORDS[LAG_EXPORTER], tmp_path) as target:
        prometheus: Prometheus = start_prometheus({target: LAG_EXPORTER})
        rule = lag_rule()
        # Nothing is behind yet: the expression is empty and the alert is not even pending.
        wait_for(prometheus, 'orchestrator_jetstream_consumer_pending{consumer="engineer"} == 0')
        assert prometheus.query(rule["expr"]) == []

        asyncio.run(publish_backlog(auth_nats, PASSWORDS, BACKLOG))

        firing = wait_for(prometheus, rule["expr"])
        assert [(s["metric"]["consumer"], s["metric"]["stream"]) for s in firing] == [
            (ENGINEER.durable, PROJECT.name)
        ]
        assert float(firing[0]["value"][1]) == BACKLOG
        # The rule is evaluated on the exporter's series: pending until its `for:` has passed.
        pending = wait_for(
            prometheus,
            'ALERTS{alertname="OrchestratorConsumerLagHigh", alertstate="pending"}',
        )
        assert pending[0]["metric"]["consumer"] == ENGINEER.durable
        # Every durable is exported, including those of processes that never ran here.
        notifier = prometheus.query(
            f'orchestrator_jetstream_consumer_present{{consumer="{NOTIFIER.durable}"}}'
        )
        assert float(notifier[0]["value"][1]) == 1
        # The broker's own state, from its monitoring port.
        assert float(wait_for(prometheus, "orchestrator_jetstream_up")[0]["value"][1]) == 1
        server = wait_for(prometheus, "orchestrator_nats_up == 1")[0]["metric"]["server"]
        assert server == auth_nats.monitor_url.split("//", 1)[1]
        connections = wait_for(prometheus, "orchestrator_nats_connections >= 1")
        assert connections[0]["metric"]["server"] == server
        stored = wait_for(prometheus, 'orchestrator_jetstream_stream_messages{stream="PROJECT"}')
        assert float(stored[0]["value"][1]) == BACKLOG
        wait_for(prometheus, "orchestrator_nats_jetstream_storage_bytes > 0")
