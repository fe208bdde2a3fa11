"""Metric helpers and the JetStream lag collector, against a real nats-server."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import nats
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import REGISTRY

from contracts.topology import ConsumerSpec, StreamSpec
from infra.health import HealthChecks
from infra.metrics import (
    ConsumerLagCollector,
    PeriodicCollector,
    record_llm_usage,
    record_step,
)
from infra.process_endpoints import ProcessEndpoints
from infra.stack.nats_server import NatsServer
from infra.stack.ports import free_port


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_record_step_counts_dead_letters_too() -> None:
    consumer = f"c-{uuid.uuid4().hex[:8]}"
    record_step(process="p", consumer=consumer, event_type="t", outcome="ok", seconds=0.02)
    record_step(process="p", consumer=consumer, event_type="t", outcome="dead_letter", seconds=1)
    labels = {"process": "p", "consumer": consumer, "event_type": "t"}
    assert sample("orchestrator_step_outcomes_total", **labels, outcome="ok") == 1
    assert sample("orchestrator_step_duration_seconds_count", **labels, outcome="ok") == 1
    assert sample("orchestrator_dead_letters_total", process="p", consumer=consumer) == 1


def test_record_llm_usage_splits_prompt_and_completion() -> None:
    project = uuid.uuid4().hex
    record_llm_usage(
        project=project, stage="analyst", prompt_tokens=100, completion_tokens=20, cost_usd=0.5
    )
    assert (
        sample("orchestrator_llm_tokens_total", project=project, stage="analyst", kind="prompt")
        == 100
    )
    assert (
        sample("orchestrator_llm_tokens_total", project=project, stage="analyst", kind="completion")
        == 20
    )
    assert sample("orchestrator_llm_cost_usd_total", project=project, stage="analyst") == 0.5


async def test_the_process_endpoints_serve_the_default_registry_and_port_zero_is_off() -> None:
    async with ProcessEndpoints("127.0.0.1", 0, HealthChecks()):
        pass  # binds nothing, but still beats for a process that serves the routes itself
    port = free_port()
    async with (
        ProcessEndpoints("127.0.0.1", port, HealthChecks()),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        body = (await http.get("/metrics")).text
        live = await http.get("/livez")
    assert "orchestrator_step_duration_seconds" in body
    assert live.status_code == 200
    assert live.json()["checks"]["event_loop"]["ok"]


async def test_lag_collector_reads_durables_and_streams(nats_server: NatsServer) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = StreamSpec(f"OBS_{tag}", (f"obs{tag}.>",), "lag collector test")
    durable = ConsumerSpec(f"obs-{tag}", "obs", stream, (f"obs{tag}.work",), "test durable")
    missing = ConsumerSpec(f"obs-missing-{tag}", "obs", stream, (f"obs{tag}.x",), "never created")
    nc = await nats.connect(nats_server.url)
    try:
        jsm = nc.jsm()
        js = nc.jetstream()
        await jsm.add_stream(name=stream.name, subjects=list(stream.subjects))
        await jsm.add_consumer(
            stream.name,
            ConsumerConfig(
                durable_name=durable.durable,
                filter_subject=durable.subjects[0],
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        for i in range(5):
            await js.publish(durable.subjects[0], str(i).encode())
        sub = await js.pull_subscribe_bind(durable.durable, stream=stream.name)
        await sub.fetch(2, timeout=5)  # delivered, deliberately not acknowledged

        collector = ConsumerLagCollector(jsm, [durable, missing], interval=0.1)
        await collector.collect_once()
        labels = {"consumer": durable.durable, "stream": stream.name}
        assert sample("orchestrator_consumer_pending", **labels) == 3
        assert sample("orchestrator_consumer_ack_pending", **labels) == 2
        assert sample("orchestrator_consumer_redelivered", **labels) == 0
        assert sample("orchestrator_consumer_delivered_stream_seq", **labels) == 2
        assert sample("orchestrator_stream_messages", stream=stream.name) == 5
        assert (
            sample("orchestrator_consumer_pending", consumer=missing.durable, stream=stream.name)
            is None
        )
        await jsm.delete_stream(stream.name)
    finally:
        await nc.drain()


async def test_a_failing_collection_does_not_stop_the_collector() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("broker away")

    collector = PeriodicCollector("flaky", flaky, interval=0.01)
    collector.start()
    for _ in range(100):
        if calls >= 3:
            break
        await asyncio.sleep(0.01)
    await collector.stop()
    assert calls >= 3
