"""Background loops stop when asked, even when a cancel is lost on the way.

On Python 3.11, `asyncio.wait_for` (under every nats-py request) returns its result instead of
raising when the cancel lands in the same loop turn as the answer. A loop stopped by cancel
alone then runs on, and whoever awaits it waits forever: a consumer's shutdown hung that way
in CI (`test_consumer_runtime_starts_as_its_own_user`, 600 s). Each loop also checks a flag.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from consumers.engineer.keep_alive import keep_alive
from infra.db.outbox import OutboxRelay
from infra.metrics import PeriodicCollector


async def test_wait_for_on_this_python_can_lose_a_cancel() -> None:
    """The premise, shown: the task was cancelled and still returned the answer."""
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(asyncio.wait_for(answer, 10))
    await asyncio.sleep(0)
    answer.set_result("answer")
    task.cancel()
    assert await task == "answer"


async def finishes(awaitable: Any) -> bool:
    """Whether `awaitable` finishes on its own (a hung one is cancelled again to clean up)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        task.cancel()
        await asyncio.wait({task})
    return bool(done)


class SwallowsOneCancel:
    """A call that, like `wait_for` in the race above, ends normally when cancelled."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.swallowed = 0

    async def __call__(self) -> None:
        self.entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.swallowed += 1


async def test_a_collector_stops_although_its_collect_swallowed_the_cancel() -> None:
    collect = SwallowsOneCancel()
    collector = PeriodicCollector("swallower", collect, interval=3600)
    collector.start()
    await collect.entered.wait()
    assert await finishes(collector.stop())  # hung forever before the flag
    assert collect.swallowed == 1


async def test_the_outbox_relay_stops_although_a_relay_swallowed_the_cancel() -> None:
    relay = OutboxRelay(None, None, interval=3600, grace=timedelta(0))  # type: ignore[arg-type]
    swallow = SwallowsOneCancel()
    relay.relay_once = swallow  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await swallow.entered.wait()
    stop.set()
    task.cancel()
    assert await finishes(task)
    assert swallow.swallowed == 1


async def test_a_keep_alive_ends_with_its_block_although_a_heartbeat_swallowed_the_cancel() -> None:
    heartbeat = SwallowsOneCancel()

    async def block() -> None:
        async with keep_alive(heartbeat, every=0.01):
            await heartbeat.entered.wait()

    assert await finishes(block())
    assert heartbeat.swallowed == 1
