"""Tick identity: the same job and period give the same event id in every replica.

That id is the `Nats-Msg-Id`, so the stream keeps one tick per period, and the consumer's
inbox (keyed by event id) drops any copy that arrives after the duplicate window. No replica
needs to know about the others: there is no lock and no leader.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from contracts.events import SchedulerTick

TICK_NAMESPACE = uuid.UUID("0c6f8d1e-6a52-4f57-9d0e-2b1b7f3c9a40")
TICKS_FLOW = uuid.uuid5(TICK_NAMESPACE, "ticks")


def period_key(now: datetime, every_seconds: float) -> str:
    """The period `now` falls in, as the UTC start of the period."""
    start = int(now.timestamp() // every_seconds * every_seconds)
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def tick_for(job: str, now: datetime, every_seconds: float) -> SchedulerTick:
    period = period_key(now, every_seconds)
    return SchedulerTick(
        event_id=uuid.uuid5(TICK_NAMESPACE, f"{job}:{period}"),
        correlation_id=TICKS_FLOW,
        actor="scheduler",
        job=job,
        period=period,
        occurred_at=now,
    )
