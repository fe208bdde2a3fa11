"""The provisioner process end to end: real nats-server, real PostgreSQL, the real runtime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.client import JetStreamContext

from consumers.provisioner.app import build_app
from contracts import events as ev
from contracts.envelope import Event
from infra.bus.codec import decode
from infra.bus.publisher import JetStreamPublisher
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
from tests.provisioner.conftest import AddServer


@pytest.fixture
async def running(
    tmp_path: Path, migrated_url: str
) -> AsyncIterator[tuple[Client, JetStreamContext.PushSubscription]]:
    """A provisioner serving on a nats-server of its own; yields a client and its outcomes."""
    with NatsServer(tmp_path / "nats") as server:
        settings = Settings(
            nats={"url": server.url},
            database={"url": migrated_url, "pool_size": 5},
            consumer={"backoff_seconds": [0.2]},
        )
        app = build_app(settings)
        stop = asyncio.Event()
        serving = asyncio.create_task(app.serve(stop))
        nc = await nats.connect(server.url)
        try:
            while app.publisher is None:  # streams exist once the app has started
                await asyncio.sleep(0.05)
            outcomes = await nc.jetstream().subscribe("project.resources.>", ordered_consumer=True)
            yield nc, outcomes
        finally:
            stop.set()
            await serving
            await nc.close()


async def next_event(sub: JetStreamContext.PushSubscription) -> Event:
    msg = await sub.next_msg(timeout=15)
    return decode(msg.subject, msg.data, msg.headers)


def provision(project_id: uuid.UUID, labels: tuple[str, ...] = ()) -> ev.ProvisionRequested:
    return ev.ProvisionRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        project_id=project_id,
        slug="demo",
        labels=labels,
    )


async def test_allocates_refuses_and_releases_through_the_bus(
    running: tuple[Client, JetStreamContext.PushSubscription], add_server: AddServer
) -> None:
    nc, outcomes = running
    await add_server("only", capacity=1, labels=["eu"])
    publisher = JetStreamPublisher.from_client(nc)
    first, second = uuid.uuid4(), uuid.uuid4()

    request = provision(first, ("eu",))
    await publisher.publish(request)
    allocated = await next_event(outcomes)
    assert isinstance(allocated, ev.ResourcesAllocated)
    assert (allocated.project_id, allocated.server_name, allocated.port) == (first, "only", 20000)
    assert allocated.causation_id == request.event_id
    assert allocated.correlation_id == request.correlation_id

    # The same request as a new message (a coordinator retry): same answer, same port.
    await publisher.publish(request.with_id(uuid.uuid4()))
    again = await next_event(outcomes)
    assert isinstance(again, ev.ResourcesAllocated)
    assert again.port == allocated.port

    await publisher.publish(provision(second, ("eu",)))
    failed = await next_event(outcomes)
    assert isinstance(failed, ev.ProvisioningFailed)
    assert failed.project_id == second
    assert "no server with free capacity and labels [eu]" in failed.reason

    await publisher.publish(
        ev.ProjectArchived(correlation_id=request.correlation_id, actor="coordinator",
                           project_id=first)
    )  # fmt: skip
    released = await next_event(outcomes)
    assert isinstance(released, ev.ResourcesReleased)
    assert (released.server_name, released.port) == ("only", 20000)

    # Archiving a project that holds nothing emits nothing; the next request gets the port.
    await publisher.publish(
        ev.ProjectArchived(correlation_id=uuid.uuid4(), actor="coordinator", project_id=second)
    )
    await publisher.publish(provision(second, ("eu",)))
    reused = await next_event(outcomes)
    assert isinstance(reused, ev.ResourcesAllocated)
    assert (reused.project_id, reused.port) == (second, 20000)
