"""The runtime on a 3-node JetStream cluster that loses the stream's leader mid-stream (issue 9).

Production runs NATS as three nodes with R3 streams so that one node may die. This test makes
sure that promise holds for the runtime and its publishers, not only for the server: a node is
SIGKILLed (a crash, not a shutdown) while a thousand events flow from a producer through the
real consumer runtime to its derived events, and nothing is lost and nothing is done twice.
The node killed leads the stream being consumed, so the test covers the worst case: a leader
election under the producer's publishes, the runtime's fetches, acks and outbox publishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js.api import StreamInfo

from contracts.topology import DLQ, INTENTS, NOTIFY
from infra.bus.connection import connect
from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_consumers, apply_streams
from infra.settings import Settings
from infra.stack.nats_server import NatsCluster, NatsServer

from .conftest import sql, wait_for
from .test_runtime_faults import effects, request, serving
from .workload import build_workload, worker_spec

EVENTS = 1000
#: Events published before the kill; the rest go out while the cluster elects a new leader.
BEFORE_KILL = 400
#: Short, so a message whose ack died with the old consumer leader comes back within the test.
ACK_WAIT = 5.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster", size=3) as nodes:
        yield nodes


@pytest.fixture
async def cluster_nc(cluster: NatsCluster) -> AsyncIterator[Client]:
    """An admin connection to every node, with the R3 streams and the workload's durable."""
    client = await connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    jsm = client.jsm()
    await apply_streams(jsm, replicas=3)
    await apply_consumers(jsm, (worker_spec(ack_wait=ACK_WAIT),))
    yield client
    await client.close()


def cluster_settings(cluster: NatsCluster, db_url: str) -> Settings:
    return Settings(
        nats={"url": cluster.url, "stream_replicas": 3},
        database={"url": db_url, "pool_size": 5},
        consumer={"batch_size": 50, "backoff_seconds": [0.2], "heartbeat_seconds": 0.5},
    )


async def stream_info(nc: Client, stream: str) -> StreamInfo:
    return await nc.jsm().stream_info(stream)


def leader_of(cluster: NatsCluster, info: StreamInfo) -> NatsServer:
    assert info.cluster is not None and info.cluster.leader is not None
    [leader] = [node for node in cluster.nodes if node.server_name == info.cluster.leader]
    return leader


async def test_losing_the_stream_leader_loses_and_doubles_nothing(
    cluster: NatsCluster, cluster_nc: Client, migrated_db: str
) -> None:
    """SIGKILL the intents stream's leader after 400 of 1,000 events; every one is handled once.

    Counted: one effect and one inbox row per event (the step ran once), one outbox row and
    one stored notification per event (derived events neither lost nor doubled), exactly the
    thousand intents in the stream (a publish retried across the election was de-duplicated),
    nothing dead-lettered. The killed node then comes back and catches up.
    """
    nc = cluster_nc
    info = await stream_info(nc, INTENTS.name)
    assert info.config.num_replicas == 3
    doomed = leader_of(cluster, info)

    app = build_workload(cluster_settings(cluster, migrated_db), "cluster", ack_wait=ACK_WAIT)
    stop, task = await serving(app)
    # Patience: a publish keeps trying while a node answers, through the leader election.
    publisher = JetStreamPublisher.from_client(nc, timeout=3.0, patience=60.0)
    events = [request(f"through failover {i}") for i in range(EVENTS)]
    killed = asyncio.Event()
    published = 0

    async def produce() -> None:
        nonlocal published
        for start in range(0, EVENTS, 20):
            if start == BEFORE_KILL:
                await killed.wait()
            await publisher.publish_many(events[start : start + 20])
            published = start + 20

    producing = asyncio.create_task(produce())
    try:
        # Kill while the runtime is busy with the backlog and the producer is between halves.
        await wait_for(lambda: published >= BEFORE_KILL and effects(migrated_db)[0] >= 50, 60)
        await asyncio.to_thread(doomed.kill)
        killed.set()

        await asyncio.wait_for(producing, 120)
        await wait_for(lambda: effects(migrated_db)[1] == EVENTS, 120)
        new_leader = leader_of(cluster, await stream_info(nc, INTENTS.name))
        assert new_leader is not doomed

        async def settled() -> bool:
            consumer = await nc.jsm().consumer_info(INTENTS.name, "test-worker")
            notifications = (await stream_info(nc, NOTIFY.name)).state.messages
            unpublished = sql(migrated_db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
            return (
                consumer.num_pending == 0
                and consumer.num_ack_pending == 0
                and notifications == EVENTS
                and unpublished == [(0,)]
            )

        await wait_until(settled, 60)
        assert effects(migrated_db) == (EVENTS, EVENTS)
        assert sql(migrated_db, "SELECT count(*) FROM inbox") == [(EVENTS,)]
        assert sql(migrated_db, "SELECT count(*) FROM outbox") == [(EVENTS,)]
        assert (await stream_info(nc, INTENTS.name)).state.messages == EVENTS
        assert (await stream_info(nc, NOTIFY.name)).state.messages == EVENTS
        assert (await stream_info(nc, DLQ.name)).state.messages == 0

        await asyncio.to_thread(doomed.start)

        async def caught_up() -> bool:
            cluster_info = (await stream_info(nc, INTENTS.name)).cluster
            assert cluster_info is not None
            replica = [r for r in cluster_info.replicas or [] if r.name == doomed.server_name]
            return bool(replica) and bool(replica[0].current) and not replica[0].lag

        await wait_until(caught_up, 60)
    finally:
        producing.cancel()
        stop.set()
        await task


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.2
) -> None:
    """`wait_for` for a predicate that asks the cluster; a request it refuses counts as "not yet".

    Right after a node comes back, a JetStream API request may time out or be answered 503.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            if await predicate():
                return
        except (NatsError, TimeoutError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
