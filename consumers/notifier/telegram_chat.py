"""The Telegram adapter: aiogram's Bot (no dispatcher), with Telegram's errors classified.

- flood control (429) is honoured inside the step: wait `retry_after`, retry, within a bound;
- "message is not modified" is a successful edit (a redelivered update converges);
- a chat that does not exist or has blocked the bot will never accept the message: permanent;
- anything else (network, 5xx, an unexpected 4xx) is transient and retried by redelivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramRetryAfter,
)
from aiogram.types import LinkPreviewOptions

from consumers.notifier.ports import MessageGone
from infra.bus.runtime import PermanentError, TransientError

T = TypeVar("T")

# Project URLs in messages would otherwise expand into previews of half-deployed services.
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


class RecipientUnreachable(PermanentError):
    """The chat does not exist or the user blocked the bot: retrying cannot help."""


class TelegramUnavailable(TransientError):
    """Telegram failed or throttled us beyond what one step waits for; redelivery retries."""


def make_bot(token: str, api: TelegramAPIServer = PRODUCTION) -> Bot:
    """A Bot on aiohttp; `api` points it at another Bot API server (a local one, or a fake)."""
    return Bot(token, session=AiohttpSession(api=api))


class TelegramChat:
    """Sends and edits messages through `bot`.

    `max_wait_seconds` bounds the total flood-control wait within one step, below the
    consumer's ack wait, so a throttled step never outlives its delivery.
    """

    def __init__(
        self,
        bot: Bot,
        *,
        max_attempts: int = 4,
        max_wait_seconds: float = 20.0,
    ) -> None:
        self._bot = bot
        self._max_attempts = max_attempts
        self._max_wait = max_wait_seconds

    async def send(self, chat_id: int, text: str) -> int:
        message = await self._call(
            "sendMessage",
            chat_id,
            lambda: self._bot.send_message(chat_id, text, link_preview_options=_NO_PREVIEW),
        )
        return message.message_id

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        try:
            await self._call(
                "editMessageText",
                chat_id,
                lambda: self._bot.edit_message_text(
                    text=text,
                    chat_id=chat_id,
                    message_id=message_id,
                    link_preview_options=_NO_PREVIEW,
                ),
            )
        except _NotModified:
            return

    async def _call(self, method: str, chat_id: int, request: Callable[[], Awaitable[T]]) -> T:
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await request()
            except TelegramRetryAfter as exc:
                if attempt >= self._max_attempts or waited + exc.retry_after > self._max_wait:
                    raise TelegramUnavailable(
                        f"Telegram throttles {method} to chat {chat_id}: asked to wait "
                        f"{exc.retry_after}s after {waited:.0f}s of waiting in this step"
                    ) from exc
                waited += exc.retry_after
                await asyncio.sleep(exc.retry_after)
            except TelegramForbiddenError as exc:
                raise RecipientUnreachable(
                    f"Telegram refuses {method} to chat {chat_id}: {exc.message}"
                ) from exc
            except TelegramBadRequest as exc:
                raise _classify_bad_request(method, chat_id, exc) from exc
            except TelegramAPIError as exc:  # network errors, 5xx, 409 and the rest
                raise TelegramUnavailable(
                    f"Telegram {method} to chat {chat_id} failed: {exc.message}"
                ) from exc


class _NotModified(Exception):
    """The edit would not change the message: it already shows this text."""


def _classify_bad_request(method: str, chat_id: int, exc: TelegramBadRequest) -> Exception:
    text = exc.message.lower()
    if "message is not modified" in text:
        return _NotModified()
    if "message to edit not found" in text:
        return MessageGone(f"message in chat {chat_id} no longer exists")
    if "chat not found" in text or "user is deactivated" in text:
        return RecipientUnreachable(f"Telegram refuses {method} to chat {chat_id}: {exc.message}")
    return TelegramUnavailable(f"Telegram rejected {method} to chat {chat_id}: {exc.message}")
