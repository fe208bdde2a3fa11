"""The bot is fail-closed: who gets in, who is refused, and what each role may see and do.

Everything goes through real long polling against the fake Bot API, the real access gate, the
real users table in PostgreSQL and the real JetStream streams, whose message counts prove that
a refused sender put nothing on the bus.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiogram import Bot
from nats.aio.client import Client

from contracts.topology import (
    DEPLOYER,
    DLQ,
    H_DLQ_CONSUMER,
    H_DLQ_DELIVERIES,
    H_DLQ_ERROR,
    H_DLQ_FAILED_AT,
    H_DLQ_SUBJECT,
    STREAMS,
    dlq_subject,
)
from infra.db.models import ProjectState, UserRole, UserStatus
from producers.access import FROM_CONFIG, operator
from producers.telegram_bot.gate import CHANNEL_BOT, GROUP_ANONYMOUS_BOT
from producers.telegram_bot.router import BotServices
from producers.telegram_bot.settings import BotSettings
from tests.fakes.telegram_api import BOT_USERNAME, Call, FakeTelegramAPI
from tests.telegram.conftest import ChatUser, SeedProject, new_chat_user, start_bot

REFUSED_UNKNOWN = "this bot serves invited people only"


async def bus_messages(nc: Client) -> int:
    """Messages stored across every stream: a refused update must not change this."""
    jsm = nc.jsm()
    return sum([(await jsm.stream_info(s.name)).state.messages for s in STREAMS])


def group_message(chat_id: int, text: str, **sender: Any) -> dict[str, Any]:
    """A group-chat message update; `sender` overrides `from` or adds `sender_chat`."""
    message: dict[str, Any] = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": chat_id, "type": "supergroup", "title": "team"},
        "from": {"id": 5555, "is_bot": False, "first_name": "T"},
        "text": text,
    }
    message.update(sender)
    return {"message": message}


async def test_an_unknown_sender_gets_their_id_and_nothing_reaches_the_bus(
    running_bot: BotSettings, telegram: FakeTelegramAPI, nc: Client
) -> None:
    stranger = new_chat_user(telegram)
    before = await bus_messages(nc)

    replies = [
        await stranger.say("A URL shortener with click statistics"),
        await stranger.say("/new a blog"),
        await stranger.say("/projects"),
    ]

    for reply in replies:
        assert REFUSED_UNKNOWN in reply
        assert str(stranger.chat_id) in reply
    assert await bus_messages(nc) == before


async def test_a_configured_admin_is_seeded_and_lets_people_in_and_out(
    admin: ChatUser, telegram: FakeTelegramAPI, services: BotServices, nc: Client
) -> None:
    seeded = await services.directory.person(admin.user_id)
    assert seeded is not None
    assert (seeded.role, seeded.added_by) == (UserRole.ADMIN, FROM_CONFIG)
    newcomer = new_chat_user(telegram)
    assert REFUSED_UNKNOWN in await newcomer.say("hello")

    assert await admin.say(f"/allow {newcomer.chat_id}") == (
        f"{newcomer.user_id} may use the bot now, as member."
    )
    assert "Project" in await newcomer.say("/new a todo app")

    assert await admin.say(f"/block {newcomer.chat_id}") == f"{newcomer.user_id} is blocked now."
    before = await bus_messages(nc)
    blocked = await newcomer.say("/new another app")
    assert "suspended" in blocked and str(newcomer.chat_id) in blocked
    assert await bus_messages(nc) == before

    assert await admin.say(f"/unblock {newcomer.chat_id}") == f"{newcomer.user_id} is active now."
    # Served again (no coordinator runs here, so the request above made no project row).
    assert "You have no projects yet" in await newcomer.say("/projects")
    person = await services.directory.person(newcomer.user_id)
    assert person is not None and person.added_by == admin.user_id


async def test_a_member_cannot_let_anyone_in_or_see_the_platform(
    chat: ChatUser, telegram: FakeTelegramAPI, services: BotServices
) -> None:
    other = new_chat_user(telegram)

    assert "only an admin may add people" in await chat.say(f"/allow {other.chat_id}")
    assert "only an admin may invite people" in await chat.say("/invite")
    for command in ("/users", "/servers", "/incidents", "/dlq", "/lag"):
        assert "only an admin may" in await chat.say(command), command
    assert await services.directory.person(other.user_id) is None
    assert "/allow" not in await chat.say("/help")


async def test_an_invite_link_works_once(
    admin: ChatUser, telegram: FakeTelegramAPI, services: BotServices
) -> None:
    reply = await admin.say("/invite")
    match = re.search(rf"https://t\.me/{BOT_USERNAME}\?start=([A-Za-z0-9_-]+)", reply)
    assert match, reply
    code = match.group(1)
    first, second = new_chat_user(telegram), new_chat_user(telegram)

    welcome = await first.say(f"/start {code}")
    refused = await second.say(f"/start {code}")

    assert welcome.startswith("Welcome!")
    assert "Project" in await first.say("/new a shop")
    assert "unknown, used or expired" in refused
    assert REFUSED_UNKNOWN in await second.say("/new a shop")
    person = await services.directory.person(first.user_id)
    assert person is not None
    assert (person.role, person.status, person.added_by) == (
        UserRole.MEMBER,
        UserStatus.ACTIVE,
        admin.user_id,
    )


async def test_members_see_only_their_projects_and_admins_see_everyone_s(
    admin: ChatUser, chat: ChatUser, seed_project: SeedProject
) -> None:
    mine = await seed_project(chat.user_id, state=ProjectState.ACTIVE, name="shop")
    theirs = await seed_project("telegram:1", state=ProjectState.ACTIVE, name="diary")

    member_list = await chat.say("/projects")
    member_status = await chat.say(f"/status {theirs.id}")
    admin_list = await admin.say("/projects")
    admin_status = await admin.say(f"/status {theirs.id}")

    assert "shop" in member_list and "diary" not in member_list
    assert "I know no project of yours matching" in member_status
    assert "shop" in admin_list and "diary" in admin_list
    assert f"({chat.user_id})" in admin_list and "(telegram:1)" in admin_list
    assert admin_status.startswith("Project diary")
    assert str(mine.id)[:8] in admin_list


async def test_admins_see_users_servers_incidents_dead_letters_and_lag(
    admin: ChatUser, chat: ChatUser, nc: Client
) -> None:
    users = await admin.say("/users")
    assert f"{admin.user_id} admin active" in users
    assert f"{chat.user_id} member active" in users
    assert "No servers in the inventory" in await admin.say("/servers")
    assert await admin.say("/incidents") == "No open incidents."
    # The suite shares one nats-server: start from an empty queue, as an operator's purge does.
    await nc.jsm().purge_stream(DLQ.name)
    assert await admin.say("/dlq") == "The dead-letter queue is empty."
    await nc.jetstream().publish(
        dlq_subject(DEPLOYER.durable),
        b"{}",
        stream=DLQ.name,
        headers={
            H_DLQ_CONSUMER: DEPLOYER.durable,
            H_DLQ_SUBJECT: "deploy.requested",
            H_DLQ_ERROR: "commit: String should match pattern",
            H_DLQ_DELIVERIES: "1",
            H_DLQ_FAILED_AT: "2026-11-29T10:00:00+00:00",
        },
    )
    letters = await admin.say("/dlq")
    assert letters.startswith("Dead letters"), letters
    assert "deployer deploy.requested x1: commit: String should match pattern" in letters
    lag = await admin.say("/lag")
    assert lag.startswith("Consumer lag")
    assert "coordinator" in lag


async def test_shared_senders_and_groups_are_refused_by_default(
    running_bot: BotSettings, telegram: FakeTelegramAPI, nc: Client, chat: ChatUser
) -> None:
    group = -100_123
    before = await bus_messages(nc)

    updates = {
        "anonymous admin": group_message(
            group,
            "/new a todo app",
            **{
                "from": {"id": GROUP_ANONYMOUS_BOT, "is_bot": True, "first_name": "Group"},
                "sender_chat": {"id": group, "type": "supergroup", "title": "team"},
            },
        ),
        "channel": group_message(
            group,
            "/new a todo app",
            **{
                "from": {"id": CHANNEL_BOT, "is_bot": True, "first_name": "Channel"},
                "sender_chat": {"id": -100_999, "type": "channel", "title": "news"},
            },
        ),
        # Even a known member is refused in a group nobody allowed.
        "group": group_message(
            group,
            "/new a todo app",
            **{"from": {"id": chat.chat_id, "is_bot": False, "first_name": "T"}},
        ),
    }
    for answered, (name, update) in enumerate(updates.items(), start=1):
        telegram.enqueue_update(update)
        calls = await telegram.wait_for(_replies_to(group, answered))
        reply = _to_chat(calls, group)[-1]
        assert "private chats only" in reply or "cannot tell who you are" in reply, name

    assert await bus_messages(nc) == before


async def test_configuration_can_allow_a_group_and_its_anonymous_admins(
    telegram: FakeTelegramAPI, bot: Bot, services: BotServices, nc: Client
) -> None:
    group = -100_456
    settings = BotSettings(allowed_group_ids=[group], shared_sender_chat_ids=[group])
    await services.directory.allow(operator("tests"), f"telegram:{group}")
    stop = await start_bot(bot, services, settings)
    try:
        telegram.enqueue_update(
            group_message(
                group,
                "/projects",
                **{
                    "from": {"id": GROUP_ANONYMOUS_BOT, "is_bot": True, "first_name": "G"},
                    "sender_chat": {"id": group, "type": "supergroup", "title": "team"},
                },
            )
        )
        calls = await telegram.wait_for(_replies_to(group, 1))
    finally:
        await stop()

    assert _to_chat(calls, group)[0].startswith("You have no projects yet")


async def test_a_member_sending_too_fast_is_told_when_to_try_again(
    telegram: FakeTelegramAPI, bot: Bot, services: BotServices, nc: Client
) -> None:
    member = new_chat_user(telegram)
    await services.directory.allow(operator("tests"), member.user_id)
    stop = await start_bot(bot, services, BotSettings(rate_limit="2/minute"))
    try:
        served = [await member.say("/projects") for _ in range(2)]
        before = await bus_messages(nc)
        limited = await member.say("/new a todo app")
        other = new_chat_user(telegram)
        await services.directory.allow(operator("tests"), other.user_id)
        unaffected = await other.say("/projects")
    finally:
        await stop()

    assert all(reply.startswith("You have no projects yet") for reply in served)
    assert "send it again in" in limited
    assert re.search(r"again in (\d+) s", limited) is not None
    assert await bus_messages(nc) == before
    assert unaffected.startswith("You have no projects yet")


def _replies_to(chat_id: int, count: int) -> Callable[[list[Call]], bool]:
    return lambda calls: len(_to_chat(calls, chat_id)) >= count


def _to_chat(calls: list[Call], chat_id: int) -> list[str]:
    return [
        str(c.params["text"])
        for c in calls
        if c.method == "sendMessage" and c.params.get("chat_id") == chat_id
    ]
