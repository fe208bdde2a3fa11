"""Apply the streams and durable consumers declared in `contracts.topology` to the server.

Both are create-or-update: a changed `ack_wait`, `max_deliver` or filter in code is applied at
the next start instead of being silently ignored (nats-py reuses an existing durable as is).
A durable created for the first time starts a short lookback before now, not at the start of
the stream: a step added by an upgrade must not replay two weeks of history (and redeploy every
project it finds there), while processes started together still see every message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

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
from nats.js.errors import APIError, NotFoundError

from contracts.topology import CONSUMERS, STREAMS, ConsumerSpec, StreamSpec
from infra.bus.connection import connect


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


#: Default of `ORCH_NATS__NEW_DURABLE_LOOKBACK_SECONDS`.
NEW_DURABLE_LOOKBACK_SECONDS = 600.0


def with_concurrency(spec: ConsumerSpec, concurrency: int) -> ConsumerSpec:
    """`spec` doing at most `concurrency` messages at once, across every replica of its process.

    The server enforces it (`max_ack_pending` counts what all replicas hold, a message waiting
    for its retry included) and shows it to `orchestrator lag`; each process runs as many pull
    loops, so one replica alone can use every slot.
    """
    if concurrency < 1:
        raise ValueError(f"{spec.durable}: concurrency must be at least 1, got {concurrency}")
    return replace(spec, parallel=concurrency, max_ack_pending=concurrency)


def consumer_config(spec: ConsumerSpec, *, starts_at: datetime | None = None) -> ConsumerConfig:
    """The durable's config; `starts_at` sets where it begins (only a new durable may choose)."""
    return ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        description=spec.description,
        deliver_policy=DeliverPolicy.ALL if starts_at is None else DeliverPolicy.BY_START_TIME,
        opt_start_time=starts_at,
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
    jsm: JetStreamManager,
    specs: tuple[ConsumerSpec, ...] = CONSUMERS,
    *,
    lookback: float = NEW_DURABLE_LOOKBACK_SECONDS,
) -> None:
    """Create each missing durable `lookback` seconds back; update the others in place.

    CONSUMER.CREATE with an existing name updates the editable fields; where a durable starts is
    not one of them, so an existing durable keeps its own. Replicas starting together may both
    find it missing: the one that comes second is refused the other's start time, and then
    updates the durable the first created.
    """
    for spec in specs:
        try:
            await _apply_consumer(jsm, spec, lookback)
        except APIError as exc:
            if exc.err_code != START_TIME_NOT_UPDATABLE:
                raise
            await _apply_consumer(jsm, spec, lookback)


#: JetStream's error code for a CONSUMER.CREATE that would move an existing durable's start.
START_TIME_NOT_UPDATABLE = 10012


async def _apply_consumer(jsm: JetStreamManager, spec: ConsumerSpec, lookback: float) -> None:
    try:
        current = (await jsm.consumer_info(spec.stream.name, spec.durable)).config
    except NotFoundError:
        config = consumer_config(spec, starts_at=datetime.now(UTC) - timedelta(seconds=lookback))
    else:
        config = consumer_config(spec)
        config.deliver_policy = current.deliver_policy
        config.opt_start_time = current.opt_start_time
        config.opt_start_seq = current.opt_start_seq
    await jsm.add_consumer(spec.stream.name, config=config)


async def apply_topology(
    nats_url: str,
    *,
    duplicate_window: float = 120.0,
    replicas: int = 1,
    connect_options: Mapping[str, Any] | None = None,
    lookback: float = NEW_DURABLE_LOOKBACK_SECONDS,
) -> None:
    """Declare every stream and durable consumer (the stack launcher calls this on start).

    `connect_options` carries the admin user's credentials on a server with authentication.
    """
    nc = await connect(nats_url, connect_timeout=5, **(connect_options or {}))
    try:
        jsm = nc.jsm()
        await apply_streams(jsm, duplicate_window=duplicate_window, replicas=replicas)
        await apply_consumers(jsm, lookback=lookback)
    finally:
        await nc.close()
