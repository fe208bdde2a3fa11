"""Three scheduler replicas, several periods: exactly one tick per period is processed."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import nats
from nats.aio.client import Client

from contracts import events as ev
from contracts.topology import OPS, ConsumerSpec, tick_subject
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import ConsumerApp, StepContext
from infra.bus.topology import apply_consumers
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.scheduler.service import Scheduler
from producers.scheduler.ticks import period_key, tick_for

PERIOD = 1.0


def test_replicas_agree_on_the_tick_id() -> None:
    now = datetime(2026, 11, 24, 22, 40, 30, 500_000, tzinfo=UTC)
    later_same_period = now + timedelta(milliseconds=300)
    assert (
        tick_for("timeouts", now, 60).event_id
        == tick_for("timeouts", later_same_period, 60).event_id
    )
    assert tick_for("timeouts", now, 60).event_id != tick_for("health", now, 60).event_id
    assert period_key(now, 60) == "2026-11-24T22:40:00"
    assert tick_for("timeouts", now, 60).subject_name() == "ops.tick.timeouts"


async def test_three_replicas_one_tick_per_period(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    spec = ConsumerSpec("test-ticks", "test-ticks", OPS, (tick_subject("testjob"),), "ticks")
    await apply_consumers(nc.jsm(), (spec,))
    seen: Counter[str] = Counter()
    app = ConsumerApp(
        "test-ticks",
        settings=Settings(nats={"url": fresh_nats.url}, database={"url": migrated_db}),
        specs=[spec],
    )

    @app.handles(ev.SchedulerTick)
    async def count(ctx: StepContext, tick: ev.SchedulerTick) -> None:
        seen[tick.period] += 1

    stop_consumer = asyncio.Event()
    consuming = asyncio.create_task(app.serve(stop_consumer))
    clients = [await nats.connect(fresh_nats.url) for _ in range(3)]
    stop = asyncio.Event()
    replicas = [
        asyncio.create_task(
            Scheduler(JetStreamPublisher.from_client(c), {"testjob": PERIOD}).run(stop)
        )
        for c in clients
    ]
    await asyncio.sleep(4.5)
    stop.set()
    await asyncio.gather(*replicas)
    await asyncio.sleep(1)
    stop_consumer.set()
    await consuming
    for c in clients:
        await c.close()
    assert len(seen) >= 4, seen
    assert set(seen.values()) == {1}, seen
    stored = (await nc.jsm().stream_info(OPS.name)).state.messages
    assert stored == len(seen)
