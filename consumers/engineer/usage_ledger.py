"""Where the engineer's LLM spend goes: `llm_usage` rows and the cost metrics.

The rows join the step's session, so they commit with the inbox record and the outcome
event: a redelivered request that was already handled never counts twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from consumers.engineer.agent import LLMUsage
from infra.db.models import LlmUsage
from infra.metrics import record_llm_usage

STAGE = "engineer"


def record_usage(
    session: AsyncSession, project_id: uuid.UUID, event_id: uuid.UUID, usage: Sequence[LLMUsage]
) -> None:
    for item in usage:
        session.add(
            LlmUsage(
                project_id=project_id,
                stage=STAGE,
                model=item.model,
                prompt_tokens=item.prompt_tokens,
                completion_tokens=item.completion_tokens,
                cost_usd=item.cost_usd,
                event_id=event_id,
            )
        )
        record_llm_usage(
            project=str(project_id),
            stage=STAGE,
            prompt_tokens=item.prompt_tokens,
            completion_tokens=item.completion_tokens,
            cost_usd=float(item.cost_usd),
        )
