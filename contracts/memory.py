"""The memory search request and its reply: core NATS request/reply with the indexer.

Why request/reply and not a stream: a search is a question asked while a step runs, answered
at once or not at all. Nothing is stored, nothing is redelivered, and a step that gets no
answer goes on without memory. The indexer holds the store (qdrant-client's local mode lets
one process open it), so the analyst and the engineer ask it on `MEMORY_SEARCH_SUBJECT`
(`contracts.topology`) in every deployment, with a Qdrant server too.

The request names the scope (`user_id`, optionally `project_id`); the indexer always filters by
it. Only the analyst's and engineer's NATS users may publish the request.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.fields import MAX_NAME, MAX_TEXT, UserId

#: What a point remembers (the values of `infra.memory.MemoryKind`).
MemoryKindName = Literal["spec", "spec_revision", "outcome", "answer", "code"]

#: The most hits one search returns: enough for a prompt, small enough for one NATS message.
MAX_HITS = 20


class MemorySearchRequest(BaseModel):
    """A step asks for the scope's memory that best matches its text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: UserId = Field(description="Whose memory: the project's owner; always filtered on")
    project_id: uuid.UUID | None = Field(
        None, description="Only this project's memory; none means every project of the user"
    )
    text: str = Field(description="What to look for", min_length=1, max_length=MAX_TEXT)
    kinds: tuple[MemoryKindName, ...] = Field(
        (), description="Only these kinds of memory; empty means every kind", max_length=5
    )
    limit: int = Field(5, description="At most this many hits", ge=1, le=MAX_HITS)


class MemorySearchHit(BaseModel):
    """One remembered text, with where it came from."""

    model_config = ConfigDict(frozen=True)

    score: float = Field(description="Relevance; higher is better, only comparable in one reply")
    project_id: uuid.UUID = Field(description="The project it belongs to")
    kind: MemoryKindName = Field(description="What it is")
    source_id: str = Field(description="What it came from: an event id, a revision, a file path")
    text: str = Field(description="The remembered text (a code chunk is a window of lines)")
    path: str | None = Field(None, description="Code only: the file's path in the repository")
    commit: str | None = Field(None, description="Code only: the released commit it was read at")
    start_line: int | None = Field(None, description="Code only: first line (1-based)")
    end_line: int | None = Field(None, description="Code only: last line (inclusive)")


class MemorySearchReply(BaseModel):
    """The indexer's answer: hits best first, or why it could not search."""

    model_config = ConfigDict(frozen=True)

    hits: tuple[MemorySearchHit, ...] = Field((), description="Best first; empty when none match")
    error: str | None = Field(
        None,
        description="Set when the request was refused or the store failed",
        max_length=MAX_NAME,
    )
