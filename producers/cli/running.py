"""How a bus or database command runs: on its own loop, cancelled cleanly by Ctrl-C or SIGTERM.

A cancelled command exits 130, as a shell expects of an interrupted one; every line it prints
is flushed at once, so `events tail` piped into another tool shows events as they arrive.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any


def run(coro: Coroutine[Any, Any, int]) -> int:
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 130
    finally:
        loop.close()


def print_line(line: str) -> None:
    print(line, flush=True)
