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

from infra.bus.publisher import JetStreamPublisher
from infra.bus.topology import apply_topology
from infra.db.models import Project, ProjectState
from infra.db.session import make_engine, make_sessionmaker
from infra.logging import configure_logging
from infra.stack.nats_server import NatsServer
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient
from producers.access import operator
from producers.telegram_bot.app import (
    build_dispatcher,
    build_services,
    make_bot,
    run_bot,
    seed_admins,
)
from producers.telegram_bot.router import BotServices
from producers.telegram_bot.settings import BotSettings
from tests.fakes.telegram_api import BOT_ID, FakeTelegramAPI
from tests.project_seed import seed_project as seed_project_row

#: A token's prefix is its bot's id, as Telegram issues them: the bot recognises replies to its
#: own messages by that id.
BOT_TOKEN = f"{BOT_ID}:TEST-token"
_chat_ids = itertools.count(10_000)
#: The admin the running bot's configuration names (ORCH_TELEGRAM__ADMIN_IDS).
ADMIN_ID = 777_000


@pytest.fixture(autouse=True)
def process_logging() -> None:
    """Log like the bot process does (JSON lines, secret redaction): the test-time default,
    a rich console traceback with every local, takes seconds to render per error."""
    configure_logging("telegram_bot")


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
async def sessionmaker(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_url, pool_size=5)
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


@pytest.fixture
async def bot_vault(openbao: BootstrappedOpenBao) -> VaultClient:
    """Vault as the bot process sees it: its own AppRole, its real policy."""
    credentials = openbao.credentials["telegram_bot"]
    vault = VaultClient(openbao.addr, role_id=credentials.role_id, secret_id=credentials.secret_id)
    await vault.login()
    return vault


@pytest.fixture
def root_vault(openbao: BootstrappedOpenBao) -> VaultClient:
    """An operator's view of Vault, to read back what the bot (which cannot read) stored."""
    return VaultClient(openbao.addr, token=openbao.root_token)


@pytest.fixture
def services(
    nc: Client, sessionmaker: async_sessionmaker[AsyncSession], bot_vault: VaultClient
) -> BotServices:
    return build_services(
        JetStreamPublisher.from_client(nc), sessionmaker, bot_vault, nc, BotSettings()
    )


async def start_bot(
    bot: Bot, services: BotServices, settings: BotSettings | None = None
) -> Callable[[], Awaitable[None]]:
    """Seed the configured admins and start polling in the background; returns the stopper."""
    settings = settings or BotSettings()
    settings = settings.model_copy(update={"polling_timeout": 1})
    await seed_admins(services.directory, settings)
    dispatcher = build_dispatcher(services, settings)
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
        before = len(self.replies())
        enqueue()
        await self.telegram.wait_for(lambda _: len(self.replies()) > before)
        return self.replies()[before]

    def replies(self) -> list[str]:
        return [
            str(call.params["text"])
            for call in self.telegram.calls_of("sendMessage")
            if call.params.get("chat_id") == self.chat_id
        ]


def new_chat_user(telegram: FakeTelegramAPI) -> ChatUser:
    return ChatUser(telegram, next(_chat_ids))


@pytest.fixture
async def running_bot(
    telegram: FakeTelegramAPI, bot: Bot, services: BotServices
) -> AsyncIterator[BotSettings]:
    """A running bot (real long polling) with one configured admin; yields its settings."""
    settings = BotSettings(admin_ids=[ADMIN_ID])
    stop = await start_bot(bot, services, settings)
    try:
        yield settings
    finally:
        await stop()


@pytest.fixture
async def chat(
    running_bot: BotSettings, telegram: FakeTelegramAPI, services: BotServices
) -> ChatUser:
    """A fresh member (added by the host operator) talking to the running bot."""
    user = new_chat_user(telegram)
    await services.directory.allow(operator("tests"), user.user_id)
    return user


@pytest.fixture
def admin(running_bot: BotSettings, telegram: FakeTelegramAPI) -> ChatUser:
    """The admin named in the bot's configuration."""
    return ChatUser(telegram, ADMIN_ID)


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
