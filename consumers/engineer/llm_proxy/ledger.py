"""Where the proxy asks whether a call may go ahead, and where it writes what a call cost.

`DatabaseLedger` writes one `llm_usage` row per call in its own transaction the moment the
call's response has been read, so a run that crashes, times out or is killed keeps the record
of every call it made. The rows carry the id of the event that started the run; they are
not written again by the step's own transaction (a redelivered request that runs again really
makes new calls, and those are counted; one that was already handled makes none).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.llm_budget import budget_status
from infra.llm_usage import record_llm_call
from infra.settings import QuotaSettings


@dataclass(frozen=True)
class MeteredCall:
    """One forwarded call, priced."""

    index: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


class Ledger(Protocol):
    """The proxy's view of the budget and the usage ledger."""

    async def refusal(self) -> str | None:
        """Why the next call must be refused (budget spent), or None to let it through."""
        ...

    async def record(self, call: MeteredCall) -> None:
        """Persist one call's usage now."""
        ...


class DatabaseLedger:
    """`llm_usage` rows and the budgets of `infra.llm_budget`, for one run of one project."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        project_id: uuid.UUID,
        event_id: uuid.UUID,
        stage: str,
        quotas: QuotaSettings,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._project_id = project_id
        self._event_id = event_id
        self._stage = stage
        self._quotas = quotas

    async def refusal(self) -> str | None:
        async with self._sessionmaker() as session:
            return (await budget_status(session, self._project_id, self._quotas)).refusal()

    async def record(self, call: MeteredCall) -> None:
        async with self._sessionmaker() as session, session.begin():
            record_llm_call(
                session,
                project_id=self._project_id,
                event_id=self._event_id,
                stage=self._stage,
                model=call.model,
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                cost_usd=call.cost_usd,
            )
