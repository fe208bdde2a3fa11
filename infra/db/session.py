"""Engine and session factories: one engine per process, sessions per unit of work."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(
    url: str, *, pool_size: int = 20, pre_ping: bool = True, options: str | None = None
) -> AsyncEngine:
    """An async engine on psycopg 3.

    `pre_ping` checks a pooled connection before use (a database restart then costs nothing).
    The consumer runtime turns it off: it saves a round trip per step, and a step that meets a
    dead connection fails transiently and is redelivered (the pool drops that connection).
    `options` are libpq's (`DatabaseSettings.session_options()`: the lock and statement
    timeouts), set once per connection at the handshake, so they cost no round trip.
    """
    connect_args = {"options": options} if options else {}
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        connect_args=connect_args,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
