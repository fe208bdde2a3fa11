"""The notifier's step: deliver one NotificationRequested to the user's chat.

Progress updates edit one message per project in place; every other kind is a new message.
With no Telegram (no bot token, or a notification without a chat) it goes to the console chat.
Delivery errors are the gateway's to classify (see telegram_chat.py); this module decides only
what to send where.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from consumers.notifier.ports import (
    ChatGateway,
    ConsoleOutput,
    MessageGone,
    ProgressMessage,
    ProgressStore,
)
from consumers.notifier.rendering import render
from contracts.events import NotificationKind, NotificationRequested


@dataclass(frozen=True)
class Delivery:
    """What was done, for the log line of the step."""

    channel: str
    action: str
    message_id: int | None = None


@dataclass(frozen=True)
class Notifier:
    """Delivers notifications; `telegram` is None when the platform has no bot token."""

    console: ConsoleOutput
    telegram: ChatGateway | None = None

    async def deliver(
        self, notification: NotificationRequested, progress: ProgressStore
    ) -> Delivery:
        text = render(notification)
        chat_id = notification.chat_id
        if self.telegram is None or chat_id is None:
            await self.console.write(notification, text)
            return Delivery("console", "printed")
        project_id = notification.project_id
        if notification.kind is NotificationKind.PROGRESS and project_id is not None:
            return await self._progress(
                self.telegram, notification, project_id, chat_id, text, progress
            )
        message_id = await self.telegram.send(chat_id, text)
        return Delivery("telegram", "sent", message_id)

    @staticmethod
    async def _progress(
        telegram: ChatGateway,
        notification: NotificationRequested,
        project_id: uuid.UUID,
        chat_id: int,
        text: str,
        progress: ProgressStore,
    ) -> Delivery:
        known = await progress.get(project_id)
        if known is not None and known.chat_id == chat_id:
            # Notifications are handled concurrently and redelivered out of order; an update
            # older than the one on screen must not roll the checklist back.
            if known.updated_at > notification.occurred_at:
                return Delivery("telegram", "skipped-stale", known.message_id)
            try:
                await telegram.edit(chat_id, known.message_id, text)
            except MessageGone:
                pass
            else:
                await progress.save(
                    project_id,
                    ProgressMessage(chat_id, known.message_id, notification.occurred_at),
                )
                return Delivery("telegram", "edited", known.message_id)
        message_id = await telegram.send(chat_id, text)
        await progress.save(
            project_id,
            ProgressMessage(chat_id, message_id, notification.occurred_at),
        )
        return Delivery("telegram", "sent", message_id)
