"""The Telegram bot as a user meets it: messages in through real long polling, replies out,
intents on the real JetStream stream, projects read from real PostgreSQL."""

from __future__ import annotations

import re
import uuid
from typing import TypeVar

import nats
from aiogram import Bot
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Event
from contracts.events import ClarificationAnswered, ProjectRequested
from contracts.topology import H_MSG_ID, INTENTS
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import ProjectState
from infra.vault import VaultClient
from producers.access import operator
from producers.telegram_bot.app import build_services
from producers.telegram_bot.settings import BotSettings
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.telegram.conftest import ChatUser, SeedProject, start_bot

E = TypeVar("E", bound=Event)

ACCEPTED = re.compile(r"Project ([0-9a-f-]{36}) accepted, I'll report progress here\.")


async def last_intent(nc: Client, event_type: type[E]) -> tuple[E, str]:
    """The newest event of `event_type` on the INTENTS stream, with its Nats-Msg-Id."""
    msg = await nc.jetstream().get_last_msg(INTENTS.name, event_type.TYPE)
    return event_type.model_validate_json(msg.data or b""), (msg.headers or {}).get(H_MSG_ID, "")


async def test_start_explains_and_the_command_menu_is_set(
    chat: ChatUser, telegram: FakeTelegramAPI
) -> None:
    reply = await chat.say("/start")

    assert "Describe the service you want" in reply
    assert "/status" in reply
    (menu,) = telegram.calls_of("setMyCommands")
    assert {c["command"] for c in menu.params["commands"]} >= {"new", "status", "projects"}
    assert telegram.calls_of("deleteWebhook")


async def test_a_description_becomes_a_project_request_on_the_stream(
    chat: ChatUser, nc: Client
) -> None:
    reply = await chat.say("A URL shortener with click statistics")

    match = ACCEPTED.fullmatch(reply)
    assert match, reply
    event, msg_id = await last_intent(nc, ProjectRequested)
    assert event.project_id == uuid.UUID(match.group(1))
    assert event.description == "A URL shortener with click statistics"
    assert (event.source, event.user_id, event.chat_id) == ("telegram", chat.user_id, chat.chat_id)
    assert msg_id == str(event.event_id)


async def test_new_command_starts_a_project_even_while_a_question_is_open(
    chat: ChatUser, nc: Client, seed_project: SeedProject
) -> None:
    await seed_project(chat.user_id, state=ProjectState.AWAITING_ANSWER)

    assert "Usage: /new" in await chat.say("/new")
    reply = await chat.say("/new a blog engine")

    assert ACCEPTED.fullmatch(reply)
    event, _ = await last_intent(nc, ProjectRequested)
    assert event.description == "a blog engine"


async def test_replying_to_the_question_answers_its_project(
    chat: ChatUser, nc: Client, bot: Bot, seed_project: SeedProject
) -> None:
    project = await seed_project(chat.user_id)
    # The question as the notifier sends it: it names the project.
    question = await bot.send_message(
        chat.chat_id, f"❓ Question about project {project.id}:\nWhich database?"
    )

    reply = await chat.say("PostgreSQL please", reply_to=question.message_id)

    assert reply.startswith("Thanks! Your answer went to project todo-api")
    event, _ = await last_intent(nc, ClarificationAnswered)
    assert (event.project_id, event.answer, event.user_id) == (
        project.id,
        "PostgreSQL please",
        chat.user_id,
    )
    assert event.correlation_id == project.flow_id


async def test_plain_text_answers_the_open_question(
    chat: ChatUser, nc: Client, seed_project: SeedProject
) -> None:
    project = await seed_project(chat.user_id)

    reply = await chat.say("It needs user accounts")

    assert "Your answer went to project" in reply
    event, _ = await last_intent(nc, ClarificationAnswered)
    assert (event.project_id, event.answer) == (project.id, "It needs user accounts")


async def test_answer_command_names_the_project(
    chat: ChatUser, nc: Client, seed_project: SeedProject
) -> None:
    waiting = await seed_project(chat.user_id, name="shop")
    busy = await seed_project(chat.user_id, state=ProjectState.BUILDING, name="blog")

    assert "has no open question (it is building)" in await chat.say(
        f"/answer {str(busy.id)[:8]} use redis"
    )
    assert "Usage: /answer" in await chat.say("/answer")
    reply = await chat.say(f"/answer {str(waiting.id)[:8]} only EUR prices")

    assert "Your answer went to project shop" in reply
    event, _ = await last_intent(nc, ClarificationAnswered)
    assert (event.project_id, event.answer) == (waiting.id, "only EUR prices")


async def test_status_shows_state_and_timeline_of_own_projects_only(
    chat: ChatUser, seed_project: SeedProject
) -> None:
    project = await seed_project(
        chat.user_id,
        state=ProjectState.DEPLOYING,
        timeline=("Spec ready", "Port 20001 on local", "Code pushed"),
    )
    stranger = await seed_project("telegram:1", state=ProjectState.ACTIVE, name="secret")

    newest = await chat.say("/status")
    by_id = await chat.say(f"/status {project.id}")
    foreign = await chat.say(f"/status {stranger.id}")

    assert newest == by_id
    assert "State: deploying" in by_id
    assert by_id.index("Spec ready") < by_id.index("Port 20001") < by_id.index("Code pushed")
    assert "I know no project of yours matching" in foreign


async def test_projects_lists_the_users_projects(chat: ChatUser, seed_project: SeedProject) -> None:
    assert "You have no projects yet" in await chat.say("/projects")
    await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="shop")
    await seed_project(chat.user_id, state=ProjectState.FAILED, name="blog")

    reply = await chat.say("/projects")

    assert "todo-api" not in reply
    assert re.search(r"shop \([0-9a-f]{8}\): active", reply)
    assert re.search(r"blog \([0-9a-f]{8}\): failed", reply)


async def test_bad_messages_get_a_helpful_reply(
    chat: ChatUser, telegram: FakeTelegramAPI, nc: Client
) -> None:
    before = (await nc.jsm().stream_info(INTENTS.name)).state.messages

    unknown = await chat.say("/deploy now")
    too_long = await chat.say("x" * 8001)
    sticker = await chat.send_update(
        lambda: telegram.enqueue_update(
            {
                "message": {
                    "message_id": 99,
                    "date": 0,
                    "chat": {"id": chat.chat_id, "type": "private"},
                    "from": {"id": chat.chat_id, "is_bot": False, "first_name": "T"},
                    "sticker": {
                        "file_id": "f",
                        "file_unique_id": "u",
                        "type": "regular",
                        "width": 1,
                        "height": 1,
                        "is_animated": False,
                        "is_video": False,
                    },
                }
            }
        )
    )

    assert unknown.startswith("I don't know /deploy")
    assert "under 8000 characters" in too_long
    assert sticker == "I read text only: please describe your project in words."
    assert (await nc.jsm().stream_info(INTENTS.name)).state.messages == before


async def test_the_user_hears_back_when_the_bus_is_down(
    telegram: FakeTelegramAPI,
    bot: Bot,
    bus_url: str,
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    bot_vault: VaultClient,
) -> None:
    closed = await nats.connect(bus_url)
    await closed.close()
    services = build_services(
        JetStreamPublisher.from_client(closed), sessionmaker, bot_vault, nc, BotSettings()
    )
    user = ChatUser(telegram, 4242)
    await services.directory.allow(operator("tests"), user.user_id)
    stop = await start_bot(bot, services)
    try:
        reply = await user.say("a todo app")
    finally:
        await stop()

    assert reply == "Sorry, I could not take that right now. Please send it again in a minute."
