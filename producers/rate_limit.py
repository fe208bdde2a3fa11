"""Request rate limits per caller (an API token, a Telegram user), shared by every door.

Built on `limits` (a maintained limiter library) with the moving-window strategy: a caller gets
at most N requests in any window of the configured length, with no burst at a window boundary.
The storage is a `limits` URI. The default, `async+memory://`, counts per process: with several
API replicas each replica allows the full rate, so the effective limit is N times the replica
count. Point `storage_uri` at a store every replica shares (`async+redis://...`,
`async+memcached://...`) to make the limit global; NATS KV is not one `limits` supports.

A refusal carries the seconds until the caller may try again, for a `Retry-After` header or a
chat reply.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

DEFAULT_STORAGE = "async+memory://"


class RateLimitConfigError(ValueError):
    """The configured limit or storage cannot be used; the message says what is accepted."""


@dataclass(frozen=True)
class RateLimited:
    """A refused request: the caller may try again after `retry_after` seconds (at least 1)."""

    limit: str
    retry_after: int

    def __str__(self) -> str:
        return f"too many requests: the limit is {self.limit}; try again in {self.retry_after} s"


class RateLimiter:
    """One limit (e.g. `60/minute`) applied separately to each key (a token, a user id).

    `namespace` keeps two limiters on one shared storage apart (the API's tokens and the bot's
    users count separately even when a key looks the same).
    """

    def __init__(self, limit: str, *, namespace: str, storage_uri: str = DEFAULT_STORAGE) -> None:
        try:
            self._item = parse(limit)
        except ValueError as exc:
            raise RateLimitConfigError(
                f"invalid rate limit {limit!r}: write it as COUNT/PERIOD, "
                "e.g. 60/minute or 1000/hour"
            ) from exc
        try:
            storage = storage_from_string(storage_uri)
        except Exception as exc:  # limits raises ConfigurationError or an import error
            raise RateLimitConfigError(
                f"unusable rate-limit storage {storage_uri!r} ({exc}): use async+memory:// "
                "or an async+redis:// / async+memcached:// URI"
            ) from exc
        if not isinstance(storage, Storage):
            raise RateLimitConfigError(
                f"rate-limit storage {storage_uri!r} is synchronous: prefix it with async+"
            )
        self._limiter = MovingWindowRateLimiter(storage)
        self._namespace = namespace
        self.limit = limit

    async def hit(self, key: str) -> RateLimited | None:
        """Count one request for `key`; None if allowed, otherwise how long to wait."""
        if await self._limiter.hit(self._item, self._namespace, key):
            return None
        stats = await self._limiter.get_window_stats(self._item, self._namespace, key)
        return RateLimited(
            limit=self.limit, retry_after=max(1, math.ceil(stats.reset_time - time.time()))
        )
