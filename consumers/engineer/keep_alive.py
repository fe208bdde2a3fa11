"""Heartbeats while a long step runs, so JetStream does not redeliver work still in progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from consumers.engineer.agent import Heartbeat

_log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def keep_alive(heartbeat: Heartbeat, every: float) -> AsyncIterator[None]:
    """Call `heartbeat` every `every` seconds until the block ends.

    A failed heartbeat is logged and retried at the next tick rather than aborting the step:
    the worst case is a redelivery, which the natural-key check turns into a no-op.
    """

    done = asyncio.Event()

    async def beat() -> None:
        # The flag as well as the cancel: a heartbeat's own `wait_for` may swallow the cancel
        # (Python 3.11), and the block's end must still end the loop.
        while not done.is_set():
            await asyncio.sleep(every)
            if done.is_set():
                return
            try:
                await heartbeat()
            except Exception as exc:
                _log.warning("engineer.heartbeat_failed", error=str(exc))

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        done.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
