"""Fixtures for the notifier: the fake Bot API, a real Bot pointed at it, a migrated database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from consumers.notifier.telegram_chat import make_bot
from infra.bus.runtime import ConsumerApp
from infra.bus.topology import apply_topology
from infra.db.session import make_engine, make_sessionmaker
from infra.settings import Settings
from infra.stack.nats_server import NatsServer
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
async def sessionmaker(migrated_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_url, pool_size=5)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own: the notifier's durable starts with nothing pending."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
async def nc(fresh_nats: NatsServer) -> AsyncIterator[Client]:
    await apply_topology(fresh_nats.url)
    client = await nats.connect(fresh_nats.url)
    try:
        yield client
    finally:
        await client.close()


def process_settings(nats_url: str, database_url: str, state_dir: Path) -> Settings:
    """Settings of a notifier process started inside the test."""
    return Settings(
        nats={"url": nats_url},
        database={"url": database_url, "pool_size": 5},
        consumer={"backoff_seconds": [0.2]},
        state_dir=state_dir,
    )


@contextlib.asynccontextmanager
async def running(app: ConsumerApp) -> AsyncIterator[ConsumerApp]:
    """Serve `app` in the background for the duration of the block."""
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    try:
        # Started once the publisher exists (the runtime sets it after applying the topology).
        for _ in range(100):
            if app.publisher is not None or serving.done():
                break
            await asyncio.sleep(0.05)
        if serving.done():
            serving.result()
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(serving, 15)
