"""What the analyst graph keeps per project flow (checkpointed in PostgreSQL).

Only plain JSON-like values live here (no pydantic objects), so a checkpoint written by one
version of the code is readable by the next and by the checkpointer's strict deserializer.
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict


class PendingQuestion(TypedDict):
    """A question the analyst decided to ask; the `ask` node pauses the graph with it."""

    question: str
    missing: list[str]


class CallRecord(TypedDict):
    """One LLM call: who answered and what it cost in tokens, for the `llm_usage` table."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    #: How many answers the user had given when the call was made: the outcome of one
    #: SpecRequested reports the calls of its own round only, even when it is redelivered.
    round: int


class AnalystState(TypedDict, total=False):
    description: str
    answers: list[str]
    questions: list[str]
    pending: PendingQuestion | None
    #: The finished spec as `ProjectSpec.model_dump(mode="json")`.
    spec: dict[str, object] | None
    failure: str | None
    calls: Annotated[list[CallRecord], operator.add]
