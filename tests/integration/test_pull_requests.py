"""A pull loop's requests (`infra.bus.pull`, issue 9) against a real nats-server.

The loop asks for its next messages while the step before is still being published, so they
are in hand when it gets to them. What must not change: a request returns what is waiting
at once (it does not sit on a partial batch), a message taken early is never left to expire
into another replica's hands while it waits, and a loop that stops hands back at once what it
holds.
"""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from contracts.topology import INTENTS
from infra.bus.pull import PullRequests

DURABLE = "pull-requests-test"
SUBJECT = "intents.pull.test"


async def durable(nc: Client, ack_wait: float = 30.0) -> None:
    await nc.jsm().add_consumer(
        INTENTS.name,
        ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            filter_subject=SUBJECT,
        ),
    )


async def publish(nc: Client, *bodies: bytes) -> None:
    js = nc.jetstream()
    for body in bodies:
        await js.publish(SUBJECT, body, stream=INTENTS.name)


async def pending(nc: Client) -> tuple[int, int, int]:
    """(delivered and not acknowledged, waiting in the stream, redelivered) on the durable."""
    info = await nc.jsm().consumer_info(INTENTS.name, DURABLE)
    return info.num_ack_pending or 0, info.num_pending or 0, info.num_redelivered or 0


def requests(
    nc: Client, *, batch: int = 1, expires: float = 2.0, heartbeat: float = 5.0
) -> PullRequests:
    return PullRequests(
        nc, INTENTS.name, DURABLE, batch=batch, expires=expires, heartbeat=heartbeat
    )


async def test_a_request_returns_what_is_waiting_at_once_and_nothing_after_its_expiry(
    nc: Client,
) -> None:
    await durable(nc)
    # Held open for the rest of its batch, the request would return only at its 60 s expiry.
    pull = requests(nc, batch=10, expires=60.0)
    await pull.open()
    try:
        await publish(nc, b"one", b"two", b"three")
        started = time.monotonic()
        msgs = await pull.fetch()
        assert [m.data for m in msgs] == [b"one", b"two", b"three"]
        assert time.monotonic() - started < 30
        for msg in msgs:
            await msg.ack()
    finally:
        await pull.close()

    idle = requests(nc, expires=1.0)
    await idle.open()
    try:
        started = time.monotonic()
        assert await idle.fetch() == []
        assert 0.8 < time.monotonic() - started < 30  # ends with its expiry, not before
    finally:
        await idle.close()


async def wait_for_pending(nc: Client, expected: tuple[int, int, int]) -> None:
    """Until the server counts `expected` (it counts a delivery when it sends it)."""
    async with asyncio.timeout(30):
        while await pending(nc) != expected:
            await asyncio.sleep(0.05)


async def test_an_early_request_is_answered_before_the_loop_fetches(nc: Client) -> None:
    await durable(nc)
    pull = requests(nc)
    await pull.open()
    try:
        await publish(nc, b"first", b"second")
        [first] = await pull.fetch()
        assert await pending(nc) == (1, 1, 0)
        await pull.ask()  # as the runtime does once the first step has committed
        await pull.ask()  # one request at a time: a second ask adds nothing
        await wait_for_pending(nc, (2, 0, 0))  # the second is ours before the loop fetches
        await first.ack()
        [second] = await pull.fetch()
        assert second.data == b"second"
        await second.ack()
    finally:
        await pull.close()


async def test_a_held_message_is_kept_in_progress_and_handed_back_when_the_loop_stops(
    nc: Client,
) -> None:
    await durable(nc, ack_wait=2.0)
    pull = requests(nc, heartbeat=0.1)  # twenty keepalives per ack wait: margin for a busy CPU
    await pull.open()
    await publish(nc, b"held")
    await pull.ask()
    await wait_for_pending(nc, (1, 0, 0))
    rival = requests(nc, expires=5.0)  # another replica, asking all the while
    await rival.open()
    try:
        # Two and a half ack waits: had the keepalive lapsed, the message would be the rival's.
        assert await rival.fetch() == []
    finally:
        await rival.close()
    assert await pending(nc) == (1, 0, 0)

    await pull.close()
    other = requests(nc)
    await other.open()
    try:
        started = time.monotonic()
        [again] = await other.fetch()  # handed back: at once, not after the 2 s ack wait
        assert time.monotonic() - started < 1.5
        assert again.data == b"held" and again.metadata.num_delivered == 2
        await again.ack()
    finally:
        await other.close()
