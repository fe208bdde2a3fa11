"""Where the analyst's LLM spend goes: `llm_usage` rows and the cost metrics.

The rows are added to the step's session, so they commit with the inbox record and the
outcome event: a redelivered request that was already handled never counts twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import LlmUsage
from infra.metrics import record_llm_usage

from .service import LLMCall

STAGE = "analyst"


def record_usage(
    session: AsyncSession, project_id: uuid.UUID, event_id: uuid.UUID, calls: Sequence[LLMCall]
) -> None:
    for call in calls:
        session.add(
            LlmUsage(
                project_id=project_id,
                stage=STAGE,
                model=call.model,
                prompt_tokens=call.usage.prompt_tokens,
                completion_tokens=call.usage.completion_tokens,
                cost_usd=Decimal(str(call.cost_usd)),
                event_id=event_id,
            )
        )
        record_llm_usage(
            project=str(project_id),
            stage=STAGE,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            cost_usd=call.cost_usd,
        )
