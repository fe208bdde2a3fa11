"""The graph's checkpoints in the platform's PostgreSQL (langgraph-checkpoint-postgres).

Checkpoints make the analyst resumable: a paused question survives restarts, and a
redelivered SpecRequested continues from the last finished node instead of paying for the
same LLM call twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool


def libpq_url(database_url: str) -> str:
    """A libpq URL for a SQLAlchemy one (`postgresql+psycopg://` -> `postgresql://`)."""
    scheme, sep, rest = database_url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


@asynccontextmanager
async def postgres_checkpointer(
    database_url: str, max_connections: int = 5
) -> AsyncIterator[AsyncPostgresSaver]:
    """A saver on its own small pool, with its tables created or migrated (`setup()`)."""
    # The saver requires autocommit and dict rows; prepare_threshold=0 keeps it working
    # behind transaction-pooling proxies (PgBouncer).
    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        libpq_url(database_url), min_size=1, max_size=max_connections, kwargs=kwargs, open=False
    )
    await pool.open()
    try:
        saver = AsyncPostgresSaver(pool)
        await saver.setup()
        yield saver
    finally:
        await pool.close()
