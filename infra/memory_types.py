"""What a memory search is about and what it answers: kinds, scope, hit.

Kept apart from `infra.memory` (the Qdrant store) so that code which only reads answers, such as
the coding agent in its network-less container (`consumers/engineer/coder_image.py` copies
this module, not the store, and the image has no qdrant-client), needs nothing of the store.
`infra.memory` re-exports all three.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class MemoryKind(StrEnum):
    SPEC = "spec"
    SPEC_REVISION = "spec_revision"
    OUTCOME = "outcome"
    ANSWER = "answer"
    CODE = "code"


@dataclass(frozen=True)
class Scope:
    """Whose memory a search sees: always one user, optionally one of their projects."""

    user_id: str
    project_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if not self.user_id:
            raise ValueError("a memory scope needs a user id; there is no unscoped search")


@dataclass(frozen=True)
class MemoryHit:
    score: float
    project_id: uuid.UUID
    kind: MemoryKind
    source_id: str
    text: str
    path: str | None
    commit: str | None
    start_line: int | None
    end_line: int | None
