"""Composition root of the notifier process.

The bot token is read from Vault (`platform/telegram`, key `token`) at startup. Without one,
as in the embedded single-machine stack, every notification goes to the console chat.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TextIO

from consumers.notifier.console_output import ConsoleChatFile
from consumers.notifier.handlers import register
from consumers.notifier.service import Notifier
from infra.bus.runtime import ConsumerApp
from infra.settings import Settings, get_settings
from infra.vault import SecretNotFound, VaultClient

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.telegram import TelegramAPIServer

TELEGRAM_VAULT_PATH = "platform/telegram"

TokenSource = Callable[[], Awaitable[str | None]]


def vault_token_source(settings: Settings) -> TokenSource:
    """Reads the bot token from Vault; None when the platform has no Telegram bot."""

    async def read() -> str | None:
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
        try:
            secret = await vault.read_secret(TELEGRAM_VAULT_PATH)
        except SecretNotFound:
            return None
        return secret.get("token") or None

    return read


class _Components:
    """The notifier and its bot, built on startup because the token comes from Vault."""

    def __init__(
        self, token_source: TokenSource, api: TelegramAPIServer | None, console: ConsoleChatFile
    ):
        self._token_source = token_source
        self._api = api
        self._console = console
        self._bot: Bot | None = None
        self._notifier: Notifier | None = None

    async def start(self) -> None:
        token = await self._token_source()
        telegram = None
        if token:
            # aiogram is imported only with a token (about 5 s of CPU at start): the embedded
            # stack, which has none, sends every notification to the console chat.
            from aiogram.client.telegram import PRODUCTION

            from consumers.notifier.telegram_chat import TelegramChat, make_bot

            self._bot = make_bot(token, self._api or PRODUCTION)
            telegram = TelegramChat(self._bot)
        self._notifier = Notifier(console=self._console, telegram=telegram)

    async def stop(self) -> None:
        if self._bot is not None:
            await self._bot.session.close()

    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise RuntimeError("the notifier is used before the process started")
        return self._notifier


def build_app(
    settings: Settings | None = None,
    *,
    token_source: TokenSource | None = None,
    telegram_api: TelegramAPIServer | None = None,
    stdout: TextIO = sys.stdout,
) -> ConsumerApp:
    """The notifier process; tests pass a token source and a fake Bot API server (the
    default is Telegram's)."""
    settings = settings or get_settings()
    app = ConsumerApp("notifier", settings=settings)
    components = _Components(
        token_source or vault_token_source(settings),
        telegram_api,
        ConsoleChatFile(settings.state_dir, stdout),
    )
    app.on_startup.append(components.start)
    app.on_shutdown.append(components.stop)
    register(app, components.notifier)
    return app


def main() -> None:
    build_app().run()
