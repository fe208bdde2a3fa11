"""The analyst's LLM spend, recorded in the step's transaction (see `infra.llm_usage`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from infra.llm_usage import record_llm_call

from .service import LLMCall

STAGE = "analyst"


def record_usage(
    session: AsyncSession, project_id: uuid.UUID, event_id: uuid.UUID, calls: Sequence[LLMCall]
) -> None:
    for call in calls:
        record_llm_call(
            session,
            project_id=project_id,
            event_id=event_id,
            stage=STAGE,
            model=call.model,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            cost_usd=Decimal(str(call.cost_usd)),
        )
