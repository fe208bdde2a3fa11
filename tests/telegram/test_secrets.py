"""Secrets from the chat go to Vault only; credentials pasted into descriptions go nowhere.

Real long polling against the fake Bot API, the bot's own AppRole on a real OpenBao (its real
policy: it may write project secrets but not read them, so the test reads them back as root),
real JetStream and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram import Bot
from nats.aio.client import Client
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import SecretStored
from contracts.topology import STREAMS, stream_for_subject
from infra.db.models import PendingSecret, Project, ProjectState
from infra.vault import SecretNotFound, VaultClient, project_secret_path
from producers.access import operator
from producers.telegram_bot.router import BotServices
from tests.fakes.telegram_api import BOT_ID, FakeTelegramAPI
from tests.telegram.conftest import ChatUser, SeedProject, new_chat_user, start_bot

VALUE = "tg-value-7f3a9c1e-only-in-vault"

#: Credentials in their providers' formats (AWS's and GitHub's documented example shapes).
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "x1Y2z3A4b5C6d7E8f9G0h1I2j3K4l5M6n7O8"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


async def bus_messages(nc: Client) -> int:
    jsm = nc.jsm()
    return sum([(await jsm.stream_info(s.name)).state.messages for s in STREAMS])


async def last_secret_stored(nc: Client) -> tuple[SecretStored, bytes]:
    subject = SecretStored.TYPE
    msg = await nc.jetstream().get_last_msg(stream_for_subject(subject).name, subject)
    data = msg.data or b""
    return SecretStored.model_validate_json(data), data


def deleted_in(telegram: FakeTelegramAPI, chat_id: int) -> int:
    return len([c for c in telegram.calls_of("deleteMessage") if c.params["chat_id"] == chat_id])


async def test_secret_command_stores_the_next_message_in_vault_and_deletes_it(
    chat: ChatUser,
    telegram: FakeTelegramAPI,
    nc: Client,
    root_vault: VaultClient,
    seed_project: SeedProject,
) -> None:
    project = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="shop")

    question = await chat.say("/secret PAYMENT_API_KEY")
    stored = await chat.say(VALUE)

    assert "Send the value of PAYMENT_API_KEY for project shop" in question
    assert stored.startswith("Stored PAYMENT_API_KEY for project shop")
    assert VALUE not in stored
    assert deleted_in(telegram, chat.chat_id) == 1
    path = project_secret_path(str(project.id), "PAYMENT_API_KEY")
    assert await root_vault.read_secret(path) == {"value": VALUE}
    event, raw = await last_secret_stored(nc)
    assert (event.project_id, event.name, event.vault_path) == (
        project.id,
        "PAYMENT_API_KEY",
        path,
    )
    assert event.actor == chat.user_id
    assert VALUE.encode() not in raw
    # The question was used up: the next message is ordinary text again.
    assert await chat.say("/cancel") == "I was not waiting for a secret."


async def test_the_question_survives_a_restart_and_expires(
    telegram: FakeTelegramAPI,
    bot: Bot,
    services: BotServices,
    sessionmaker: async_sessionmaker[AsyncSession],
    root_vault: VaultClient,
    seed_project: SeedProject,
) -> None:
    user = new_chat_user(telegram)
    await services.directory.allow(operator("tests"), user.user_id)
    project = await seed_project(user.user_id, state=ProjectState.ACTIVE, name="blog")

    stop = await start_bot(bot, services)
    try:
        assert "Send the value of SMTP_PASSWORD" in await user.say("/secret SMTP_PASSWORD")
    finally:
        await stop()
    stop = await start_bot(bot, services)  # a new dispatcher: only the database remembers
    try:
        assert (await user.say(VALUE)).startswith("Stored SMTP_PASSWORD")
        assert "Send the value of SMTP_USER" in await user.say("/secret SMTP_USER")
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(PendingSecret)
                .where(PendingSecret.user_id == user.user_id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        late = await user.say("a landing page for my bakery")
    finally:
        await stop()

    assert await root_vault.read_secret(project_secret_path(str(project.id), "SMTP_PASSWORD")) == {
        "value": VALUE
    }
    assert "accepted" in late  # an expired question does not swallow the next message
    with pytest.raises(SecretNotFound):
        await root_vault.read_secret(project_secret_path(str(project.id), "SMTP_USER"))


async def test_the_project_card_offers_a_button_per_missing_secret(
    chat: ChatUser,
    telegram: FakeTelegramAPI,
    sessionmaker: async_sessionmaker[AsyncSession],
    root_vault: VaultClient,
    seed_project: SeedProject,
) -> None:
    project = await seed_project(chat.user_id, state=ProjectState.FAILED, name="notifier")
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Project)
            .where(Project.id == project.id)
            .values(
                spec={
                    "config": [
                        {"name": "BOT_TOKEN", "secret": True},
                        {"name": "CHANNEL", "secret": False},
                    ]
                }
            )
        )

    card = await chat.say(f"/status {project.id}")
    (markup,) = [
        c.params["reply_markup"]
        for c in telegram.calls_of("sendMessage")
        if c.params.get("chat_id") == chat.chat_id and "reply_markup" in c.params
    ]
    ((button,),) = markup["inline_keyboard"]
    asked = await chat.send_update(
        lambda: telegram.enqueue_update(callback_query(chat, button["callback_data"]))
    )
    stored = await chat.say(VALUE)
    card_after = await chat.say(f"/status {project.id}")

    assert "Missing secrets: BOT_TOKEN" in card and "CHANNEL" not in card
    assert button["text"] == "Set BOT_TOKEN"
    assert "Send the value of BOT_TOKEN for project notifier" in asked
    assert stored.startswith("Stored BOT_TOKEN")
    assert telegram.calls_of("answerCallbackQuery")
    assert await root_vault.read_secret(project_secret_path(str(project.id), "BOT_TOKEN")) == {
        "value": VALUE
    }
    assert "Missing secrets" not in card_after


@pytest.mark.parametrize(
    ("kind", "description"),
    [
        ("AWS Access Key", f"A backup service; use my key {AWS_KEY} for S3"),
        ("GitHub Token", f"Mirror my repos, token {GITHUB_TOKEN}"),
        ("Private Key", f"Deploy over SSH with this key:\n{PRIVATE_KEY}"),
    ],
)
async def test_a_description_with_a_credential_is_refused_deleted_and_never_published(
    chat: ChatUser, telegram: FakeTelegramAPI, nc: Client, kind: str, description: str
) -> None:
    before = await bus_messages(nc)

    reply = await chat.say(description)

    assert f"it looks like it contains a credential ({kind})" in reply
    assert "/secret" in reply
    assert deleted_in(telegram, chat.chat_id) == 1
    assert await bus_messages(nc) == before


async def test_an_answer_with_a_credential_is_refused_too(
    chat: ChatUser, telegram: FakeTelegramAPI, nc: Client, seed_project: SeedProject
) -> None:
    await seed_project(chat.user_id, state=ProjectState.AWAITING_ANSWER)
    before = await bus_messages(nc)

    reply = await chat.say(f"Use this token: {GITHUB_TOKEN}")
    command = await chat.say(f"/new a mirror with {AWS_KEY}")

    assert "credential (GitHub Token)" in reply
    assert "credential (AWS Access Key)" in command
    assert deleted_in(telegram, chat.chat_id) == 2
    assert await bus_messages(nc) == before


def callback_query(user: ChatUser, data: str) -> dict[str, Any]:
    """A tap on an inline button under one of the bot's messages in the user's chat."""
    return {
        "callback_query": {
            "id": str(uuid.uuid4()),
            "from": {"id": user.chat_id, "is_bot": False, "first_name": "T"},
            "chat_instance": "1",
            "data": data,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": user.chat_id, "type": "private"},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Orchestrator"},
                "text": "card",
            },
        }
    }
