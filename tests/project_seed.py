"""Projects recorded the way the coordinator records them, for tests of their readers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, ProjectEvent, ProjectState, User


async def seed_project(
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: str,
    *,
    state: ProjectState = ProjectState.AWAITING_ANSWER,
    slug: str = "todo-api",
    timeline: tuple[str, ...] = (),
) -> Project:
    """Insert a project (and its user, if new) with a timeline of the given summaries."""
    now = datetime.now(UTC)
    project = Project(
        id=uuid.uuid4(),
        flow_id=uuid.uuid4(),
        user_id=user_id,
        description="a todo list api",
        name=slug,
        slug=slug,
        state=state,
        created_at=now,
    )
    async with sessionmaker() as session, session.begin():
        if await session.get(User, user_id) is None:
            session.add(User(id=user_id))
            await session.flush()
        session.add(project)
        await session.flush()
        for index, summary in enumerate(timeline):
            session.add(
                ProjectEvent(
                    project_id=project.id,
                    event_id=uuid.uuid4(),
                    event_type="project.test",
                    actor="coordinator",
                    summary=summary,
                    state=state,
                    occurred_at=now + timedelta(seconds=index),
                )
            )
    return project
