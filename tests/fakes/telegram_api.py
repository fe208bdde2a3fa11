"""A fake Telegram Bot API server: real HTTP on 127.0.0.1, the real wire format, recorded calls.

aiogram is pointed at it with `AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))`,
so everything between our code and Telegram's servers (aiogram's session, its form encoding, its
error classification, long polling) runs for real. Only the methods the orchestrator uses exist;
any other method answers 404 "Not Found" like the real API does for unknown methods.

Tests drive it by enqueueing updates (delivered by `getUpdates` long polling), by scripting
failures (`fail_next`, `rate_limit_next`, `block_chat`) and by reading `calls`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from infra.stack.ports import free_port

BOT_ID = 424242
BOT_USERNAME = "orchestrator_test_bot"

#: Form fields that are plain strings on the wire and must never be JSON-decoded.
_STRING_FIELDS = frozenset({"text", "caption", "parse_mode", "url", "secret_token"})


@dataclass(frozen=True)
class Call:
    """One request the fake received: the method name, the token and the decoded parameters."""

    method: str
    token: str
    params: dict[str, Any]


@dataclass
class _ScriptedError:
    status: int
    description: str
    parameters: dict[str, Any] | None = None


@dataclass
class _Chat:
    messages: dict[int, str] = field(default_factory=dict)


class FakeTelegramAPI:
    """The fake server. Use `async with FakeTelegramAPI() as fake:` or `start()`/`stop()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[Call] = []
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._new_update = asyncio.Event()
        self._scripted: dict[str, list[_ScriptedError]] = defaultdict(list)
        self._blocked: dict[int, str] = {}
        self._chats: dict[int, _Chat] = defaultdict(_Chat)
        self._runner: web.AppRunner | None = None
        self._call_arrived = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """The base for `TelegramAPIServer.from_base`."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeTelegramAPI:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        # Wake any long poll so the runner's graceful shutdown does not wait for its timeout.
        self._new_update.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegramAPI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ scripting

    def enqueue_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (without `update_id`, which the fake assigns); returns its id."""
        update_id = next(self._update_ids)
        self._updates.append({"update_id": update_id, **update})
        self._new_update.set()
        return update_id

    def enqueue_message(
        self,
        text: str,
        *,
        chat_id: int,
        user_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Queue a private-chat text message from a user, optionally replying to a bot message."""
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
            "from": {"id": user_id or chat_id, "is_bot": False, "first_name": "Tester"},
            "text": text,
        }
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if reply_to is not None:
            message["reply_to_message"] = {
                "message_id": reply_to,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Orchestrator"},
                "text": self._chats[chat_id].messages.get(reply_to, ""),
            }
        return self.enqueue_update({"message": message})

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        status: int = 400,
        description: str = "Bad Request: scripted failure",
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` with this error."""
        error = _ScriptedError(status, description, parameters)
        self._scripted[method].extend([error] * times)

    def rate_limit_next(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next `times` calls of `method` with Telegram's flood-control 429."""
        self.fail_next(
            method,
            times,
            status=429,
            description=f"Too Many Requests: retry after {retry_after}",
            parameters={"retry_after": retry_after},
        )

    def block_chat(
        self, chat_id: int, description: str = "Forbidden: bot was blocked by the user"
    ) -> None:
        """Every call addressed to `chat_id` fails with 403 from now on."""
        self._blocked[chat_id] = description

    # ------------------------------------------------------------------ inspection

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def text_of(self, chat_id: int, message_id: int) -> str | None:
        """The current text of a message the bot sent (after edits)."""
        return self._chats[chat_id].messages.get(message_id)

    def message_id_of(self, chat_id: int, text: str) -> int | None:
        """The id of the newest message the bot sent to `chat_id` with exactly `text`."""
        found = [mid for mid, sent in self._chats[chat_id].messages.items() if sent == text]
        return max(found) if found else None

    async def wait_for(
        self, predicate: Callable[[list[Call]], bool], timeout: float = 10.0
    ) -> list[Call]:
        """Wait until `predicate(calls)` holds; the calls are returned for convenience."""
        async with self._call_arrived:
            await asyncio.wait_for(
                self._call_arrived.wait_for(lambda: predicate(self.calls)), timeout
            )
        return self.calls

    async def wait_for_call(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """Wait until `method` was called at least `count` times; returns those calls."""
        await self.wait_for(
            lambda calls: len([c for c in calls if c.method == method]) >= count, timeout
        )
        return self.calls_of(method)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append(Call(method, token, params))
        async with self._call_arrived:
            self._call_arrived.notify_all()

        scripted = self._scripted.get(method)
        if scripted:
            error = scripted.pop(0)
            return _error(error.status, error.description, error.parameters)
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int) and chat_id in self._blocked:
            return _error(403, self._blocked[chat_id])

        handler = self._methods().get(method)
        if handler is None:
            return _error(404, "Not Found")
        try:
            return await handler(params)
        except _ApiError as error:
            return _error(error.status, error.description)

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[web.Response]]]:
        return {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "getUpdates": self._get_updates,
            "deleteWebhook": self._true,
            "setWebhook": self._true,
            "setMyCommands": self._true,
            "deleteMessage": self._true,
            "answerCallbackQuery": self._true,
            "close": self._true,
        }

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        raw: dict[str, str] = {}
        if request.can_read_body:
            if request.content_type == "application/json":
                return dict(await request.json())
            form = await request.post()
            raw = {key: str(value) for key, value in form.items()}
        raw.update(request.query)
        return {key: _decode(key, value) for key, value in raw.items()}

    async def _get_me(self, params: dict[str, Any]) -> web.Response:
        return _ok(
            {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Orchestrator",
                "username": BOT_USERNAME,
                "can_join_groups": False,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _send_message(self, params: dict[str, Any]) -> web.Response:
        chat_id = _require_chat(params)
        text = str(params.get("text", ""))
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        message_id = next(self._message_ids)
        self._chats[chat_id].messages[message_id] = text
        return _ok(_message(chat_id, message_id, text))

    async def _edit_message_text(self, params: dict[str, Any]) -> web.Response:
        chat_id = _require_chat(params)
        message_id = params.get("message_id")
        text = str(params.get("text", ""))
        messages = self._chats[chat_id].messages
        if not isinstance(message_id, int) or message_id not in messages:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if messages[message_id] == text:
            raise _ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and "
                "reply markup are exactly the same as a current content and reply markup "
                "of the message",
            )
        messages[message_id] = text
        return _ok({**_message(chat_id, message_id, text), "edit_date": int(time.time())})

    async def _get_updates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout = float(params.get("timeout") or 0)
        # Confirming updates (offset) drops them, exactly like the real API.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout
        while not self._updates and self._runner is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), remaining)
            except TimeoutError:
                break
        return _ok(self._updates[:limit])

    async def _true(self, params: dict[str, Any]) -> web.Response:
        return _ok(True)


class _ApiError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _require_chat(params: dict[str, Any]) -> int:
    chat_id = params.get("chat_id")
    if not isinstance(chat_id, int):
        raise _ApiError(400, "Bad Request: chat not found")
    return chat_id


def _decode(key: str, value: str) -> Any:
    """Undo aiogram's form encoding: non-string values travel as JSON text."""
    if key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _message(chat_id: int, message_id: int, text: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
        "from": {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Orchestrator",
            "username": BOT_USERNAME,
        },
        "text": text,
    }


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
