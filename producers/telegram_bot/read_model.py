"""The bot's read model over PostgreSQL: the shared queries of `producers.read_model`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.change_rules import change_in_flight, in_flight_message, why_not_changeable
from infra.db.models import Project, ProjectRevision, ProjectState, RevisionStatus
from producers.read_model import ProjectView, project_view

#: How far back a user's projects are listed and searched.
MAX_PROJECTS = 50


class SqlProjectReadModel:
    """One short read-only session per question; the bot never writes to these tables."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def project(self, owner: str | None, ref: str) -> ProjectView | None:
        # The reference is resolved among the user's own projects only: someone else's project
        # is unknown here (ids are not secrets, timelines are), and a short prefix stays unique.
        # An admin (owner None) resolves among everyone's.
        async with self._sessionmaker() as session:
            visible = await _projects(session, owner)
            match = _resolve(visible, ref.strip().lower())
            if match is None:
                return None
            return await project_view(session, str(match.id))

    async def projects(self, owner: str | None) -> Sequence[ProjectView]:
        async with self._sessionmaker() as session:
            return [_summary(p) for p in await _projects(session, owner)]

    async def secret_names(self, project_id: uuid.UUID) -> tuple[str, ...]:
        async with self._sessionmaker() as session:
            project = await session.get(Project, project_id)
        if project is None or not project.spec:
            return ()
        names = [
            str(var["name"])
            for var in project.spec.get("config", [])
            if isinstance(var, dict) and var.get("secret") and var.get("name")
        ]
        # An integration's variables are secrets too (ProjectSpec.secret_names).
        names += [
            str(name)
            for item in project.spec.get("integrations", [])
            if isinstance(item, dict)
            for name in item.get("env_vars", [])
        ]
        return tuple(dict.fromkeys(names))

    async def awaiting_answer(self, user_id: str) -> ProjectView | None:
        async with self._sessionmaker() as session:
            project = (
                await session.scalars(
                    select(Project)
                    .where(
                        Project.user_id == user_id,
                        or_(
                            Project.state == ProjectState.AWAITING_ANSWER,
                            Project.id.in_(_REVISION_QUESTIONS),
                        ),
                    )
                    .order_by(Project.updated_at.desc())
                    .limit(1)
                )
            ).first()
        return _summary(project) if project is not None else None

    async def change_refusal(self, project_id: uuid.UUID) -> str | None:
        async with self._sessionmaker() as session:
            project = await session.get(Project, project_id)
            if project is None:
                return f"there is no project {project_id}"
            in_flight = await change_in_flight(session, project_id)
        reason = why_not_changeable(project)
        if reason is None and in_flight is not None:
            reason = in_flight_message(project, in_flight)
        return reason

    async def revision_question_open(self, project_id: uuid.UUID) -> bool:
        async with self._sessionmaker() as session:
            found = await session.scalar(
                _REVISION_QUESTIONS.where(ProjectRevision.project_id == project_id)
            )
        return found is not None


#: Projects one of whose change requests waits for the answer to a question.
_REVISION_QUESTIONS = select(ProjectRevision.project_id).where(
    ProjectRevision.status == RevisionStatus.AWAITING_ANSWER
)


async def _projects(session: AsyncSession, owner: str | None) -> list[Project]:
    query = select(Project).order_by(Project.created_at.desc()).limit(MAX_PROJECTS)
    if owner is not None:
        query = query.where(Project.user_id == owner)
    return list(await session.scalars(query))


def _resolve(projects: Sequence[Project], ref: str) -> Project | None:
    """The newest project whose id is or starts with `ref`, or whose slug is `ref`."""
    if not ref:
        return None
    for project in projects:
        if str(project.id).startswith(ref) or project.slug == ref:
            return project
    return None


def _summary(project: Project) -> ProjectView:
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
        timeline=(),
        missing_secrets=tuple(project.missing_secrets or ()),
    )
