"""Fixtures for the notifier: the fake Bot API, a real Bot pointed at it, a migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.notifier.telegram_chat import make_bot
from infra.db.migrate import upgrade
from infra.db.session import make_engine, make_sessionmaker
from tests.fakes.telegram_api import FakeTelegramAPI

BOT_TOKEN = "123456:TEST-token"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI() as fake:
        yield fake


@pytest.fixture
async def bot(telegram: FakeTelegramAPI) -> AsyncIterator[Bot]:
    bot = make_bot(BOT_TOKEN, TelegramAPIServer.from_base(telegram.base_url))
    try:
        yield bot
    finally:
        await bot.session.close()


@pytest.fixture
def migrated_url(database_url: str) -> str:
    upgrade(database_url)
    return database_url


@pytest.fixture
async def sessionmaker(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_url, pool_size=5)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()
