"""The notifier process end to end: events on the real NOTIFY stream, delivered by the real
consumer runtime to the fake Bot API, or to the console chat when there is no bot token."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import Callable
from pathlib import Path

from aiogram.client.telegram import TelegramAPIServer
from nats.aio.client import Client

from consumers.notifier.app import build_app
from contracts.events import NotificationKind, NotificationRequested, StepState, StepStatus
from infra.bus.publisher import JetStreamPublisher
from infra.stack.nats_server import NatsServer
from tests.fakes.telegram_api import Call, FakeTelegramAPI
from tests.notifier.conftest import BOT_TOKEN, process_settings, running

CHAT = 31337


async def with_token() -> str:
    return BOT_TOKEN


async def without_token() -> None:
    return None


def delivered_at_least(count: int) -> Callable[[list[Call]], bool]:
    """Whether `count` messages were sent or edited so far."""

    def check(calls: list[Call]) -> bool:
        return len([c for c in calls if c.method in ("sendMessage", "editMessageText")]) >= count

    return check


def progress(project_id: uuid.UUID, running_step: int) -> NotificationRequested:
    steps = ("spec", "resources", "repo")
    return NotificationRequested(
        correlation_id=project_id,
        actor="coordinator",
        project_id=project_id,
        user_id=f"telegram:{CHAT}",
        chat_id=CHAT,
        kind=NotificationKind.PROGRESS,
        text="Project shop",
        steps=tuple(
            StepStatus(
                step=step,
                state=StepState.DONE
                if i < running_step
                else StepState.RUNNING
                if i == running_step
                else StepState.PENDING,
            )
            for i, step in enumerate(steps)
        ),
    )


async def test_progress_is_edited_in_place_and_redelivery_sends_nothing_twice(
    nc: Client, fresh_nats: NatsServer, migrated_url: str, telegram: FakeTelegramAPI, tmp_path: Path
) -> None:
    app = build_app(
        process_settings(fresh_nats.url, migrated_url, tmp_path),
        token_source=with_token,
        telegram_api=TelegramAPIServer.from_base(telegram.base_url),
    )
    publisher = JetStreamPublisher.from_client(nc)
    project_id = uuid.uuid4()
    updates = [progress(project_id, step) for step in range(3)]

    async with running(app):
        for count, update in enumerate(updates, start=1):
            await publisher.publish(update)
            # The checklist moves in order, as the coordinator emits it.
            await telegram.wait_for(delivered_at_least(count))
        # A redelivered event (same id, outside the stream's duplicate window) is dropped by
        # the inbox: nothing more reaches Telegram.
        await JetStreamPublisher(nc.jetstream()).publish_raw(
            updates[0].subject_name(),
            updates[0].model_dump_json().encode(),
            {"Nats-Msg-Id": f"{updates[0].event_id}-again"},
        )
        await asyncio.sleep(1.5)

    (sent,) = telegram.calls_of("sendMessage")
    edits = telegram.calls_of("editMessageText")
    assert len(edits) == 2
    message_id = edits[0].params["message_id"]
    assert {e.params["message_id"] for e in edits} == {message_id}
    assert telegram.text_of(CHAT, message_id) == "Project shop\n\n✅ spec\n✅ resources\n⏳ repo"
    assert sent.params["text"].endswith("⏳ spec\n▫️ resources\n▫️ repo")


async def test_flood_control_is_honoured_by_the_running_process(
    nc: Client, fresh_nats: NatsServer, migrated_url: str, telegram: FakeTelegramAPI, tmp_path: Path
) -> None:
    app = build_app(
        process_settings(fresh_nats.url, migrated_url, tmp_path),
        token_source=with_token,
        telegram_api=TelegramAPIServer.from_base(telegram.base_url),
    )
    telegram.rate_limit_next("sendMessage", times=2, retry_after=1)
    done = NotificationRequested(
        correlation_id=uuid.uuid4(),
        actor="coordinator",
        user_id=f"telegram:{CHAT}",
        chat_id=CHAT,
        kind=NotificationKind.DONE,
        text="shop is live at http://127.0.0.1:20001",
    )

    async with running(app):
        await JetStreamPublisher.from_client(nc).publish(done)
        calls = await telegram.wait_for_call("sendMessage", count=3)

    assert [c.params["text"] for c in calls] == ["✅ shop is live at http://127.0.0.1:20001"] * 3
    assert telegram.text_of(CHAT, 1) == "✅ shop is live at http://127.0.0.1:20001"


async def test_without_a_bot_token_notifications_go_to_the_console_chat(
    nc: Client, fresh_nats: NatsServer, migrated_url: str, telegram: FakeTelegramAPI, tmp_path: Path
) -> None:
    stdout = io.StringIO()
    app = build_app(
        process_settings(fresh_nats.url, migrated_url, tmp_path),
        token_source=without_token,
        telegram_api=TelegramAPIServer.from_base(telegram.base_url),
        stdout=stdout,
    )
    project_id = uuid.uuid4()
    question = NotificationRequested(
        correlation_id=project_id,
        actor="coordinator",
        project_id=project_id,
        user_id="cli:tester",
        chat_id=CHAT,  # a chat, but no bot to reach it with
        kind=NotificationKind.QUESTION,
        text="Which database should it use?",
        offline=True,
    )
    journal = tmp_path / "console-chat.jsonl"

    async with running(app):
        await JetStreamPublisher.from_client(nc).publish(question)
        for _ in range(100):
            if journal.exists() and journal.read_text():
                break
            await asyncio.sleep(0.1)

    (line,) = journal.read_text().splitlines()
    record = json.loads(line)
    assert record["notification"]["event_id"] == str(question.event_id)
    assert "Which database should it use?" in record["text"]
    assert "offline mode" in record["text"]
    assert f"[{str(project_id)[:8]}] question:" in stdout.getvalue()
    assert telegram.calls == []
