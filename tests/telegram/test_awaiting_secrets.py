"""The bot's project card while a deploy waits for secrets: which ones, and how to send them.

Real long polling against the fake Bot API, real PostgreSQL and OpenBao (the card lists what
Vault lacks with one button per secret; the waiting state comes from the coordinator's row).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, ProjectState
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.telegram.conftest import ChatUser, SeedProject


async def test_the_card_of_a_waiting_deploy_names_the_secret_and_how_to_send_it(
    chat: ChatUser,
    telegram: FakeTelegramAPI,
    sessionmaker: async_sessionmaker[AsyncSession],
    seed_project: SeedProject,
) -> None:
    project = await seed_project(chat.user_id, state=ProjectState.AWAITING_SECRETS, name="waiter")
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Project)
            .where(Project.id == project.id)
            .values(
                spec={"config": [{"name": "TELEGRAM_BOT_TOKEN", "secret": True}]},
                missing_secrets=["TELEGRAM_BOT_TOKEN"],
            )
        )

    card = await chat.say(f"/status {project.id}")

    assert "State: awaiting_secrets" in card
    assert "The deploy waits for: TELEGRAM_BOT_TOKEN. Send each with /secret NAME" in card
    (markup,) = [
        c.params["reply_markup"]
        for c in telegram.calls_of("sendMessage")
        if c.params.get("chat_id") == chat.chat_id and "reply_markup" in c.params
    ]
    assert [b["text"] for row in markup["inline_keyboard"] for b in row] == [
        "Set TELEGRAM_BOT_TOKEN"
    ]


async def test_an_integrations_key_gets_its_own_button(
    chat: ChatUser,
    telegram: FakeTelegramAPI,
    sessionmaker: async_sessionmaker[AsyncSession],
    seed_project: SeedProject,
) -> None:
    project = await seed_project(chat.user_id, state=ProjectState.AWAITING_SECRETS, name="sky")
    weather = {
        "name": "OpenWeather",
        "base_url": "https://api.openweathermap.org/data/2.5",
        "env_vars": ["OPENWEATHER_API_KEY"],
    }
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Project)
            .where(Project.id == project.id)
            .values(
                # The key is named under integrations only, as an older analyst might leave it.
                spec={
                    "config": [{"name": "TELEGRAM_BOT_TOKEN", "secret": True}],
                    "integrations": [weather],
                },
                missing_secrets=["TELEGRAM_BOT_TOKEN", "OPENWEATHER_API_KEY"],
            )
        )

    await chat.say(f"/status {project.id}")

    (markup,) = [
        c.params["reply_markup"]
        for c in telegram.calls_of("sendMessage")
        if c.params.get("chat_id") == chat.chat_id and "reply_markup" in c.params
    ]
    assert [b["text"] for row in markup["inline_keyboard"] for b in row] == [
        "Set TELEGRAM_BOT_TOKEN",
        "Set OPENWEATHER_API_KEY",
    ]
