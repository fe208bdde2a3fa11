"""Telling an infrastructure outage from a failing step, and waiting one out.

A step that fails because PostgreSQL is down (or restarted, leaving dead pooled connections) did
nothing wrong: spending one of its deliveries on each attempt would dead-letter healthy work
after a couple of minutes of outage. So the runtime asks `is_connectivity_error` about every
failure; for those it waits at the `DatabaseGate` (which also pauses fetching for the whole
process) and runs the step again on the same delivery once the database answers.

The classification is deliberately narrow: an error the server itself raised with an SQL state
(a constraint, a deadlock, a timeout) is the step's, except the connection-level classes `08`
(connection exception) and `57P` (the server shutting down or starting up).
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import structlog
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

_CONNECTION_SQLSTATES = ("08", "57P")
# lock_not_available (`lock_timeout` passed), deadlock_detected, serialization_failure.
_CONTENTION_SQLSTATES = ("55P03", "40P01", "40001")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, so a handler that wrapped a driver error is still recognised."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_connectivity_error(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) says the database could not be reached or dropped us."""
    for error in _chain(exc):
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            sqlstate = error.sqlstate
            if sqlstate is None or sqlstate.startswith(_CONNECTION_SQLSTATES):
                return True
        if isinstance(error, ConnectionError):
            return True
    return False


def is_contention_error(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is the database refusing to wait longer for another's lock.

    Such a step did nothing wrong either: it is retried on the long transient schedule, so a
    step holding a lock for a while (a coordinator batch, a migration) never dead-letters the
    steps queued behind it, while `lock_timeout` still keeps them from waiting unseen for ever.
    """
    for error in _chain(exc):
        if isinstance(error, psycopg.Error) and error.sqlstate in _CONTENTION_SQLSTATES:
            return True
    return False


async def database_answers(engine: AsyncEngine) -> bool:
    """Whether the database answers a `SELECT 1`; an error that is not connectivity is raised."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        if is_connectivity_error(exc):
            return False
        raise
    return True


class DatabaseGate:
    """One per process: closed while the database is unreachable, and fetching waits on it.

    `wait_until_reachable` is called by whichever step met a connectivity error. The first
    caller probes; if the database does not answer, the gate closes (every puller stops fetching)
    and that caller keeps probing every `probe_seconds` until it answers, then opens the gate.
    Concurrent callers wait for the same outcome instead of probing on their own.
    """

    def __init__(self, engine: AsyncEngine, probe_seconds: float) -> None:
        self._engine = engine
        self._probe_seconds = probe_seconds
        self._open = asyncio.Event()
        self._open.set()
        self._lock = asyncio.Lock()
        #: How many outages this process waited out (tests and logs read it).
        self.outages = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def opened(self) -> None:
        """Return when the database is (believed) reachable."""
        await self._open.wait()

    async def _reachable(self) -> bool:
        return await database_answers(self._engine)

    async def wait_until_reachable(self) -> bool:
        """Wait until the database answers; True if it was unreachable (an outage waited out)."""
        if not self._open.is_set():
            await self._open.wait()
            return True
        async with self._lock:
            if await self._reachable():
                return False
            self._open.clear()
            self.outages += 1
            started = time.monotonic()
            log.warning("consumer.database_unreachable", probe_seconds=self._probe_seconds)
            try:
                while True:
                    await asyncio.sleep(self._probe_seconds)
                    if await self._reachable():
                        break
            finally:
                self._open.set()
            log.warning(
                "consumer.database_back", outage_seconds=round(time.monotonic() - started, 1)
            )
            return True
