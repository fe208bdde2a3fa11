"""The console chat's file: where the notifier writes and the console chat and demo read.

The embedded stack has no Telegram; notifications for a chat-less user are appended, one JSON
line each, to `<state_dir>/console-chat.jsonl`. The format lives here, in the platform, because
a consumer (the notifier) writes it and producers (the console chat, `orchestrator demo`) read it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import NotificationRequested

CONSOLE_CHAT_FILENAME = "console-chat.jsonl"


def console_chat_path(state_dir: Path) -> Path:
    """Where the notifier appends console notifications and the chat reads them."""
    return state_dir / CONSOLE_CHAT_FILENAME


class ConsoleChatLine(BaseModel):
    """One line of `console-chat.jsonl`: the notification and the text a person reads."""

    model_config = ConfigDict(frozen=True)

    notification: NotificationRequested = Field(description="The notification as requested")
    text: str = Field(description="The rendered text, as a chat would show it")
