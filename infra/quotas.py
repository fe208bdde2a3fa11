"""How many projects one person may request per day, counted the same way at every door.

The count comes from the `projects` table over the last 24 hours (a moving window, so there is
no rush at midnight). The limit is the user's own `projects_per_day` when an admin set one,
otherwise `ORCH_QUOTAS__PROJECTS_PER_DAY`. The doors (API, bot) check before they publish so
the person hears the reason at once; the coordinator checks the same function again, because
an intent can reach the bus from any door and a request still on its way is not yet a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project, User

WINDOW = timedelta(days=1)


class QuotaExceeded(RuntimeError):
    """A request would go over a quota; the message says which, and when it frees up.

    `frees_at` is None when waiting will not help (a quota of 0): a door answers "forbidden"
    rather than "try later".
    """

    def __init__(self, message: str, frees_at: datetime | None) -> None:
        super().__init__(message)
        self.frees_at = frees_at


@dataclass(frozen=True)
class ProjectQuota:
    """The user's usage of the daily project quota at one moment."""

    user_id: str
    limit: int
    used: int
    #: When the oldest project in the window leaves it (None while under the limit).
    frees_at: datetime | None

    @property
    def exceeded(self) -> bool:
        return self.used >= self.limit


async def project_quota(
    session: AsyncSession, user_id: str, default_per_day: int, *, now: datetime | None = None
) -> ProjectQuota:
    """The user's daily limit and how many projects they requested in the last 24 hours."""
    now = now or datetime.now(UTC)
    since = now - WINDOW
    override = await session.scalar(select(User.projects_per_day).where(User.id == user_id))
    limit = override if override is not None else default_per_day
    used, oldest = (
        await session.execute(
            select(func.count(), func.min(Project.created_at)).where(
                Project.user_id == user_id, Project.created_at > since
            )
        )
    ).one()
    frees_at = oldest + WINDOW if used >= limit and oldest is not None else None
    return ProjectQuota(user_id=user_id, limit=limit, used=int(used), frees_at=frees_at)


async def check_project_quota(
    session: AsyncSession, user_id: str, default_per_day: int, *, now: datetime | None = None
) -> ProjectQuota:
    """The quota, or `QuotaExceeded` saying the limit and when the next project is allowed."""
    now = now or datetime.now(UTC)
    quota = await project_quota(session, user_id, default_per_day, now=now)
    if quota.exceeded:
        if quota.limit <= 0:
            raise QuotaExceeded(
                f"{user_id} may not request projects (their daily quota is 0): ask an admin",
                None,
            )
        when = f"{quota.frees_at:%Y-%m-%d %H:%M} UTC" if quota.frees_at else "tomorrow"
        raise QuotaExceeded(
            f"daily project quota reached: {quota.used} of {quota.limit} projects in the last "
            f"24 hours; the next one is possible from {when}, or ask an admin to raise your "
            "quota",
            quota.frees_at or now + WINDOW,
        )
    return quota
