"""What one person may start, by one rule at every door and in the coordinator.

Limits come from `QuotaSettings` (`ORCH_QUOTAS__*`) unless an admin set the user's own
(`users.projects_per_day`, `users.builds_at_once`). Admins have no limit unless their own row
sets one: they are the operators, who hold the platform's credentials and can change any quota,
so a default limit on them would protect nothing and only stop the host CLI's work.

New projects are counted from the `projects` table over the last 24 hours (a moving window, so
there is no rush at midnight). The doors (API, bot) check before they publish so the person
hears the reason at once; the coordinator checks the same limits again, because an intent can
reach the bus from any door and a request still on its way is not yet a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project, User, UserRole
from infra.settings import QuotaSettings

#: The window of the projects-per-day quota: a rolling day.
WINDOW = timedelta(days=1)
#: The limit of an admin without an override of their own: none.
UNLIMITED = 1 << 30


def _is_admin(user: User | None) -> bool:
    return user is not None and user.role == UserRole.ADMIN


def projects_per_day(user: User | None, defaults: QuotaSettings) -> int:
    """New projects `user` may request in a rolling day."""
    if user is not None and user.projects_per_day is not None:
        return user.projects_per_day
    return UNLIMITED if _is_admin(user) else defaults.projects_per_day


def builds_at_once(user: User | None, defaults: QuotaSettings) -> int:
    """Projects of `user` that may build at the same time; the rest wait in line."""
    if user is not None and user.builds_at_once is not None:
        return user.builds_at_once
    return UNLIMITED if _is_admin(user) else defaults.builds_at_once


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
    session: AsyncSession, user_id: str, defaults: QuotaSettings, *, now: datetime | None = None
) -> ProjectQuota:
    """The user's daily limit and how many projects they requested in the last 24 hours."""
    now = now or datetime.now(UTC)
    since = now - WINDOW
    user = await session.scalar(select(User).where(User.id == user_id))
    limit = projects_per_day(user, defaults)
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
    session: AsyncSession, user_id: str, defaults: QuotaSettings, *, now: datetime | None = None
) -> ProjectQuota:
    """The quota, or `QuotaExceeded` saying the limit and when the next project is allowed."""
    now = now or datetime.now(UTC)
    quota = await project_quota(session, user_id, defaults, now=now)
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
