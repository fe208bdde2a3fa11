"""Fixtures for the provisioner and the inventory: a migrated database and a way to seed servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Server, ServerState
from infra.db.session import make_engine, make_sessionmaker

AddServer = Callable[..., Awaitable[int]]


@pytest.fixture
async def sessionmaker(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    # Enough connections for the concurrency tests to really run side by side.
    engine = make_engine(migrated_url, pool_size=30)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def add_server(sessionmaker: async_sessionmaker[AsyncSession]) -> AddServer:
    """Insert a server row directly (the inventory module is tested on its own)."""

    async def add(
        name: str,
        *,
        labels: Sequence[str] = (),
        capacity: int = 20,
        ports: tuple[int, int] = (20000, 20999),
        state: ServerState = ServerState.READY,
        public_host: str = "",
    ) -> int:
        async with sessionmaker.begin() as session:
            server = Server(
                name=name,
                host=f"{name}.internal",
                host_key=f"{name}.internal ssh-ed25519 AAAA",
                labels=list(labels),
                capacity=capacity,
                port_min=ports[0],
                port_max=ports[1],
                state=state,
                public_host=public_host,
            )
            session.add(server)
            await session.flush()
            return server.id

    return add
