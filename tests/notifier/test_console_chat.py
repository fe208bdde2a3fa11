"""`orchestrator chat` round trip: typed lines become intents on the real stream, and the
notifier process (no bot token) brings the pipeline's question back into the chat."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client

from consumers.notifier.app import build_app
from contracts.events import (
    ClarificationAnswered,
    NotificationKind,
    NotificationRequested,
    ProjectRequested,
)
from contracts.topology import INTENTS
from infra.bus.publisher import JetStreamPublisher
from infra.stack.nats_server import NatsServer
from producers.console_chat import run_console_chat
from tests.notifier.conftest import process_settings, running


async def no_token() -> None:
    return None


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_console_chat_round_trip(
    nc: Client, fresh_nats: NatsServer, migrated_url: str, tmp_path: Path
) -> None:
    notifier = build_app(
        process_settings(fresh_nats.url, migrated_url, tmp_path),
        token_source=no_token,
        stdout=io.StringIO(),
    )
    publisher = JetStreamPublisher.from_client(nc)
    keyboard = asyncio.StreamReader()
    screen = io.StringIO()
    js = nc.jetstream()

    async with running(notifier):
        chat = asyncio.create_task(
            run_console_chat(publisher, tmp_path, keyboard, screen, user_id="cli:tester")
        )

        keyboard.feed_data(b"/help\n/deploy\n/answer abc yes\n/new\nA todo list API\n")
        await eventually(lambda: "accepted" in screen.getvalue())
        accepted = re.search(r"Project ([0-9a-f-]{36}) accepted", screen.getvalue())
        assert accepted
        requested = ProjectRequested.model_validate_json(
            (await js.get_last_msg(INTENTS.name, ProjectRequested.TYPE)).data or b""
        )
        assert requested.project_id == uuid.UUID(accepted.group(1))
        assert (requested.source, requested.chat_id, requested.user_id) == (
            "console",
            None,
            "cli:tester",
        )
        assert requested.description == "A todo list API"

        # The pipeline asks; the notifier has no bot, so the question lands in this chat.
        await publisher.publish(
            NotificationRequested(
                correlation_id=requested.correlation_id,
                actor="coordinator",
                project_id=requested.project_id,
                user_id="cli:tester",
                kind=NotificationKind.QUESTION,
                text="Should todos have due dates?",
                offline=True,
            )
        )
        await eventually(lambda: "(type your answer)" in screen.getvalue())
        keyboard.feed_data(b"yes, and reminders\n")
        await eventually(lambda: "your answer went to project" in screen.getvalue())
        keyboard.feed_data(b"/quit\n")
        await asyncio.wait_for(chat, 5)

    answered = ClarificationAnswered.model_validate_json(
        (await js.get_last_msg(INTENTS.name, ClarificationAnswered.TYPE)).data or b""
    )
    assert (answered.project_id, answered.answer) == (requested.project_id, "yes, and reminders")
    assert answered.correlation_id == requested.correlation_id
    shown = screen.getvalue()
    assert "/answer <project> <text>" in shown
    assert "Unknown command /deploy" in shown
    assert "No open question for a project starting with abc." in shown
    assert "Usage: /new <description>" in shown
    assert (await nc.jsm().stream_info(INTENTS.name)).state.messages == 2
    assert f"[{str(requested.project_id)[:8]}] ❓ Question about project" in shown
    assert "Should todos have due dates?" in shown
    assert "offline mode" in shown
