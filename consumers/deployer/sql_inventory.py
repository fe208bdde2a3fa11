"""`SqlServerInventory`: servers from the `servers` table, read in the step's session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Server, ServerState

from .ports import ServerTarget

#: Where a release may still go: a draining server keeps serving (and redeploying) its
#: projects, and an unreachable one may be back by the time Ansible connects.
DEPLOYABLE = (ServerState.READY, ServerState.DRAINING, ServerState.UNREACHABLE)


class SqlServerInventory:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, name: str) -> ServerTarget | None:
        server = await self._session.scalar(
            select(Server).where(Server.name == name, Server.state.in_(DEPLOYABLE))
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
