"""Webhook mode: Telegram posts updates to the bot, which checks the secret set by setWebhook."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiogram import Bot

from infra.stack.ports import free_port
from producers.telegram_bot.app import build_dispatcher, run_bot, seed_admins
from producers.telegram_bot.router import BotServices
from producers.telegram_bot.settings import BotSettings
from tests.fakes.telegram_api import FakeTelegramAPI

CHAT = 5150


async def test_webhook_updates_are_answered_only_with_the_secret(
    telegram: FakeTelegramAPI,
    bot: Bot,
    services: BotServices,
) -> None:
    port = free_port()
    settings = BotSettings(
        mode="webhook",
        webhook_url="https://bot.example.org/telegram/webhook",
        webhook_port=port,
        admin_ids=[CHAT],
    )
    await seed_admins(services.directory, settings)
    dispatcher = build_dispatcher(services, settings)
    serving = asyncio.create_task(run_bot(bot, dispatcher, settings, handle_signals=False))
    try:
        (registered,) = await telegram.wait_for_call("setWebhook")
        assert registered.params["url"] == "https://bot.example.org/telegram/webhook"
        secret = registered.params["secret_token"]
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": CHAT, "type": "private"},
                "from": {"id": CHAT, "is_bot": False, "first_name": "T"},
                "text": "/start",
                "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
            },
        }
        url = f"http://127.0.0.1:{port}/telegram/webhook"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=update) as forged:
                assert forged.status == 401
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
            async with http.post(url, json=update, headers=headers) as genuine:
                assert genuine.status == 200

        (reply,) = await telegram.wait_for_call("sendMessage")
        assert reply.params["chat_id"] == CHAT
        assert "Describe the service you want" in reply.params["text"]
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
