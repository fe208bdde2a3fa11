"""The bot's own settings (`ORCH_TELEGRAM__*`); the token itself is in Vault, never here."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BotSettings(BaseSettings):
    """How the bot receives updates. Polling needs nothing public; a webhook needs a URL."""

    model_config = SettingsConfigDict(env_prefix="ORCH_TELEGRAM__", extra="ignore")

    mode: Literal["polling", "webhook"] = Field(
        "polling", description="polling (one replica only: Telegram allows one poller) or webhook"
    )
    api_base: str = Field(
        "", description="Another Bot API server (a local telegram-bot-api); empty: Telegram's"
    )
    polling_timeout: int = Field(30, description="Seconds one getUpdates long poll waits")
    webhook_url: str = Field("", description="Public HTTPS URL Telegram posts updates to")
    webhook_host: str = Field("127.0.0.1", description="Interface the webhook server binds")
    webhook_port: int = Field(8081, description="Port the webhook server binds")
    webhook_path: str = Field("/telegram/webhook", description="Path of the webhook endpoint")
