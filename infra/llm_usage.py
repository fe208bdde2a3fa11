"""Where LLM spend goes: one `llm_usage` row per model call, and the cost metrics.

The row is added to the step's session, so it commits with the inbox record and the outcome
event: a redelivered request that was already handled never counts twice.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import LlmUsage
from infra.metrics import record_llm_usage


def record_llm_call(
    session: AsyncSession,
    *,
    project_id: uuid.UUID,
    event_id: uuid.UUID,
    stage: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost_usd: Decimal,
) -> None:
    session.add(
        LlmUsage(
            project_id=project_id,
            stage=stage,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd,
            event_id=event_id,
        )
    )
    record_llm_usage(
        project=str(project_id),
        stage=stage,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=float(cost_usd),
    )
