"""Building intents the same way in every producer (bot, API, CLI, console chat)."""

from __future__ import annotations

import uuid
from typing import Literal

from contracts.events import ClarificationAnswered, ProjectRequested

Source = Literal["telegram", "api", "cli", "console"]


def project_request(
    description: str, *, user_id: str, source: Source, chat_id: int | None = None
) -> ProjectRequested:
    """A new project: its id and flow id are chosen here, so the producer can answer at once."""
    flow_id = uuid.uuid4()
    return ProjectRequested(
        correlation_id=flow_id,
        actor=user_id,
        project_id=uuid.uuid4(),
        description=description.strip(),
        user_id=user_id,
        chat_id=chat_id,
        source=source,
    )


def clarification_answer(
    project_id: uuid.UUID, flow_id: uuid.UUID, answer: str, *, user_id: str, source: Source
) -> ClarificationAnswered:
    return ClarificationAnswered(
        correlation_id=flow_id,
        actor=user_id,
        project_id=project_id,
        answer=answer.strip(),
        user_id=user_id,
    )
