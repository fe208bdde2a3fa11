"""The scheduler loop: at every period boundary, publish that period's tick for each job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import structlog

from infra.bus.publisher import Publisher

from .ticks import tick_for

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(
        self,
        publisher: Publisher,
        jobs: Mapping[str, float],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._publisher = publisher
        self._jobs = dict(jobs)
        self._clock = clock
        self._last: dict[str, str] = {}

    async def publish_due(self) -> int:
        """Publish the current period's tick for every job not yet ticked in this period."""
        published = 0
        now = self._clock()
        for job, every in self._jobs.items():
            tick = tick_for(job, now, every)
            if self._last.get(job) == tick.period:
                continue
            try:
                await self._publisher.publish(tick)
            except Exception:
                log.exception("scheduler.publish_failed", job=job, period=tick.period)
                continue
            self._last[job] = tick.period
            published += 1
        return published

    async def run(self, stop: asyncio.Event) -> None:
        resolution = min(min(self._jobs.values()) / 4, 1.0)
        while not stop.is_set():
            await self.publish_due()
            try:
                await asyncio.wait_for(stop.wait(), timeout=resolution)
            except TimeoutError:
                continue
