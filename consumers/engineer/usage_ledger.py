"""The engineer's LLM spend, recorded in the step's transaction (see `infra.llm_usage`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from consumers.engineer.agent import LLMUsage
from infra.llm_usage import record_llm_call

STAGE = "engineer"


def record_usage(
    session: AsyncSession, project_id: uuid.UUID, event_id: uuid.UUID, usage: Sequence[LLMUsage]
) -> None:
    for item in usage:
        record_llm_call(
            session,
            project_id=project_id,
            event_id=event_id,
            stage=STAGE,
            model=item.model,
            prompt_tokens=item.prompt_tokens,
            completion_tokens=item.completion_tokens,
            cost_usd=item.cost_usd,
        )
