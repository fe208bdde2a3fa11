"""The bot's own settings (`ORCH_TELEGRAM__*`); the token itself is in Vault, never here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IdList = Annotated[list[int], NoDecode]


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
    admin_ids: IdList = Field(
        [], description="Telegram user ids made admins at every start (comma-separated)"
    )
    allowed_group_ids: IdList = Field(
        [],
        description="Group chats the bot serves (comma-separated chat ids); all others are "
        "refused. Senders there must still be active users.",
    )
    shared_sender_chat_ids: IdList = Field(
        [],
        description="Chats where Telegram's shared placeholder senders (anonymous group admins, "
        "posts sent as a channel) are served, acting as the chat's own id telegram:<chat id>",
    )
    secret_wait_minutes: int = Field(
        5, description="How long /secret waits for the value before the question expires"
    )
    invite_hours: int = Field(48, description="How long an /invite link stays valid")
    rate_limit: str = Field(
        "30/minute", description="Messages and button presses one user may send (COUNT/PERIOD)"
    )
    rate_limit_storage: str = Field(
        "async+memory://",
        description="Where the counts live (the `limits` storage URI); memory counts per replica",
    )

    @field_validator("admin_ids", "allowed_group_ids", "shared_sender_chat_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [int(part) for part in value.replace(" ", "").split(",") if part]
        if isinstance(value, int):
            return [value]
        return value
