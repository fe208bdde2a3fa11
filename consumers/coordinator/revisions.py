"""Spec revisions of a live project: which changes a project accepts and where each one is.

A change request does not move the project's own state: a live project keeps serving (and
stays `active`) while its next revision is specified, rendered, built and deployed, so the
deployer's rollback leaves it exactly as it was when the new release fails. Where the change
is lives in `project_revisions`, one row per revision; at most one is open (in flight) at a
time. The first revision is the spec the project was built from, recorded when the first
change arrives.

A revision that never reaches an outcome (a consumer down for longer than every step's
budget) would block changes forever, so an open revision older than `STALE_AFTER` is
abandoned when the next change arrives.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.change_rules import change_in_flight
from infra.db.models import Project, ProjectRevision, ProjectState, RevisionStatus

R = RevisionStatus
#: Longer than the spec, build and deploy budgets together (10 + 30 + 15 minutes).
STALE_AFTER = timedelta(hours=1)


def is_stale(revision: ProjectRevision, now: datetime | None = None) -> bool:
    return (now or datetime.now(UTC)) - revision.updated_at > STALE_AFTER


async def open_revision(session: AsyncSession, project_id: uuid.UUID) -> ProjectRevision | None:
    """The project's change in flight, if any (locked with the project row already held)."""
    return await change_in_flight(session, project_id, lock=True)


async def open_at(
    session: AsyncSession, project_id: uuid.UUID, number: int, status: RevisionStatus
) -> ProjectRevision | None:
    """Revision `number` when it is still at `status`: a late or repeated outcome finds None."""
    revision = await open_revision(session, project_id)
    if revision is None or revision.number != number or revision.status != status:
        return None
    return revision


async def start(
    session: AsyncSession, project: Project, change: str, user_id: str
) -> ProjectRevision:
    """Open the next revision; records revision 1 (the original spec) on the first change."""
    last = await session.scalar(
        select(func.max(ProjectRevision.number)).where(ProjectRevision.project_id == project.id)
    )
    if last is None:
        session.add(
            ProjectRevision(
                project_id=project.id,
                number=1,
                status=R.LIVE if project.state == ProjectState.ACTIVE else R.FAILED,
                change=project.description,
                user_id=project.user_id,
                answers=list(project.answers),
                spec=project.spec,
                summary="the spec the project was first built from",
                base_commit=project.repo_commit,
                commit=project.code_commit,
            )
        )
        last = 1
    revision = ProjectRevision(
        project_id=project.id,
        number=int(last) + 1,
        status=R.SPECIFYING,
        change=change,
        user_id=user_id,
        answers=[],
        summary="",
        base_commit=project.code_commit,
    )
    session.add(revision)
    await session.flush()
    return revision
