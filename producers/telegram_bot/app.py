"""Composition root of the Telegram bot process: Vault token, JetStream, database, aiogram.

It serves /metrics, /livez and /readyz on `ORCH_METRICS__PORT` (`infra.process_endpoints`).

The bot is a producer: it publishes intents to JetStream, reads the project tables, keeps its
users and pending secret questions in PostgreSQL and writes the secrets users send to Vault;
it never talks to a consumer directly. It is fail-closed: `gate.AccessGate` admits only active
users (admins from `ORCH_TELEGRAM__ADMIN_IDS`, promoted at every start). Updates arrive by
long polling (default) or a webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from datetime import timedelta

import structlog
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.bus.credentials import connect as connect_nats
from infra.bus.publisher import JetStreamPublisher, Publisher
from infra.db.session import make_engine, make_sessionmaker
from infra.health import HealthChecks, database_reachable, nats_connected
from infra.logging import configure_logging
from infra.process_endpoints import ProcessEndpoints
from infra.settings import Settings, get_settings
from infra.vault import SecretNotFound, VaultClient
from producers.access import Directory, telegram_user
from producers.telegram_bot.admin_views import AdminViews
from producers.telegram_bot.gate import AccessGate
from producers.telegram_bot.pending_secrets import PendingSecrets
from producers.telegram_bot.ports import ProjectSecrets
from producers.telegram_bot.read_model import SqlProjectReadModel
from producers.telegram_bot.router import BotServices, bot_commands, build_router
from producers.telegram_bot.settings import BotSettings

PROCESS = "telegram_bot"
TELEGRAM_VAULT_PATH = "platform/telegram"

log = structlog.get_logger(__name__)


class NoBotToken(RuntimeError):
    """The platform has no Telegram bot configured."""


def build_dispatcher(services: BotServices, settings: BotSettings) -> Dispatcher:
    """The dispatcher with the access gate in front of every handler."""
    dispatcher = Dispatcher(name=PROCESS)
    dispatcher.update.outer_middleware(AccessGate(services.directory, settings))
    dispatcher.include_router(build_router(services))
    return dispatcher


def build_services(
    publisher: Publisher,
    sessionmaker: async_sessionmaker[AsyncSession],
    secrets_store: ProjectSecrets,
    nc: Client,
    settings: BotSettings,
) -> BotServices:
    return BotServices(
        publisher=publisher,
        read_model=SqlProjectReadModel(sessionmaker),
        directory=Directory(sessionmaker),
        pending=PendingSecrets(sessionmaker, timedelta(minutes=settings.secret_wait_minutes)),
        secrets=secrets_store,
        admin=AdminViews(sessionmaker, nc),
        invite_ttl=timedelta(hours=settings.invite_hours),
    )


async def seed_admins(directory: Directory, settings: BotSettings) -> None:
    """Make the configured Telegram ids admins (created, promoted or unblocked)."""
    await directory.seed_admins(telegram_user(i) for i in settings.admin_ids)
    if not settings.admin_ids:
        log.warning(
            "bot.no_admins",
            hint="set ORCH_TELEGRAM__ADMIN_IDS or add one with `orchestrator users add ID "
            "--role admin`; until then only people already in the users table get in",
        )


def make_bot(token: str, api_base: str = "") -> Bot:
    api = TelegramAPIServer.from_base(api_base) if api_base else PRODUCTION
    return Bot(token, session=AiohttpSession(api=api))


async def run_bot(
    bot: Bot, dispatcher: Dispatcher, settings: BotSettings, *, handle_signals: bool = True
) -> None:
    """Receive updates until stopped (a signal, or `dispatcher.stop_polling()` in polling mode)."""
    await bot.set_my_commands(bot_commands())
    if settings.mode == "webhook":
        await _serve_webhook(bot, dispatcher, settings, handle_signals=handle_signals)
        return
    # A webhook left over from an earlier deployment would make getUpdates fail with 409.
    await bot.delete_webhook(drop_pending_updates=False)
    await dispatcher.start_polling(
        bot,
        polling_timeout=settings.polling_timeout,
        handle_signals=handle_signals,
        close_bot_session=False,
    )


async def _serve_webhook(
    bot: Bot, dispatcher: Dispatcher, settings: BotSettings, *, handle_signals: bool
) -> None:
    if not settings.webhook_url:
        raise ValueError("ORCH_TELEGRAM__MODE=webhook needs ORCH_TELEGRAM__WEBHOOK_URL")
    # A fresh secret per start, registered with setWebhook: requests without it are refused.
    secret = secrets.token_urlsafe(32)
    app = web.Application()
    SimpleRequestHandler(dispatcher, bot, secret_token=secret).register(
        app, path=settings.webhook_path
    )
    setup_application(app, dispatcher, bot=bot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, settings.webhook_host, settings.webhook_port).start()
    await bot.set_webhook(
        settings.webhook_url,
        secret_token=secret,
        allowed_updates=dispatcher.resolve_used_update_types(),
    )
    stop = asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def read_bot_token(settings: Settings, vault: VaultClient | None = None) -> str:
    """The bot token from Vault, with `vault` if this process already logged in."""
    if vault is None:
        vault = VaultClient.from_settings(settings.vault)
        await vault.login()
    try:
        token = (await vault.read_secret(TELEGRAM_VAULT_PATH)).get("token", "")
    except SecretNotFound:
        token = ""
    if not token:
        raise NoBotToken(
            f"no Telegram bot token in Vault at {settings.vault.kv_mount}/{TELEGRAM_VAULT_PATH} "
            "(key `token`): store the token from @BotFather there, or use the console chat "
            "(`orchestrator chat`), which needs no bot"
        )
    return token


async def serve(settings: Settings, bot_settings: BotSettings) -> None:
    # The same Vault login reads the bot token and later stores the secrets users send.
    vault = VaultClient.from_settings(settings.vault)
    nc: Client | None = None
    engine: AsyncEngine | None = None
    health = HealthChecks(settings.health)
    health.add("nats", nats_connected(lambda: nc))
    health.add("postgres", database_reachable(lambda: engine))
    health.add("vault", vault.check_token)
    async with ProcessEndpoints(settings.metrics.host, settings.metrics.port, health):
        await vault.login()
        token = await read_bot_token(settings, vault)
        nc = await connect_nats(settings, vault=vault, max_reconnect_attempts=-1, connect_timeout=5)
        engine = make_engine(
            settings.database.url, pool_size=5, options=settings.database.session_options()
        )
        await _run(bot_settings, vault, token, nc, engine)


async def _run(
    bot_settings: BotSettings,
    vault: VaultClient,
    token: str,
    nc: Client,
    engine: AsyncEngine,
) -> None:
    bot = make_bot(token, bot_settings.api_base)
    renew = asyncio.create_task(vault.keep_renewed(), name="vault-renewal")
    try:
        services = build_services(
            JetStreamPublisher.from_client(nc), make_sessionmaker(engine), vault, nc, bot_settings
        )
        await seed_admins(services.directory, bot_settings)
        dispatcher = build_dispatcher(services, bot_settings)
        log.info("bot.started", mode=bot_settings.mode, admins=len(bot_settings.admin_ids))
        await run_bot(bot, dispatcher, bot_settings)
    finally:
        renew.cancel()
        await bot.session.close()
        await engine.dispose()
        with contextlib.suppress(Exception):
            await nc.close()


def main() -> None:
    configure_logging(PROCESS)
    try:
        asyncio.run(serve(get_settings(), BotSettings()))
    except NoBotToken as exc:
        log.error("bot.not_configured", error=str(exc))
        raise SystemExit(2) from exc
