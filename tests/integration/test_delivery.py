"""Delivery semantics of the consumer runtime against a real nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from contracts.events import ProjectRequested
from contracts.topology import DLQ, INTENTS, NOTIFY, ConsumerSpec
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.bus.runtime import ConsumerApp
from infra.bus.topology import apply_consumers, apply_streams, server_max_deliver
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from producers.intents import project_request

from .conftest import sql, start_replica, stop_replica, wait_for
from .workload import build_workload, worker_spec


def request(description: str) -> ProjectRequested:
    return project_request(description, user_id="cli:test", source="cli")


def settings_for(nats_url: str, db_url: str) -> Settings:
    return Settings(
        nats={"url": nats_url},
        database={"url": db_url, "pool_size": 10},
        consumer={"backoff_seconds": [0.2]},
    )


async def stream_count(nc: Client, stream: str) -> int:
    return (await nc.jsm().stream_info(stream)).state.messages


async def settled(nc: Client, durable: str = "test-worker", timeout: float = 60.0) -> None:
    """Until the durable holds nothing pending and nothing unacknowledged.

    A duplicate can only come from a message still pending or unacknowledged (a redelivery), so
    once both are zero the effects counted afterwards are final: no sleep "for a late one"."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await nc.jsm().consumer_info(INTENTS.name, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{durable}: {info.num_pending} pending, {info.num_ack_pending} unacknowledged "
                f"after {timeout}s"
            )
        await asyncio.sleep(0.1)


async def test_two_replicas_share_a_durable_and_each_event_has_one_effect(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    await apply_consumers(nc.jsm(), (worker_spec(),))
    replicas = [start_replica(fresh_nats.url, migrated_db, name) for name in ("a", "b")]
    try:
        publisher = JetStreamPublisher.from_client(nc)
        events = [request(f"event {i}") for i in range(1000)]
        for chunk in range(0, 1000, 100):
            await publisher.publish_many(events[chunk : chunk + 100])
        await wait_for(lambda: sql(migrated_db, "SELECT count(*) FROM effects")[0][0] >= 1000, 90)
        await settled(nc)
        total, distinct = sql(
            migrated_db, "SELECT count(*), count(DISTINCT event_id) FROM effects"
        )[0]
        assert (total, distinct) == (1000, 1000)
        per_replica = dict(sql(migrated_db, "SELECT replica, count(*) FROM effects GROUP BY 1"))
        assert set(per_replica) == {"a", "b"}, per_replica
        # Every handled event emitted exactly one notification, de-duplicated by the stream.
        assert await stream_count(nc, NOTIFY.name) == 1000
    finally:
        for proc in replicas:
            stop_replica(proc)


async def test_replica_killed_mid_handler_redelivers_and_effect_happens_once(
    fresh_nats: NatsServer, migrated_db: str, nc: Client, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    args = ("--ack-wait", "2", "--started-marker", str(marker))
    first = start_replica(fresh_nats.url, migrated_db, "doomed", *args)
    await JetStreamPublisher.from_client(nc).publish(request("slow 5"))
    await wait_for(marker.exists, 30)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 0
    second = start_replica(fresh_nats.url, migrated_db, "survivor", *args)
    try:
        await wait_for(lambda: sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 1, 40)
        await settled(nc)
        assert sql(migrated_db, "SELECT replica, count(*) FROM effects GROUP BY 1") == [
            ("survivor", 1)
        ]
    finally:
        stop_replica(second)


async def test_same_event_twice_inside_and_outside_the_duplicate_window(
    tmp_path: Path, migrated_db: str
) -> None:
    import nats

    with NatsServer(tmp_path / "short-window") as server:
        client = await nats.connect(server.url)
        try:
            await apply_streams(client.jsm(), duplicate_window=1.0)
            await apply_consumers(client.jsm(), (worker_spec(),))
            publisher = JetStreamPublisher.from_client(client)
            event = request("published twice")
            await publisher.publish(event)
            await publisher.publish(event)  # inside the window: the stream drops it
            assert await stream_count(client, INTENTS.name) == 1
            await asyncio.sleep(1.5)
            await publisher.publish(event)  # outside the window: stored, the inbox drops it
            assert await stream_count(client, INTENTS.name) == 2

            app = build_workload(settings_for(server.url, migrated_db), "only")
            stop = asyncio.Event()
            serving = asyncio.create_task(app.serve(stop))
            await settled(client)  # both copies delivered and acknowledged
            stop.set()
            await serving
            assert sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 1
        finally:
            await client.close()


async def test_poison_and_malformed_events_are_dead_lettered_and_replayable(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    publisher = JetStreamPublisher.from_client(nc)
    await apply_consumers(nc.jsm(), (worker_spec(max_deliver=3),))
    poison = request("poison pill")
    refused = request("poison permanent")
    await nc.jetstream().publish(ProjectRequested.TYPE, b'{"not": "an event"}', stream=INTENTS.name)
    await publisher.publish(poison)
    await publisher.publish(refused)
    behind = [request(f"behind {i}") for i in range(20)]
    await publisher.publish_many(behind)

    app = build_workload(
        settings_for(fresh_nats.url, migrated_db), "x", max_deliver=3, fail_poison=True
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    try:
        await wait_for(lambda: sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 20, 30)
        dlq = DeadLetterQueue(nc.jsm(), publisher)

        async def letters() -> int:
            return len(await dlq.list())

        for _ in range(100):
            if await letters() == 3:
                break
            await asyncio.sleep(0.2)
        dead = await dlq.list()
        errors = sorted(letter.error for letter in dead)
        assert len(dead) == 3, errors
        assert any("invalid intents.project.requested" in e for e in errors)
        assert any("failed 3 times" in e and "poison" in e for e in errors)
        assert any(e.startswith("permanent: this description is refused") for e in errors)
        assert all(letter.consumer == "test-worker" for letter in dead)
    finally:
        stop.set()
        await serving

    # The fix: a handler that copes with poison. Replay the retried one from the CLI.
    from producers.cli import bus
    from producers.cli.endpoints import Endpoints

    fixed = build_workload(settings_for(fresh_nats.url, migrated_db), "fixed")
    stop = asyncio.Event()
    serving = asyncio.create_task(fixed.serve(stop))
    try:
        retried = next(d for d in await dlq.list() if "failed 3 times" in d.error)
        endpoints = Endpoints(fresh_nats.url, migrated_db, "", "", Path("."))
        printed: list[str] = []
        assert await bus.dlq(endpoints, "replay", retried.seq, None, printed.append) == 0
        assert "replayed dead letter" in printed[0]
        await wait_for(
            lambda: (
                sql(
                    migrated_db,
                    f"SELECT count(*) FROM effects WHERE event_id = '{poison.event_id}'",
                )[0][0]
                == 1
            ),
            20,
        )
        assert await dlq.get(retried.seq) is None
        assert (await nc.jsm().stream_info(DLQ.name)).state.messages == 2
    finally:
        stop.set()
        await serving


async def test_crash_between_commit_and_publish_is_healed_by_the_outbox_relay(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    await apply_consumers(nc.jsm(), (worker_spec(ack_wait=3),))
    event = request("crash after commit")
    crashing = start_replica(
        fresh_nats.url, migrated_db, "crashing", "--crash-on-publish", "--ack-wait", "3"
    )
    await JetStreamPublisher.from_client(nc).publish(event)
    assert crashing.wait(30) == 3
    assert sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 1
    assert sql(migrated_db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0] == 1
    assert await stream_count(nc, NOTIFY.name) == 0

    restarted = start_replica(fresh_nats.url, migrated_db, "restarted", "--ack-wait", "3")
    try:
        await wait_for(
            lambda: (
                sql(migrated_db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0]
                == 0
            ),
            30,
        )
        # The original comes back after its ack wait: a duplicate, acknowledged without a
        # second effect, its stored output re-published and de-duplicated by the stream.
        await settled(nc)
        assert await stream_count(nc, NOTIFY.name) == 1
        assert sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 1
    finally:
        stop_replica(restarted)


async def test_changed_consumer_settings_are_applied_at_next_start(nc: Client) -> None:
    jsm = nc.jsm()
    before = ConsumerSpec(
        "drift",
        "drift",
        INTENTS,
        ("intents.project.answered",),
        "drift test",
        ack_wait_seconds=30,
        max_deliver=5,
    )
    await apply_consumers(jsm, (before,))
    after = ConsumerSpec(
        "drift",
        "drift",
        INTENTS,
        ("intents.project.answered",),
        "drift test",
        ack_wait_seconds=45,
        max_deliver=9,
    )
    await apply_consumers(jsm, (after,))
    info = await jsm.consumer_info(INTENTS.name, "drift")
    assert info.config.ack_wait == 45
    # The server allows more than the code's budget (a failed dead-letter publish retries).
    assert info.config.max_deliver == server_max_deliver(after) > 9


@pytest.mark.parametrize("crash", [False, True], ids=["stopped", "killed"])
async def test_nats_restart_mid_stream_loses_nothing(
    fresh_nats: NatsServer, migrated_db: str, nc: Client, crash: bool
) -> None:
    """The server goes away with work stored and unhandled: gracefully, or by SIGKILL (file
    storage, no chance to flush or say goodbye). Nothing is lost and nothing is doubled."""
    await apply_consumers(nc.jsm(), (worker_spec(ack_wait=5),))
    app = build_workload(settings_for(fresh_nats.url, migrated_db), "steady", ack_wait=5)
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    publisher = JetStreamPublisher.from_client(nc)
    events = [request(f"through restart {i}") for i in range(300)]

    async def publish_all() -> None:
        for event in events:
            while True:  # a producer retries with the same id; the stream de-duplicates
                try:
                    await publisher.publish(event)
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.005)

    def handled() -> int:
        return int(sql(migrated_db, "SELECT count(DISTINCT event_id) FROM effects")[0][0])

    producing = asyncio.create_task(publish_all())
    try:
        await wait_for(lambda: handled() >= 30, 60)
        await asyncio.to_thread(fresh_nats.kill if crash else fresh_nats.stop)
        assert handled() < 300  # mid-stream: work was stored and not yet handled
        await asyncio.to_thread(fresh_nats.start)
        await producing
        await wait_for(lambda: handled() == 300, 90)
        assert sql(migrated_db, "SELECT count(*) FROM effects")[0][0] == 300
    finally:
        producing.cancel()
        stop.set()
        await serving


async def test_every_replica_of_the_runtime_uses_the_declared_durable(
    fresh_nats: NatsServer, migrated_db: str, nc: Client
) -> None:
    """Two in-process replicas bind the same durable: the server shows one consumer."""
    apps = [build_workload(settings_for(fresh_nats.url, migrated_db), name) for name in ("p", "q")]
    stops = [asyncio.Event() for _ in apps]
    tasks = [asyncio.create_task(a.serve(s)) for a, s in zip(apps, stops, strict=True)]
    await asyncio.sleep(1.5)
    names = [info.name for info in await nc.jsm().consumers_info(INTENTS.name)]
    for s in stops:
        s.set()
    await asyncio.gather(*tasks)
    assert names.count("test-worker") == 1
    assert all(isinstance(a, ConsumerApp) for a in apps)


async def test_a_new_durable_starts_at_recent_messages_and_an_existing_one_keeps_its_start(
    nc: Client,
) -> None:
    """A step added by an upgrade does not replay the stream's history (issue 9)."""
    jsm = nc.jsm()
    publisher = JetStreamPublisher.from_client(nc)
    await publisher.publish(request("published before the step existed"))

    def spec(durable: str) -> ConsumerSpec:
        return ConsumerSpec(durable, durable, INTENTS, ("intents.project.requested",), "start test")

    # No lookback: the durable begins now, past the stored request.
    await apply_consumers(jsm, (spec("added-later"),), lookback=0)
    # The default lookback (10 minutes): processes started together still see the request.
    await apply_consumers(jsm, (spec("started-together"),))
    later = await jsm.consumer_info(INTENTS.name, "added-later")
    together = await jsm.consumer_info(INTENTS.name, "started-together")
    assert later.num_pending == 0
    assert together.num_pending == 1

    # Applied again at the next start (with the default lookback), it keeps where it began.
    await apply_consumers(jsm, (spec("added-later"),))
    await publisher.publish(request("published after"))
    later = await jsm.consumer_info(INTENTS.name, "added-later")
    assert later.config.deliver_policy == DeliverPolicy.BY_START_TIME
    assert later.num_pending == 1
    subscription = await nc.jetstream().pull_subscribe_bind("added-later", stream=INTENTS.name)
    (message,) = await subscription.fetch(1, timeout=5)
    assert b"published after" in message.data
