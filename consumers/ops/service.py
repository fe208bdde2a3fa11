"""On each health tick, probe every active service; open or resolve one incident per project.

An incident's natural key is `health:<project id>`, unique among open incidents (a partial
unique index), so a redelivered tick or a second ops replica never opens it twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from contracts.envelope import Event
from infra.db.models import Project, ProjectState

from .incidents import open_incidents, record_opened, resolve

ACTOR = "ops"
HEALTH_PATH = "/health"


class HealthProbe(Protocol):
    async def healthy(self, url: str) -> tuple[bool, str]:
        """(is it healthy, what was seen) for one service's health URL."""
        ...


def incident_key(project_id: uuid.UUID) -> str:
    return f"health:{project_id}"


class OpsService:
    def __init__(self, session: AsyncSession, probe: HealthProbe) -> None:
        self.session = session
        self.probe = probe

    async def check_health(self, tick: ev.SchedulerTick) -> list[Event]:
        projects = (
            await self.session.scalars(
                select(Project).where(
                    Project.state == ProjectState.ACTIVE, Project.url.is_not(None)
                )
            )
        ).all()
        results = await asyncio.gather(
            *(self.probe.healthy(str(p.url).rstrip("/") + HEALTH_PATH) for p in projects)
        )
        opened_before = await open_incidents(self.session)
        emitted: list[Event] = []
        for index, (project, (healthy, seen)) in enumerate(zip(projects, results, strict=True)):
            key = incident_key(project.id)
            incident = opened_before.get(key)
            if not healthy and incident is None:
                emitted.extend(await self._open(tick, project, key, seen, index))
            elif healthy and incident is not None:
                emitted.append(resolve(tick, incident, index))
        return emitted

    async def _open(
        self, tick: ev.SchedulerTick, project: Project, key: str, seen: str, index: int
    ) -> Sequence[Event]:
        opened = tick.derive(
            ev.IncidentOpened,
            actor=ACTOR,
            index=index,
            incident_id=uuid.uuid4(),
            kind="health_check_failed",
            key=key,
            summary=f"{project.name or project.slug} at {project.url} is unhealthy: {seen}",
            project_id=project.id,
        )
        if not await record_opened(self.session, opened):  # another replica opened it first
            return []
        return [
            opened,
            tick.derive(
                ev.NotificationRequested,
                actor=ACTOR,
                index=index,
                project_id=project.id,
                user_id=project.user_id,
                chat_id=project.chat_id,
                kind=ev.NotificationKind.FAILURE,
                text=f"{project.name} stopped answering its health check ({seen}). "
                "An incident is open; operators are looking.",
                offline=project.offline,
            ),
        ]
