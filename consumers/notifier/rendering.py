"""How a notification reads in a chat: one function per kind, plain text (no parse mode).

Plain text is deliberate: user descriptions and error reasons end up in these messages, and
Markdown or HTML parse modes would make Telegram reject a message over a stray `_` or `<`.
"""

from __future__ import annotations

import uuid

from contracts.events import NotificationKind, NotificationRequested, StepState

#: Telegram's limit for one message's text.
MAX_MESSAGE_LENGTH = 4096

OFFLINE_MARKER = "🔌 offline mode: no LLM provider configured, rules and templates at work"

STEP_ICONS: dict[StepState, str] = {
    StepState.DONE: "✅",
    StepState.RUNNING: "⏳",
    StepState.PENDING: "▫️",
    StepState.FAILED: "❌",
}

_KIND_PREFIX: dict[NotificationKind, str] = {
    NotificationKind.FAILURE: "❌ ",
    NotificationKind.DONE: "✅ ",
    NotificationKind.INFO: "ℹ️ ",  # noqa: RUF001 - the information emoji, not a letter
}


def render(notification: NotificationRequested) -> str:
    """The text the user sees for `notification`, within Telegram's length limit."""
    if notification.kind is NotificationKind.PROGRESS:
        body = _progress(notification)
    elif notification.kind is NotificationKind.QUESTION:
        body = _question(notification.text, notification.project_id)
    else:
        body = _KIND_PREFIX[notification.kind] + notification.text
    # The marker is appended after trimming so a long text can never push it out.
    marker = f"\n\n{OFFLINE_MARKER}" if notification.offline else ""
    return _fit(body, MAX_MESSAGE_LENGTH - len(marker)) + marker


def _progress(notification: NotificationRequested) -> str:
    checklist = "\n".join(f"{STEP_ICONS[s.state]} {s.step}" for s in notification.steps)
    return f"{notification.text}\n\n{checklist}" if checklist else notification.text


def _question(text: str, project_id: uuid.UUID | None) -> str:
    # The full project id stays in the text: a reply carries the replied-to text, which is
    # how the bot knows which project an answer belongs to without any shared state.
    if project_id is None:
        return f"❓ {text}"
    return f"❓ Question about project {project_id}:\n{text}\n\nReply to this message to answer."


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"
