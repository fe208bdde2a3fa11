"""Hand back, at once, the messages a stack that died was holding: its processes are all gone.

Triggered by `orchestrator up` before it starts any process. A message a consumer fetched and
never acknowledged stays "pending" in its durable until the ack wait passes, and a durable
remembers that across a nats-server restart; the engineer's and the deployer's ack wait is five
minutes (their steps are that long, kept alive by heartbeats). When the whole stack was killed
(power cut, out-of-memory kill of its cgroup, `kill -9`), every project that was being built or
deployed then stood still for up to five minutes after the restart, waiting for the deliveries
of processes that no longer exist.

The launcher holds `up.lock`, so when it runs this no process of the stack is alive, and every
pending delivery is orphaned. JetStream's consumer reset (`$JS.API.CONSUMER.RESET`, nats-server
2.14 and later) moves a durable back to its ack floor: its pending messages are delivered again
right away. Messages acknowledged out of order above the floor are delivered again too; every
consumer records what it handled in its inbox, so those are acknowledged as duplicates and
change nothing. The delivery count starts again at one, so a poison message gets its bounded
attempts once more after a restart. This is for the embedded stack only: where replicas run on
other machines, a restarted one must never take back messages that live replicas hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from contracts.topology import CONSUMERS, ConsumerSpec
from infra.bus.connection import connect

RESET_API = "$JS.API.CONSUMER.RESET.{stream}.{durable}"


async def redeliver_orphaned(
    nats_url: str,
    *,
    connect_options: Mapping[str, Any] | None = None,
    specs: tuple[ConsumerSpec, ...] = CONSUMERS,
) -> list[str]:
    """Reset every durable of `specs` that has unacknowledged deliveries; return their names.

    Call only while no process consumes from these durables. On a server without the reset
    API nothing changes and the messages come back after their ack wait, as before.
    """
    nc = await connect(nats_url, connect_timeout=5, **(connect_options or {}))
    try:
        jsm = nc.jsm()
        reset = []
        for spec in specs:
            info = await jsm.consumer_info(spec.stream.name, spec.durable)
            if not info.num_ack_pending:
                continue
            if await _reset(nc, spec):
                reset.append(spec.durable)
        return reset
    finally:
        await nc.close()


async def _reset(nc: Client, spec: ConsumerSpec) -> bool:
    subject = RESET_API.format(stream=spec.stream.name, durable=spec.durable)
    try:
        reply = await nc.request(subject, b"", timeout=5)
    except (NoRespondersError, NatsTimeoutError):
        return False  # a server older than the reset API
    answer = json.loads(reply.data)
    error = answer.get("error")
    if error is not None:
        raise RuntimeError(
            f"JetStream refused to reset durable {spec.durable} of stream {spec.stream.name} "
            f"to redeliver the messages a killed stack held: {error.get('description', error)}"
        )
    return True
