"""The notifier's step against a real aiogram Bot, a fake Bot API server and real PostgreSQL."""

from __future__ import annotations

import io
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from aiogram import Bot
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.notifier.console_output import ConsoleChatFile
from consumers.notifier.progress_store import SqlProgressStore
from consumers.notifier.rendering import OFFLINE_MARKER
from consumers.notifier.service import Delivery, Notifier
from consumers.notifier.telegram_chat import RecipientUnreachable, TelegramChat, TelegramUnavailable
from contracts.events import NotificationKind, NotificationRequested, StepState, StepStatus
from infra.bus.runtime import PermanentError, TransientError
from tests.fakes.telegram_api import FakeTelegramAPI

CHAT = 777
STEPS = ("spec", "resources", "repo", "code", "deploy")


def progress(project_id: uuid.UUID, done: int, *, offline: bool = False) -> NotificationRequested:
    """A progress update with the first `done` steps done and the next one running."""
    states = [
        StepState.DONE if i < done else StepState.RUNNING if i == done else StepState.PENDING
        for i in range(len(STEPS))
    ]
    return NotificationRequested(
        correlation_id=project_id,
        actor="coordinator",
        project_id=project_id,
        user_id=f"telegram:{CHAT}",
        chat_id=CHAT,
        kind=NotificationKind.PROGRESS,
        text="Project todo-api",
        steps=tuple(StepStatus(step=s, state=st) for s, st in zip(STEPS, states, strict=True)),
        offline=offline,
    )


def message(
    kind: NotificationKind, text: str, *, chat_id: int | None = CHAT
) -> NotificationRequested:
    project_id = uuid.uuid4()
    return NotificationRequested(
        correlation_id=project_id,
        actor="coordinator",
        project_id=project_id,
        user_id=f"telegram:{CHAT}",
        chat_id=chat_id,
        kind=kind,
        text=text,
        offline=True,
    )


async def deliver(
    notifier: Notifier,
    sessionmaker: async_sessionmaker[AsyncSession],
    notification: NotificationRequested,
) -> Delivery:
    """One step as the runtime runs it: the delivery inside one committed transaction."""
    async with sessionmaker() as session, session.begin():
        return await notifier.deliver(notification, SqlProgressStore(session))


@pytest.fixture
def notifier(bot: Bot, tmp_path: Path) -> Notifier:
    return Notifier(console=ConsoleChatFile(tmp_path, io.StringIO()), telegram=TelegramChat(bot))


async def test_progress_edits_one_message_in_place(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    project_id = uuid.uuid4()
    for done in range(4):
        await deliver(notifier, sessionmaker, progress(project_id, done, offline=True))

    sent = telegram.calls_of("sendMessage")
    edits = telegram.calls_of("editMessageText")
    assert len(sent) == 1
    assert len(edits) == 3
    message_id = (
        telegram.calls_of("sendMessage")[0].params["chat_id"] and edits[0].params["message_id"]
    )
    assert {e.params["message_id"] for e in edits} == {message_id}
    shown = telegram.text_of(CHAT, message_id)
    assert shown is not None
    assert "✅ spec\n✅ resources\n✅ repo\n⏳ code\n▫️ deploy" in shown
    assert OFFLINE_MARKER in shown


async def test_redelivered_progress_counts_as_delivered(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    project_id = uuid.uuid4()
    await deliver(notifier, sessionmaker, progress(project_id, 0))
    update = progress(project_id, 1)
    await deliver(notifier, sessionmaker, update)

    # Same text again: Telegram answers "message is not modified", which is success.
    result = await deliver(notifier, sessionmaker, update)

    assert result.action == "edited"
    assert len(telegram.calls_of("sendMessage")) == 1
    assert len(telegram.calls_of("editMessageText")) == 2


async def test_an_older_update_never_rolls_the_checklist_back(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    project_id = uuid.uuid4()
    newer = progress(project_id, 2)
    older = progress(project_id, 1).model_copy(
        update={"occurred_at": newer.occurred_at - timedelta(seconds=5)}
    )
    await deliver(notifier, sessionmaker, newer)

    result = await deliver(notifier, sessionmaker, older)

    assert result.action == "skipped-stale"
    assert telegram.calls_of("editMessageText") == []


async def test_a_deleted_progress_message_is_sent_again(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    project_id = uuid.uuid4()
    await deliver(notifier, sessionmaker, progress(project_id, 0))
    telegram.fail_next("editMessageText", description="Bad Request: message to edit not found")

    result = await deliver(notifier, sessionmaker, progress(project_id, 1))
    following = await deliver(notifier, sessionmaker, progress(project_id, 2))

    assert result.action == "sent"
    assert following == Delivery("telegram", "edited", result.message_id)


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [
        (NotificationKind.FAILURE, "❌ "),
        (NotificationKind.DONE, "✅ "),
        (NotificationKind.INFO, "ℹ️ "),  # noqa: RUF001 - the information emoji
    ],
)
async def test_other_kinds_are_new_messages_marked_offline(
    notifier: Notifier,
    telegram: FakeTelegramAPI,
    sessionmaker: async_sessionmaker[AsyncSession],
    kind: NotificationKind,
    prefix: str,
) -> None:
    await deliver(notifier, sessionmaker, message(kind, "first"))
    await deliver(notifier, sessionmaker, message(kind, "second"))

    texts = [call.params["text"] for call in telegram.calls_of("sendMessage")]
    assert [t.split("\n")[0] for t in texts] == [f"{prefix}first", f"{prefix}second"]
    assert all(t.endswith(OFFLINE_MARKER) for t in texts)


async def test_a_question_names_its_project_so_a_reply_can_answer_it(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    question = message(NotificationKind.QUESTION, "Which database should it use?")

    await deliver(notifier, sessionmaker, question)

    (call,) = telegram.calls_of("sendMessage")
    assert f"project {question.project_id}" in call.params["text"]
    assert "Which database should it use?" in call.params["text"]


async def test_flood_control_is_waited_out_within_the_step(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    telegram.rate_limit_next("sendMessage", times=1, retry_after=1)
    started = time.monotonic()

    result = await deliver(notifier, sessionmaker, message(NotificationKind.INFO, "hello"))

    assert result.action == "sent"
    assert time.monotonic() - started >= 1.0
    assert len(telegram.calls_of("sendMessage")) == 2


async def test_flood_control_beyond_the_bound_is_transient(
    bot: Bot,
    telegram: FakeTelegramAPI,
    tmp_path: Path,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    impatient = Notifier(
        console=ConsoleChatFile(tmp_path, io.StringIO()),
        telegram=TelegramChat(bot, max_wait_seconds=0.5),
    )
    telegram.rate_limit_next("sendMessage", times=1, retry_after=1)

    with pytest.raises(TelegramUnavailable, match="throttles sendMessage") as raised:
        await deliver(impatient, sessionmaker, message(NotificationKind.INFO, "hello"))

    assert isinstance(raised.value, TransientError)


async def test_a_blocked_bot_or_missing_chat_is_permanent(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    telegram.block_chat(CHAT)
    with pytest.raises(RecipientUnreachable, match="blocked by the user") as blocked:
        await deliver(notifier, sessionmaker, message(NotificationKind.INFO, "hello"))
    assert isinstance(blocked.value, PermanentError)

    telegram.fail_next("sendMessage", description="Bad Request: chat not found")
    with pytest.raises(RecipientUnreachable, match="chat not found"):
        await deliver(notifier, sessionmaker, message(NotificationKind.INFO, "hi", chat_id=5))


async def test_other_telegram_errors_are_transient(
    notifier: Notifier, telegram: FakeTelegramAPI, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    telegram.fail_next("sendMessage", status=502, description="Bad Gateway")

    with pytest.raises(TelegramUnavailable, match="Bad Gateway"):
        await deliver(notifier, sessionmaker, message(NotificationKind.INFO, "hello"))


async def test_without_a_chat_it_goes_to_the_console_chat(
    bot: Bot,
    telegram: FakeTelegramAPI,
    tmp_path: Path,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    stdout = io.StringIO()
    notifier = Notifier(console=ConsoleChatFile(tmp_path, stdout), telegram=TelegramChat(bot))
    note = message(NotificationKind.DONE, "Deployed at http://127.0.0.1:20001", chat_id=None)

    result = await deliver(notifier, sessionmaker, note)

    assert result == Delivery("console", "printed")
    assert telegram.calls == []
    line = (tmp_path / "console-chat.jsonl").read_text().splitlines()
    assert len(line) == 1
    assert str(note.event_id) in line[0]
    assert "✅ Deployed at http://127.0.0.1:20001" in stdout.getvalue()
    assert "offline mode" in stdout.getvalue()
