"""The coordinator's counts behind the quotas whose limits `infra.quotas` sets.

The counts are taken with the user's row locked, so two requests of one person handled at once
(two replicas, one batch) cannot both take the last slot.

A build is *running* from the code command until the code is pushed or the project leaves the
building state; a build over the limit *waits* (`projects.build_queued_at`) and is started,
oldest first, when one of the same person's builds ends.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project, ProjectState, User
from infra.quotas import WINDOW as DAY
from infra.quotas import builds_at_once, projects_per_day

__all__ = ["DAY", "builds_at_once", "projects_per_day"]


async def lock_user(session: AsyncSession, user_id: str) -> User | None:
    """The user's row, locked until the transaction ends: their quota counts serialize on it."""
    return await session.scalar(select(User).where(User.id == user_id).with_for_update())


async def projects_since(session: AsyncSession, user_id: str, since: datetime) -> list[datetime]:
    """When each of the user's projects created after `since` was created, oldest first."""
    rows = await session.scalars(
        select(Project.created_at)
        .where(Project.user_id == user_id, Project.created_at >= since)
        .order_by(Project.created_at)
    )
    return list(rows)


async def running_builds(
    session: AsyncSession, user_id: str, exclude: uuid.UUID | None = None
) -> int:
    query = select(func.count()).where(
        Project.user_id == user_id,
        Project.state == ProjectState.BUILDING,
        Project.code_commit.is_(None),
        Project.build_queued_at.is_(None),
    )
    if exclude is not None:
        query = query.where(Project.id != exclude)
    return int(await session.scalar(query) or 0)


async def waiting_builds(session: AsyncSession, user_id: str) -> int:
    query = select(func.count()).where(
        Project.user_id == user_id,
        Project.state == ProjectState.BUILDING,
        Project.build_queued_at.is_not(None),
    )
    return int(await session.scalar(query) or 0)


async def oldest_waiting(session: AsyncSession, user_id: str) -> Project | None:
    """The user's longest-waiting build, locked; one locked by another step is passed over.

    Skipping a locked row (rather than waiting for it) keeps two steps that each hold one of
    the user's projects from waiting on each other; the timeout tick starts anything skipped.
    """
    return await session.scalar(
        select(Project)
        .where(
            Project.user_id == user_id,
            Project.state == ProjectState.BUILDING,
            Project.build_queued_at.is_not(None),
        )
        .order_by(Project.build_queued_at, Project.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )


async def users_with_waiting_builds(session: AsyncSession, limit: int = 100) -> list[str]:
    rows = await session.scalars(
        select(Project.user_id)
        .where(Project.state == ProjectState.BUILDING, Project.build_queued_at.is_not(None))
        .group_by(Project.user_id)
        .limit(limit)
    )
    return list(rows)
