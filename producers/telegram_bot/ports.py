"""What the bot needs besides Telegram: a way to publish intents and to read projects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from producers.read_model import ProjectView


class ProjectReadModel(Protocol):
    """Read-only view of `projects` and `project_events`, limited to one user's projects."""

    async def project(self, user_id: str, ref: str) -> ProjectView | None:
        """The user's project by id, id prefix or slug, with its timeline; None if not theirs."""
        ...

    async def projects(self, user_id: str) -> Sequence[ProjectView]:
        """The user's projects, newest first, without timelines."""
        ...

    async def awaiting_answer(self, user_id: str) -> ProjectView | None:
        """The user's newest project that waits for an answer to a question, if any."""
        ...
