"""How much LLM money a project and its owner may still spend, from the `llm_usage` ledger.

Two budgets bound every model call, whichever stage makes it (analyst, engineer):

- per project: `projects.llm_budget_usd`, else `ORCH_QUOTAS__LLM_USD_PER_PROJECT`, against
  everything the project ever spent (all stages, all revisions);
- per user and calendar month (UTC): `users.llm_budget_usd_month`, else
  `ORCH_QUOTAS__LLM_USD_PER_USER_MONTH`, against what all the user's projects spent this month.

The check runs before each call (the engineer's metering proxy, the analyst's LLM path), and
every call is written to `llm_usage` as it happens, so a budget is overrun by at most the one
call that crossed it. A spent budget is not an error of the platform: the caller turns the
reason into the project's failure, which names the admin command that raises the budget.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import LlmUsage, Project, User
from infra.settings import QuotaSettings


class LLMBudgetExhausted(Exception):
    """A budget is spent; the message says which, how much, and how an admin raises it."""


@dataclass(frozen=True)
class BudgetStatus:
    """Spend against both limits for one project at one moment."""

    project_id: uuid.UUID
    project_spent: Decimal
    project_limit: Decimal
    user_id: str | None
    user_spent_month: Decimal
    user_limit_month: Decimal

    def refusal(self) -> str | None:
        """Why no further call may be made, or None while both budgets have money left."""
        if self.project_spent >= self.project_limit:
            return (
                f"LLM budget of ${self.project_limit:.2f} for this project is spent "
                f"(${self.project_spent:.2f} used); an admin can raise it with "
                f"`orchestrator users set-project-budget {self.project_id} USD`"
            )
        if self.user_id is not None and self.user_spent_month >= self.user_limit_month:
            return (
                f"LLM budget of ${self.user_limit_month:.2f} per month for user {self.user_id} "
                f"is spent (${self.user_spent_month:.2f} used this month); an admin can raise "
                f"it with `orchestrator users set-budget {self.user_id} USD`"
            )
        return None


def month_start(now: datetime) -> datetime:
    """Midnight UTC of the first day of `now`'s month: when a user's monthly budget resets."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def budget_status(
    session: AsyncSession,
    project_id: uuid.UUID,
    quotas: QuotaSettings,
    *,
    now: datetime | None = None,
) -> BudgetStatus:
    """Both budgets of `project_id` and what was spent against them.

    A project id the database does not know (a test harness, a project created elsewhere)
    has only the configured per-project budget: with no owner there is no monthly budget.
    """
    owner = (
        await session.execute(
            select(Project.llm_budget_usd, Project.user_id, User.llm_budget_usd_month)
            .outerjoin(User, User.id == Project.user_id)
            .where(Project.id == project_id)
        )
    ).one_or_none()
    project_spent = await session.scalar(
        select(func.coalesce(func.sum(LlmUsage.cost_usd), 0)).where(
            LlmUsage.project_id == project_id
        )
    )
    project_limit = _limit(owner[0] if owner else None, quotas.llm_usd_per_project)
    user_id = str(owner[1]) if owner else None
    user_spent = Decimal(0)
    if user_id is not None:
        since = month_start(now or datetime.now(UTC))
        user_spent = Decimal(
            await session.scalar(
                select(func.coalesce(func.sum(LlmUsage.cost_usd), 0))
                .join(Project, Project.id == LlmUsage.project_id)
                .where(Project.user_id == user_id, LlmUsage.created_at >= since)
            )
            or 0
        )
    return BudgetStatus(
        project_id=project_id,
        project_spent=Decimal(project_spent or 0),
        project_limit=project_limit,
        user_id=user_id,
        user_spent_month=user_spent,
        user_limit_month=_limit(owner[2] if owner else None, quotas.llm_usd_per_user_month),
    )


async def ensure_budget_left(
    session: AsyncSession, project_id: uuid.UUID, quotas: QuotaSettings
) -> None:
    """Raise `LLMBudgetExhausted` when the project or its owner has no LLM budget left."""
    reason = (await budget_status(session, project_id, quotas)).refusal()
    if reason is not None:
        raise LLMBudgetExhausted(reason)


def _limit(override: Decimal | None, default: float) -> Decimal:
    return Decimal(override) if override is not None else Decimal(str(default))
