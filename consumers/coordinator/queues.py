"""Where a project waits: how many builds or deploys are ahead of it on the platform.

The engineer and the deployer take at most their concurrency at once (the durable's
`max_ack_pending`, sized from the machine: `infra.bus.topology.with_concurrency`); the rest of
their commands wait in the stream. When the coordinator sends one more, it reads the durable's
info and tells the person where the project stands ("queued: 4 builds ahead of you") instead
of leaving a progress message that says nothing for minutes.

The figure is the durable's own count, whichever user the work belongs to: the commands being
worked on (`num_ack_pending`) plus those not yet delivered (`num_pending`), and 0 when a slot is
free and nothing waits. It is advice for a person, never a decision: when the broker does not
answer within `_INFO_SECONDS`, or the process may not read the durable, the count is unknown and
the message simply says nothing about a queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError

from contracts.topology import DEPLOYER, ENGINEER, QUEUE_READERS, ConsumerSpec

log = structlog.get_logger(__name__)

#: A progress message is not worth holding a project's row lock for longer than this.
_INFO_SECONDS = 1.0
#: The durables whose queue a person is told about, and what one of their messages is called.
QUEUES: dict[str, tuple[ConsumerSpec, str]] = {
    "build": (ENGINEER, "builds"),
    "deploy": (DEPLOYER, "deploys"),
}
assert {spec for spec, _ in QUEUES.values()} <= set(QUEUE_READERS["coordinator"])


class WorkQueues(Protocol):
    async def ahead(self, queue: str) -> int | None:
        """How many commands run or wait in `queue` ("build", "deploy"); None if unknown."""
        ...


class DurableQueues:
    """`WorkQueues` read from the durables' info on the coordinator's own connection."""

    def __init__(self, connection: Callable[[], Client | None]) -> None:
        self._connection = connection

    async def ahead(self, queue: str) -> int | None:
        nc = self._connection()
        if nc is None:
            return None
        spec, _ = QUEUES[queue]
        try:
            async with asyncio.timeout(_INFO_SECONDS):
                info = await nc.jsm().consumer_info(spec.stream.name, spec.durable)
        except (TimeoutError, NatsError) as exc:  # JetStream's errors are NATS errors
            log.warning("coordinator.queue_unknown", durable=spec.durable, error=repr(exc))
            return None
        return waiting_ahead(
            in_flight=info.num_ack_pending or 0,
            undelivered=info.num_pending or 0,
            slots=info.config.max_ack_pending,
        )


def waiting_ahead(*, in_flight: int, undelivered: int, slots: int | None) -> int:
    """0 when a new command would start at once; else every command running or waiting."""
    if undelivered == 0 and (slots is None or slots <= 0 or in_flight < slots):
        return 0
    return in_flight + undelivered


async def with_queue(queues: WorkQueues | None, queue: str, text: str) -> str:
    """`text`, followed by where the project waits when the step's queue is full."""
    ahead = None if queues is None else await queues.ahead(queue)
    if not ahead:
        return text
    separator = " " if text.endswith(("…", ".")) else ". "
    return f"{text}{separator}queued: {ahead} {QUEUES[queue][1]} ahead of you"
