"""Read-only queries over projects and their timeline, shared by the bot, the API and the CLI."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project, ProjectEvent


@dataclass(frozen=True)
class TimelineEntry:
    occurred_at: datetime
    event_type: str
    actor: str
    state: str | None
    summary: str


@dataclass(frozen=True)
class ProjectView:
    id: uuid.UUID
    flow_id: uuid.UUID
    name: str
    slug: str | None
    state: str
    user_id: str
    url: str | None
    error: str | None
    offline: bool
    created_at: datetime
    timeline: tuple[TimelineEntry, ...]
    #: Names of the secrets a deploy in `awaiting_secrets` waits for (never values).
    missing_secrets: tuple[str, ...] = ()
    #: What `infra.project_operations` reads to allow a redeploy, restart, rollback or retry.
    code_commit: str | None = None
    live_commit: str | None = None
    previous_commit: str | None = None
    operation: str | None = None
    operation_started_at: datetime | None = None


class ProjectNotFound(LookupError):
    pass


async def find_project(session: AsyncSession, ref: str, *, user_id: str | None = None) -> Project:
    """A project by id, id prefix (8+ hex chars) or slug; only `user_id`'s if given.

    The owner is part of the query, so a user can neither see nor probe another's project.
    """
    ref = ref.strip()
    query = select(Project).order_by(Project.created_at.desc()).limit(2)
    if user_id is not None:
        query = query.where(Project.user_id == user_id)
    try:
        query = query.where(Project.id == uuid.UUID(ref))
    except ValueError:
        conditions = [Project.slug == ref]
        if len(ref) >= 8 and all(c in "0123456789abcdef-" for c in ref.lower()):
            conditions.append(cast(Project.id, String).startswith(ref.lower()))
        query = query.where(or_(*conditions))
    project = (await session.scalars(query)).first()
    if project is None:
        raise ProjectNotFound(
            f"no project matches {ref!r}: give its id (or first 8 characters) or its slug"
        )
    return project


async def project_view(session: AsyncSession, ref: str) -> ProjectView:
    project = await find_project(session, ref)
    rows = await session.scalars(
        select(ProjectEvent)
        .where(ProjectEvent.project_id == project.id)
        .order_by(ProjectEvent.occurred_at, ProjectEvent.id)
    )
    return ProjectView(
        id=project.id,
        flow_id=project.flow_id,
        name=project.name,
        slug=project.slug,
        state=project.state,
        user_id=project.user_id,
        url=project.url,
        error=project.error,
        offline=project.offline,
        created_at=project.created_at,
        timeline=tuple(
            TimelineEntry(r.occurred_at, r.event_type, r.actor, r.state, r.summary) for r in rows
        ),
        missing_secrets=tuple(project.missing_secrets or ()),
        code_commit=project.code_commit,
        live_commit=project.live_commit,
        previous_commit=project.previous_commit,
        operation=project.operation,
        operation_started_at=project.operation_started_at,
    )


async def user_projects(session: AsyncSession, user_id: str, limit: int = 20) -> list[Project]:
    rows = await session.scalars(
        select(Project)
        .where(Project.user_id == user_id)
        .order_by(Project.created_at.desc())
        .limit(limit)
    )
    return list(rows)
