"""What the bot needs besides Telegram: a way to publish intents, read projects, keep secrets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Protocol

from producers.read_model import ProjectView


class ProjectReadModel(Protocol):
    """Read-only view of `projects` and `project_events`, limited to one owner's projects
    (`owner=None`: everyone's, for an admin)."""

    async def project(self, owner: str | None, ref: str) -> ProjectView | None:
        """The owner's project by id, id prefix or slug, with its timeline; None if not theirs."""
        ...

    async def projects(self, owner: str | None) -> Sequence[ProjectView]:
        """The owner's projects, newest first, without timelines."""
        ...

    async def secret_names(self, project_id: uuid.UUID) -> tuple[str, ...]:
        """The secret variables the project's spec needs (names only)."""
        ...

    async def awaiting_answer(self, user_id: str) -> ProjectView | None:
        """The user's newest project that waits for an answer to a question, if any."""
        ...

    async def change_refusal(self, project_id: uuid.UUID) -> str | None:
        """Why the project cannot take a change request now; None when it can."""
        ...

    async def revision_question_open(self, project_id: uuid.UUID) -> bool:
        """True while a question about the project's change request waits for an answer."""
        ...


class ProjectSecrets(Protocol):
    """Vault as the bot uses it: write a project's secret, list which ones are stored."""

    async def write_secret(self, path: str, data: Mapping[str, str]) -> None: ...

    async def list_secrets(self, path: str) -> list[str]: ...
