"""Liveness and readiness of one process, as `/livez` and `/readyz` report them.

Liveness is about the event loop only: a task on the loop beats once a second, and the process
is live while the last beat is younger than `health.loop_stale_seconds`. A loop blocked by a
synchronous call, or a deadlock, stops the beat, and the orchestrator (Kubernetes, compose)
restarts the process. A dependency that is down never fails liveness: restarting a consumer does
not bring PostgreSQL back, and the runtime waits out such outages by itself.

Readiness is liveness plus the process's connections: each check is a coroutine that returns
when its dependency is usable and raises with the reason when it is not (NATS connected,
PostgreSQL answering, the Vault token valid). The checks run on the loop, concurrently, each
within `health.check_timeout_seconds`; a report names every check, so an operator reading one
`/readyz` body knows which dependency to look at.

The endpoints are served from a thread (`infra.process_endpoints`), which is why the report
for a blocked loop can be a 503 rather than no answer at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from infra.bus.faults import DatabaseGate, database_answers
from infra.settings import HealthSettings

#: Seconds between two beats of the loop's heartbeat.
BEAT_SECONDS = 1.0
EVENT_LOOP = "event_loop"

Check = Callable[[], Awaitable[None]]


class CheckFailed(Exception):
    """A dependency is not usable; the message is what `/readyz` shows for it."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """What `/livez` or `/readyz` answers: healthy only if every check is."""

    checks: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
        }


class HealthChecks:
    """One per process: the loop's heartbeat and the readiness checks registered with `add`."""

    def __init__(self, settings: HealthSettings | None = None) -> None:
        self._settings = settings or HealthSettings()
        self._checks: dict[str, Check] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat: asyncio.Task[None] | None = None
        self._last_beat: float | None = None

    def add(self, name: str, check: Check) -> None:
        """Make readiness depend on `check` (registered once per name; a later one replaces it)."""
        self._checks[name] = check

    def start(self) -> None:
        """Start the heartbeat on the running loop (idempotent)."""
        if self._beat is not None and not self._beat.done():
            return
        self._loop = asyncio.get_running_loop()
        self._last_beat = time.monotonic()
        self._beat = asyncio.create_task(self._heartbeat(), name="health-heartbeat")

    async def stop(self) -> None:
        if self._beat is None:
            return
        self._beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._beat
        self._beat = None

    async def _heartbeat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(BEAT_SECONDS)

    # ------------------------------------------------------------------ reports

    def liveness(self) -> HealthReport:
        """Whether the event loop beats; safe to call from any thread."""
        return HealthReport((self._loop_check(),))

    async def readiness(self) -> HealthReport:
        """Liveness plus every registered check, run on this (the process's) loop."""
        return HealthReport((self._loop_check(), *await self._run_checks()))

    def readiness_from_thread(self) -> HealthReport:
        """`readiness` for a server thread: the checks run on the process's loop.

        A loop that does not beat cannot run them: they are reported as not checked at once,
        rather than after a timeout.
        """
        loop_check = self._loop_check()
        if not loop_check.ok or self._loop is None:
            return self._unchecked(loop_check, "not checked: the event loop does not answer")
        try:
            future = asyncio.run_coroutine_threadsafe(self._run_checks(), self._loop)
        except RuntimeError:  # the loop has closed: the process is ending
            return self._unchecked(loop_check, "not checked: the process is stopping")
        try:
            results = future.result(timeout=self._settings.check_timeout_seconds + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return self._unchecked(loop_check, "not checked: the event loop did not run them")
        return HealthReport((loop_check, *results))

    def _unchecked(self, loop_check: CheckResult, detail: str) -> HealthReport:
        return HealthReport(
            (loop_check, *(CheckResult(name, False, detail) for name in self._checks))
        )

    def _loop_check(self) -> CheckResult:
        if self._last_beat is None or self._beat is None or self._beat.done():
            return CheckResult(EVENT_LOOP, False, "the heartbeat is not running")
        age = time.monotonic() - self._last_beat
        limit = self._settings.loop_stale_seconds
        if age > limit:
            return CheckResult(
                EVENT_LOOP,
                False,
                f"no heartbeat for {age:.1f} s (limit {limit:g} s): the event loop is blocked",
            )
        return CheckResult(EVENT_LOOP, True, f"last heartbeat {age:.1f} s ago")

    async def _run_checks(self) -> list[CheckResult]:
        return list(await asyncio.gather(*(self._run(n, c) for n, c in self._checks.items())))

    async def _run(self, name: str, check: Check) -> CheckResult:
        timeout = self._settings.check_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                await check()
        except TimeoutError:
            return CheckResult(name, False, f"no answer within {timeout:g} s")
        except Exception as exc:
            return CheckResult(name, False, str(exc) or type(exc).__name__)
        return CheckResult(name, True, "ok")


# ---------------------------------------------------------------------- the usual checks


class NatsConnection(Protocol):
    """The state properties of `nats.aio.client.Client` the NATS check reads."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def is_reconnecting(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...


def nats_connected(client: Callable[[], NatsConnection | None]) -> Check:
    """Ready while the client `client()` returns is connected (None: not connected yet)."""

    async def check() -> None:
        nc = client()
        if nc is None:
            raise CheckFailed("not connected yet")
        if nc.is_connected:
            return
        if nc.is_reconnecting:
            raise CheckFailed("disconnected; reconnecting")
        if nc.is_closed:
            raise CheckFailed("connection closed; the process exits for a restart")
        raise CheckFailed("connecting")

    return check


def database_reachable(
    engine: Callable[[], AsyncEngine | None], gate: Callable[[], DatabaseGate | None] = lambda: None
) -> Check:
    """Ready while PostgreSQL answers a `SELECT 1`.

    A consumer's `DatabaseGate` that is closed (a step met the outage and the pullers paused)
    counts as down without another query.
    """

    async def check() -> None:
        current = engine()
        if current is None:
            raise CheckFailed("not connected yet")
        paused = gate()
        if paused is not None and not paused.is_open:
            raise CheckFailed("unreachable; consuming is paused until it answers")
        try:
            answers = await database_answers(current)
        except Exception as exc:
            raise CheckFailed(f"refused the probe query ({type(exc).__name__})") from exc
        if not answers:
            raise CheckFailed("unreachable")

    return check
