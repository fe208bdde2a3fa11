"""The CLI's PostgreSQL: a small pool, opened for one command and disposed of after it.

Apart from the bus connection (`producers.cli.connection`), so a command that only reads
projects (`orchestrator status`) does not load NATS and Vault.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.session import make_engine, make_sessionmaker

from .endpoints import Endpoints


@asynccontextmanager
async def database(endpoints: Endpoints) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(endpoints.database_url, pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
