"""The bot as a user meets it: real polling against the fake Bot API, real JetStream, real DB."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats
import pytest
from aiogram import Bot
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.bus.publisher import JetStreamPublisher, Publisher
from infra.bus.topology import apply_topology
from infra.db.migrate import upgrade
from infra.db.models import Project, ProjectState
from infra.db.session import make_engine, make_sessionmaker
from infra.stack.nats_server import NatsServer
from producers.telegram_bot.app import build_dispatcher, make_bot, run_bot
from producers.telegram_bot.read_model import SqlProjectReadModel
from producers.telegram_bot.settings import BotSettings
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.project_seed import seed_project as seed_project_row

BOT_TOKEN = "123456:TEST-token"
_chat_ids = itertools.count(10_000)


@pytest.fixture(scope="session")
async def bus_url(nats_server: NatsServer) -> str:
    await apply_topology(nats_server.url)
    return nats_server.url


@pytest.fixture
async def nc(bus_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(bus_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    upgrade(database_url)
    engine = make_engine(database_url, pool_size=5)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI() as fake:
        yield fake


@pytest.fixture
async def bot(telegram: FakeTelegramAPI) -> AsyncIterator[Bot]:
    bot = make_bot(BOT_TOKEN, telegram.base_url)
    try:
        yield bot
    finally:
        await bot.session.close()


def start_bot(
    bot: Bot, publisher: Publisher, sessionmaker: async_sessionmaker[AsyncSession]
) -> Callable[[], Awaitable[None]]:
    """Start polling in the background; returns the coroutine function that stops it."""
    dispatcher = build_dispatcher(publisher, SqlProjectReadModel(sessionmaker))
    settings = BotSettings(polling_timeout=1)
    task = asyncio.create_task(run_bot(bot, dispatcher, settings, handle_signals=False))

    async def stop() -> None:
        with contextlib.suppress(RuntimeError):  # "polling is not started" if it failed early
            await dispatcher.stop_polling()
        await asyncio.wait_for(task, 10)

    return stop


@dataclass
class ChatUser:
    """One Telegram user in a private chat with the bot, typing into the fake Bot API."""

    telegram: FakeTelegramAPI
    chat_id: int

    @property
    def user_id(self) -> str:
        return f"telegram:{self.chat_id}"

    async def say(self, text: str, *, reply_to: int | None = None) -> str:
        """Send `text` and return the bot's reply (the next sendMessage to this chat)."""
        return await self.send_update(
            lambda: self.telegram.enqueue_message(text, chat_id=self.chat_id, reply_to=reply_to)
        )

    async def send_update(self, enqueue: Callable[[], object]) -> str:
        before = len(self._replies())
        enqueue()
        await self.telegram.wait_for(lambda _: len(self._replies()) > before)
        return self._replies()[before]

    def _replies(self) -> list[str]:
        return [
            str(call.params["text"])
            for call in self.telegram.calls_of("sendMessage")
            if call.params.get("chat_id") == self.chat_id
        ]


@pytest.fixture
async def chat(
    telegram: FakeTelegramAPI,
    bot: Bot,
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[ChatUser]:
    """A running bot (real long polling) and a fresh user to talk to it."""
    stop = start_bot(bot, JetStreamPublisher.from_client(nc), sessionmaker)
    try:
        yield ChatUser(telegram, next(_chat_ids))
    finally:
        await stop()


SeedProject = Callable[..., Awaitable[Project]]


@pytest.fixture
def seed_project(sessionmaker: async_sessionmaker[AsyncSession]) -> SeedProject:
    """Insert a project the way the coordinator records one (this producer only reads them)."""

    async def seed(
        user_id: str,
        *,
        state: ProjectState = ProjectState.AWAITING_ANSWER,
        name: str = "todo-api",
        timeline: tuple[str, ...] = (),
    ) -> Project:
        return await seed_project_row(
            sessionmaker, user_id, state=state, slug=name, timeline=timeline
        )

    return seed
