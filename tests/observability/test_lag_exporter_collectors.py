"""The lag exporter's collectors never leave a reassuring stale value behind.

Against a real nats-server: a durable that does not exist reads `present 0` (not a missing
series), a JetStream that cannot be read turns `orchestrator_jetstream_up` to 0, and a NATS
monitoring port that does not answer turns `orchestrator_nats_up` for that server to 0 while
the ones that answer keep reporting. The local stack starts the exporter whatever consumers it
is asked to run, because that is when lag must stay visible.
"""

from __future__ import annotations

from typing import Any

import nats
import pytest
from prometheus_client import CollectorRegistry

from contracts.topology import NOTIFIER, PROJECT, ConsumerSpec
from infra.bus.topology import apply_topology
from infra.lag_exporter.collectors import (
    ExporterMetrics,
    JetStreamLagCollector,
    NatsServerCollector,
)
from infra.stack.launcher import LAG_EXPORTER, _select_processes
from infra.stack.nats_server import NatsServer
from infra.stack.ports import free_port

GHOST = ConsumerSpec("ghost", "nobody", PROJECT, ("project.ghost",), "never created")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_every_durable_is_read_and_a_missing_one_reads_absent(
    nats_server: NatsServer,
) -> None:
    await apply_topology(nats_server.url)
    registry = CollectorRegistry()
    nc = await nats.connect(nats_server.url)
    try:
        collector = JetStreamLagCollector(
            nc.jsm(), ExporterMetrics(registry), consumers=[NOTIFIER, GHOST]
        )
        await collector.collect_once()
    finally:
        await nc.close()
    durable = {"stream": "NOTIFY", "consumer": "notifier"}
    assert sample(registry, "orchestrator_jetstream_consumer_present", **durable) == 1
    assert sample(registry, "orchestrator_jetstream_consumer_pending", **durable) is not None
    ghost = {"stream": "PROJECT", "consumer": "ghost"}
    assert sample(registry, "orchestrator_jetstream_consumer_present", **ghost) == 0
    assert sample(registry, "orchestrator_jetstream_consumer_pending", **ghost) is None
    assert sample(registry, "orchestrator_jetstream_up") == 1
    assert sample(registry, "orchestrator_jetstream_stream_messages", stream="PROJECT") is not None


class _Unreachable:
    """A JetStream manager whose connection is gone."""

    async def consumer_info(self, stream: str, consumer: str) -> Any:
        raise nats.errors.ConnectionClosedError

    async def stream_info(self, name: str) -> Any:
        raise nats.errors.ConnectionClosedError


async def test_a_jetstream_that_cannot_be_read_reads_down() -> None:
    registry = CollectorRegistry()
    collector = JetStreamLagCollector(_Unreachable(), ExporterMetrics(registry))
    with pytest.raises(nats.errors.ConnectionClosedError):
        await collector.collect_once()
    assert sample(registry, "orchestrator_jetstream_up") == 0


async def test_each_monitoring_port_is_reported_apart(nats_server: NatsServer) -> None:
    registry = CollectorRegistry()
    dead = f"http://127.0.0.1:{free_port()}"
    collector = NatsServerCollector([nats_server.monitor_url, dead], ExporterMetrics(registry))
    await collector.collect_once()
    live = nats_server.monitor_url.split("//", 1)[1]
    assert sample(registry, "orchestrator_nats_up", server=live) == 1
    connections = sample(registry, "orchestrator_nats_connections", server=live)
    assert connections is not None and connections >= 0
    max_storage = sample(registry, "orchestrator_nats_jetstream_storage_max_bytes", server=live)
    assert max_storage is not None and max_storage > 0
    assert sample(registry, "orchestrator_nats_up", server=dead.split("//", 1)[1]) == 0


def test_the_local_stack_runs_the_exporter_whichever_consumers_it_runs() -> None:
    selected = _select_processes(["notifier"])
    assert selected[LAG_EXPORTER] == "infra.lag_exporter"
    assert "engineer" not in selected
