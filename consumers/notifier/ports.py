"""What the notifier needs from the world: a chat to send to, a console, a memory of messages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from contracts.events import NotificationRequested


class MessageGone(Exception):
    """The message to edit no longer exists (the user deleted it); send a new one instead."""


class ChatGateway(Protocol):
    """A chat service that can send a message and edit one it sent (Telegram)."""

    async def send(self, chat_id: int, text: str) -> int:
        """Send `text`; returns the new message's id."""
        ...

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        """Replace the text of a sent message; raises MessageGone when it no longer exists.

        An edit to the same text is a success: a redelivered progress update converges.
        """
        ...


class ConsoleOutput(Protocol):
    """The console chat of the embedded stack, used when there is no Telegram to talk to."""

    async def write(self, notification: NotificationRequested, text: str) -> None: ...


@dataclass(frozen=True)
class ProgressMessage:
    """Where a project's progress message lives, and the time of the update it shows."""

    chat_id: int
    message_id: int
    updated_at: datetime


class ProgressStore(Protocol):
    """Remembers the one progress message per project, so updates edit it in place."""

    async def get(self, project_id: uuid.UUID) -> ProgressMessage | None:
        """The project's progress message; holds the project's updates back until commit."""
        ...

    async def save(self, project_id: uuid.UUID, message: ProgressMessage) -> None: ...
