"""One pull loop's database connection, held from one single-message step to the next.

A step checked a connection out of the pool and back in for every message: a session, a pool
checkout, a transaction object and the checkin's reset, all of it Python run per message on
the latency path. A pull loop handles one message at a time, so it holds one connection
instead and each step's session is bound to it.

The connection goes back to the pool when a slow step asks for it
(`StepContext.without_transaction`), when the loop stops, and after a failed step that left
it unusable: a broken connection is invalidated (closed, never reused) and the next step
checks out a fresh one, as the pool would have done.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


class StepConnection:
    """A lease on one pooled connection, taken on first use and kept between steps."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: psycopg.AsyncConnection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None

    async def acquire(self) -> tuple[AsyncConnection, psycopg.AsyncConnection[Any]]:
        """The held connection and its psycopg connection, checked out if none is held."""
        if self._connection is None or self._driver is None:
            connection = await self._engine.connect()
            try:
                raw = await connection.get_raw_connection()
            except BaseException:
                await connection.close()
                raise
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.AsyncConnection)
            self._connection, self._driver = connection, driver
        return self._connection, self._driver

    @property
    def connection(self) -> AsyncConnection:
        """The held connection (one must be held: a slow step's block holds none)."""
        assert self._connection is not None, "no connection is held"
        return self._connection

    @property
    def driver(self) -> psycopg.AsyncConnection[Any]:
        """The psycopg connection of the held connection (one must be held)."""
        assert self._driver is not None, "no connection is held"
        return self._driver

    def usable(self) -> bool:
        """Whether the held connection can serve the next step as it is."""
        connection, driver = self._connection, self._driver
        if connection is None or driver is None:
            return False
        return not (connection.invalidated or driver.closed or driver.broken)

    async def reset(self) -> None:
        """After a failed step: roll back what is open, or drop the connection if it broke."""
        if self._connection is None:
            return
        if not self.usable():
            await self.discard()
            return
        if self.driver.info.transaction_status != TransactionStatus.IDLE:
            try:
                await self.driver.rollback()
            except Exception:
                await self.discard()

    async def release(self) -> None:
        """Give the connection back to the pool (its checkin rolls back anything open)."""
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            await connection.close()

    async def discard(self) -> None:
        """Close a broken connection for good: the pool replaces it, nobody reuses it."""
        connection, self._connection, self._driver = self._connection, None, None
        if connection is None:
            return
        try:
            await connection.invalidate()
        finally:
            await connection.close()
