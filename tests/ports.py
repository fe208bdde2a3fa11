"""Port ranges the tests hand out, shared out between pytest-xdist workers.

`make test` runs the suite in three worker processes (`-n 3`). A port chosen for a deployed
service, or a block of ports given to a stack, is checked free when it is chosen but bound
only later, so two workers could choose the same one; each worker takes its own share of a
range instead. Without xdist the share is the whole range.
"""

from __future__ import annotations

import os


def worker_share(low: int, high: int) -> tuple[int, int]:
    """This worker's part `[start, end)` of `[low, high)`."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0")
    width = (high - low) // count
    return low + index * width, low + (index + 1) * width
