"""Apply the streams and durable consumers declared in `contracts.topology` to the server.

Both are create-or-update: a changed `ack_wait`, `max_deliver` or filter in code is applied at
the next start instead of being silently ignored (nats-py reuses an existing durable as is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nats
from nats.js import JetStreamManager
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from contracts.topology import CONSUMERS, STREAMS, ConsumerSpec, StreamSpec


def stream_config(spec: StreamSpec, *, duplicate_window: float, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_seconds,
        duplicate_window=duplicate_window,
        num_replicas=replicas,
    )


#: Deliveries a message failing with `TransientError` (a dependency that is down) gets before
#: it is dead-lettered; with the default transient schedule that is more than an hour.
TRANSIENT_MAX_DELIVER = 20
#: Deliveries the server allows beyond the runtime's own budget. The runtime dead-letters on
#: its last delivery; if that publish fails the message must still come back once more, so the
#: server's limit is never the code's.
DEAD_LETTER_SPARE = 3


def transient_max_deliver(spec: ConsumerSpec) -> int:
    """The runtime's delivery budget for a message failing with `TransientError`."""
    return max(spec.max_deliver, TRANSIENT_MAX_DELIVER)


def server_max_deliver(spec: ConsumerSpec) -> int:
    """The server's `max_deliver`: above every budget the runtime counts against."""
    return transient_max_deliver(spec) + DEAD_LETTER_SPARE


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    return ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        description=spec.description,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=spec.ack_wait_seconds,
        max_deliver=server_max_deliver(spec),
        max_ack_pending=spec.max_ack_pending,
        filter_subjects=list(spec.subjects),
        backoff=list(spec.backoff_seconds) or None,
    )


async def apply_streams(
    jsm: JetStreamManager, *, duplicate_window: float = 120.0, replicas: int = 1
) -> None:
    for spec in STREAMS:
        config = stream_config(spec, duplicate_window=duplicate_window, replicas=replicas)
        try:
            await jsm.stream_info(spec.name)
        except NotFoundError:
            await jsm.add_stream(config)
        else:
            await jsm.update_stream(config)


def _drifted(current: StreamConfig, wanted: StreamConfig) -> bool:
    """Whether the server's stream differs from the declaration in a field we set."""
    fields = (
        "subjects",
        "description",
        "retention",
        "storage",
        "discard",
        "max_age",
        "duplicate_window",
        "num_replicas",
    )
    return any(getattr(current, name) != getattr(wanted, name) for name in fields)


async def ensure_streams(
    jsm: JetStreamManager, *, duplicate_window: float = 120.0, replicas: int = 1
) -> None:
    """Create a missing stream or apply drift, but only read streams that match their declaration.

    A consumer process calls this on start. Its NATS user may read stream configs and nothing
    more, so against a stack whose admin applied the topology (the normal case) it only reads;
    against a bare development server with no users it creates what is missing.
    """
    for spec in STREAMS:
        config = stream_config(spec, duplicate_window=duplicate_window, replicas=replicas)
        try:
            info = await jsm.stream_info(spec.name)
        except NotFoundError:
            await jsm.add_stream(config)
            continue
        if _drifted(info.config, config):
            await jsm.update_stream(config)


async def apply_consumers(
    jsm: JetStreamManager, specs: tuple[ConsumerSpec, ...] = CONSUMERS
) -> None:
    # CONSUMER.CREATE with an existing name updates the editable fields in place.
    for spec in specs:
        await jsm.add_consumer(spec.stream.name, config=consumer_config(spec))


async def apply_topology(
    nats_url: str,
    *,
    duplicate_window: float = 120.0,
    replicas: int = 1,
    connect_options: Mapping[str, Any] | None = None,
) -> None:
    """Declare every stream and durable consumer (the stack launcher calls this on start).

    `connect_options` carries the admin user's credentials on a server with authentication.
    """
    nc = await nats.connect(nats_url, connect_timeout=5, **(connect_options or {}))
    try:
        jsm = nc.jsm()
        await apply_streams(jsm, duplicate_window=duplicate_window, replicas=replicas)
        await apply_consumers(jsm)
    finally:
        await nc.close()
