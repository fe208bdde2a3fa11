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


class Recalled(TypedDict):
    """One piece of the user's earlier projects found in memory: reference, never instruction."""

    project_id: str
    #: A `MemoryKind` value: spec, spec_revision, answer or outcome.
    kind: str
    #: Bounded already (`recall.MAX_RECALLED_CHARS`).
    text: str


class AnalystState(TypedDict, total=False):
    description: str
    #: The user's earlier projects that match the description, best first; searched once when
    #: the flow starts, so a resumed or redelivered round shows the model the same material.
    #: Absent in flows checkpointed before memory existed: read it with `.get(..., [])`.
    recalled: list[Recalled]
    answers: list[str]
    questions: list[str]
    pending: PendingQuestion | None
    #: The finished spec as `ProjectSpec.model_dump(mode="json")`.
    spec: dict[str, object] | None
    failure: str | None
    calls: Annotated[list[CallRecord], operator.add]
