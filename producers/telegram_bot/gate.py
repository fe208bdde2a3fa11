"""The bot's front door: an outer middleware that lets only known, active people through.

It runs before any handler, on every update, so a handler added later cannot forget the check:
an update the gate refuses never reaches a handler and so never reaches the bus. Refused are:
- senders who are not active users (unknown or blocked): one polite reply with their Telegram
  id, which they send to an admin to be let in;
- Telegram's shared placeholder senders, which many different people appear as (anonymous
  group admins as GroupAnonymousBot, posts "sent as" a channel as Channel_Bot or with
  `sender_chat` set), unless configuration names the chat: then the chat itself is the user;
- group chats not named in configuration (statuses would be shown to everyone there).

The one thing an unknown sender may do is redeem an invite (`/start <code>` from an invite link).
Admitted people are rate-limited per user (one reply saying when to try again); admitted updates
carry the `person` (producers.access.Person) for the handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiogram import BaseMiddleware
from aiogram.types import CallbackQuery, Chat, Message, TelegramObject, Update
from aiogram.types import User as TelegramUser

from producers.access import AccessError, Directory, Person, telegram_user
from producers.rate_limit import RateLimiter
from producers.telegram_bot import replies
from producers.telegram_bot.settings import BotSettings

log = structlog.get_logger(__name__)

#: Telegram's shared senders: every anonymous group admin, every "send as channel" post.
GROUP_ANONYMOUS_BOT = 1087968824
CHANNEL_BOT = 136817688
SHARED_SENDERS = frozenset({GROUP_ANONYMOUS_BOT, CHANNEL_BOT})

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class _Arrival:
    """Who sent an update, from where, and how to answer them."""

    sender: TelegramUser | None
    sender_chat: Chat | None
    chat: Chat | None
    message: Message | None
    query: CallbackQuery | None


class AccessGate(BaseMiddleware):
    def __init__(self, directory: Directory, settings: BotSettings) -> None:
        self._directory = directory
        self._limiter = RateLimiter(
            settings.rate_limit, namespace="telegram-user", storage_uri=settings.rate_limit_storage
        )
        self._groups = frozenset(settings.allowed_group_ids)
        self._shared_ok = frozenset(settings.shared_sender_chat_ids)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return None
        arrival = _arrival(event)
        if arrival is None:
            return None  # an update kind the bot does not serve (member changes, polls, ...)
        user_id, refusal = self._identify(arrival)
        if refusal is not None:
            await _refuse(arrival, refusal)
            return None
        assert user_id is not None
        person = await self._directory.person(user_id)
        if person is None and arrival.message is not None:
            person = await self._redeem(arrival.message, user_id)
            if person is not None:
                return None  # the welcome is the whole answer to `/start <code>`
        if person is None:
            log.info("bot.refused_unknown", user_id=user_id)
            await _refuse(arrival, replies.unknown_sender(_telegram_id(arrival)))
            return None
        if not person.is_active:
            log.info("bot.refused_blocked", user_id=user_id)
            await _refuse(arrival, replies.blocked_sender(_telegram_id(arrival)))
            return None
        limited = await self._limiter.hit(user_id)
        if limited is not None:
            log.info("bot.rate_limited", user_id=user_id, retry_after=limited.retry_after)
            await _refuse(arrival, replies.rate_limited(limited.retry_after))
            return None
        data["person"] = person
        return await handler(event, data)

    def _identify(self, arrival: _Arrival) -> tuple[str | None, str | None]:
        """The acting user id, or the reason this sender cannot be told apart from others."""
        chat = arrival.chat
        if chat is not None and chat.type != "private" and chat.id not in self._groups:
            return None, replies.GROUP_REFUSED
        shared = arrival.sender_chat is not None or (
            arrival.sender is None or arrival.sender.id in SHARED_SENDERS
        )
        if shared:
            if chat is not None and chat.id in self._shared_ok:
                return telegram_user(chat.id), None
            return None, replies.SHARED_SENDER_REFUSED
        assert arrival.sender is not None
        if arrival.sender.is_bot:
            return None, replies.SHARED_SENDER_REFUSED
        return telegram_user(arrival.sender.id), None

    async def _redeem(self, message: Message, user_id: str) -> Person | None:
        text = (message.text or "").strip()
        command, _, code = text.partition(" ")
        if command.split("@", 1)[0] != "/start" or not code.strip():
            return None
        sender = message.from_user
        try:
            person = await self._directory.redeem_invite(
                code.strip(),
                user_id,
                display_name=sender.full_name if sender is not None else "",
                chat_id=message.chat.id,
            )
        except AccessError as exc:
            await message.answer(f"{exc}. Your Telegram id is {_telegram_id_of(message)}.")
            return Person(id=user_id, role="", status="")  # answered: stop here
        log.info("bot.invite_redeemed", user_id=user_id, added_by=person.added_by)
        await message.answer(replies.WELCOME + "\n\n" + replies.START)
        return person


def _arrival(update: Update) -> _Arrival | None:
    message = update.message or update.edited_message
    if message is not None:
        return _Arrival(message.from_user, message.sender_chat, message.chat, message, None)
    query = update.callback_query
    if query is not None:
        chat = query.message.chat if query.message is not None else None
        return _Arrival(query.from_user, None, chat, None, query)
    return None


def _telegram_id(arrival: _Arrival) -> int:
    if arrival.sender is not None:
        return arrival.sender.id
    return arrival.chat.id if arrival.chat is not None else 0


def _telegram_id_of(message: Message) -> int:
    return message.from_user.id if message.from_user is not None else message.chat.id


async def _refuse(arrival: _Arrival, text: str) -> None:
    if arrival.message is not None:
        await arrival.message.answer(text)
    elif arrival.query is not None:
        await arrival.query.answer(text, show_alert=True)
