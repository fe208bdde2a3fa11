"""`SqlServerInventory`: servers from the `servers` table, read in the step's session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Server

from .ports import ServerTarget


class SqlServerInventory:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, name: str) -> ServerTarget | None:
        server = await self._session.scalar(
            select(Server).where(Server.name == name, Server.enabled.is_(True))
        )
        if server is None:
            return None
        return ServerTarget(
            name=server.name,
            host=server.host,
            ssh_port=server.ssh_port,
            ssh_user=server.ssh_user,
            host_key=server.host_key,
        )
