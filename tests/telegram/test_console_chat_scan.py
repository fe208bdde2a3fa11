"""`orchestrator chat`, the console twin of the bot, refuses a pasted credential the same way:
typed lines go to the real JetStream stream, except one carrying a credential."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from nats.aio.client import Client

from infra.bus.publisher import JetStreamPublisher
from producers.console_chat import run_console_chat
from tests.telegram.test_secrets import GITHUB_TOKEN, bus_messages


async def test_a_typed_credential_is_refused_and_an_honest_line_is_sent(
    nc: Client, tmp_path: Path
) -> None:
    keyboard = asyncio.StreamReader()
    screen = io.StringIO()
    chat = asyncio.create_task(
        run_console_chat(
            JetStreamPublisher.from_client(nc), tmp_path, keyboard, screen, user_id="cli:tester"
        )
    )
    before = await bus_messages(nc)

    keyboard.feed_data(f"Mirror my repositories with {GITHUB_TOKEN}\n".encode())
    keyboard.feed_data(b"A todo list API\n/quit\n")
    await asyncio.wait_for(chat, 10)

    shown = screen.getvalue()
    assert "contains a credential (GitHub Token)" in shown
    assert "orchestrator secrets set" in shown
    assert GITHUB_TOKEN not in shown
    assert shown.count("accepted") == 1
    assert await bus_messages(nc) == before + 1
