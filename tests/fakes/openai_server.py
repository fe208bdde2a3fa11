"""A scripted OpenAI-compatible chat-completions server for tests.

Tests talk to it with the real clients (`openai`, `langchain_openai.ChatOpenAI`) over real
HTTP, so request building, tool-call parsing, streaming and usage accounting are exercised
exactly as against a provider. Only the model's *answers* are scripted.

Usage::

    from tests.fakes.openai_server import Reply, ScriptedOpenAI

    server = ScriptedOpenAI()
    base_url = server.start()                 # "http://127.0.0.1:<port>/v1"
    server.replies(
        Reply.tool_call("ProjectSpec", {"name": "Expenses", ...}),
        Reply.text("done", prompt_tokens=12, completion_tokens=3),
        Reply.error(503, "overloaded"),       # an OpenAI-style error body with that status
    )
    llm = ChatOpenAI(base_url=base_url, api_key="test-key", model="scripted", max_retries=0)
    ...
    server.requests        # every request body (parsed JSON), in arrival order
    server.headers         # the matching request headers (e.g. Authorization)
    server.prompt_text()   # all message contents of all requests: assert no secret is in it
    server.stop()

    with ScriptedOpenAI() as server: ...      # start() on enter, stop() on exit

`POST /v1/embeddings` answers with deterministic vectors (`fake_embedding`): a hashed bag of
words in `EMBEDDING_DIMENSIONS` dimensions, L2-normalised, where the words of one group in
`SYNONYMS` share a dimension. So a text and its paraphrase ("car" and "automobile") are close,
which lets a test see what dense search adds over words alone. `server.embedding_requests`
and `server.embedding_headers` record those calls; `server.fail_embeddings(503, times=2)`
makes the next calls fail with an OpenAI-style error.

Instead of a list, a callable can answer every request: `ScriptedOpenAI(script=fn)` or
`server.respond_with(fn)`, where `fn(request_json) -> Reply | dict` (a dict is sent verbatim as
the JSON body of a non-streaming response). Queued replies are used first, then the callable.
With neither left, the server answers 400 "script exhausted" (a status the OpenAI client does
not retry), so a test that makes one call too many fails loudly instead of hanging.

Every completion carries `usage`. When a reply does not set token counts, they are estimated
as characters / 4 of the request messages and of the reply, so cost accounting sees non-zero
numbers. Requests with `"stream": true` are answered as server-sent events in the OpenAI
chunk format (content and tool-call deltas, a finish chunk, a usage chunk, `[DONE]`).

The server runs its own event loop in a daemon thread, so it serves sync and async clients
alike and never competes with the test's event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

JsonDict = dict[str, Any]
Script = Callable[[JsonDict], "Reply | JsonDict"]

EMBEDDING_DIMENSIONS = 64
#: Words that mean the same to the fake embedding model (each group shares one dimension).
SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"car", "cars", "automobile", "automobiles", "vehicle", "vehicles"}),
    frozenset({"money", "expense", "expenses", "spending", "cost", "costs", "budget"}),
    frozenset({"weather", "forecast", "forecasts", "rain", "temperature"}),
    frozenset({"shop", "store", "retail", "orders", "order", "purchase"}),
)


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector: one dimension per word (synonyms share one)."""
    vector = [0.0] * dimensions
    for word in re.findall(r"[a-z]+", text.lower()):
        key = next((min(group) for group in SYNONYMS if word in group), word)
        digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
        vector[int.from_bytes(digest, "big") % dimensions] += 1.0
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


@dataclass(frozen=True)
class ToolCall:
    """One function call the scripted model makes."""

    name: str
    arguments: JsonDict | str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def arguments_json(self) -> str:
        """Arguments as the provider sends them: a JSON string (a str is sent verbatim)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class Reply:
    """One scripted answer: assistant text, tool calls, or an HTTP error."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: int = 200
    error_message: str = ""
    model: str | None = None

    @classmethod
    def text(cls, content: str, **kwargs: Any) -> Reply:
        return cls(content=content, **kwargs)

    @classmethod
    def tool_call(cls, name: str, arguments: JsonDict | str, **kwargs: Any) -> Reply:
        """A reply with one tool call; `arguments` may be a raw string to script broken JSON."""
        return cls(tool_calls=(ToolCall(name, arguments),), **kwargs)

    @classmethod
    def calls(cls, *tool_calls: ToolCall, **kwargs: Any) -> Reply:
        return cls(tool_calls=tool_calls, **kwargs)

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        return cls(status=status, error_message=message)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _messages_text(request: JsonDict) -> str:
    parts: list[str] = []
    for message in request.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
        for call in message.get("tool_calls") or []:
            parts.append(str(call.get("function", {}).get("arguments", "")))
    return "\n".join(parts)


class ScriptedOpenAI:
    """An OpenAI-compatible `/v1/chat/completions` endpoint answering from a script."""

    def __init__(self, script: Iterable[Reply | JsonDict] | Script | None = None) -> None:
        self._queue: deque[Reply | JsonDict] = deque()
        self._fallback: Script | None = None
        if callable(script):
            self._fallback = script
        elif script is not None:
            self._queue.extend(script)
        self.requests: list[JsonDict] = []
        self.headers: list[dict[str, str]] = []
        self.embedding_requests: list[JsonDict] = []
        self.embedding_headers: list[dict[str, str]] = []
        self._embedding_failures: deque[int] = deque()
        #: Size of the vectors `/embeddings` returns (set it to act as another model).
        self.embedding_dimensions = EMBEDDING_DIMENSIONS
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ script

    def replies(self, *replies: Reply | JsonDict) -> Self:
        """Queue replies; each request takes the next one."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def respond_with(self, script: Script) -> Self:
        """Answer requests with `script(request_json)` once the queued replies are used up."""
        self._fallback = script
        return self

    def fail_embeddings(self, status: int, times: int = 1) -> Self:
        """Answer the next `times` embeddings calls with an error of this status."""
        with self._lock:
            self._embedding_failures.extend([status] * times)
        return self

    def prompt_text(self) -> str:
        """Every message content of every recorded request, joined (for secret checks)."""
        return "\n".join(_messages_text(request) for request in self.requests)

    def raw_bodies(self) -> str:
        """Every recorded request body re-serialized, tools and schemas included."""
        return "\n".join(json.dumps(request, ensure_ascii=False) for request in self.requests)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Listen on 127.0.0.1 (random port) and return the base URL ending in `/v1`."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                port = loop.run_until_complete(self._open())
                self.base_url = f"http://127.0.0.1:{port}/v1"
            except BaseException as exc:  # surfaced to the caller of start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=serve, name="scripted-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("ScriptedOpenAI did not start within 10 s")
        if failure:
            raise RuntimeError("ScriptedOpenAI failed to start") from failure[0]
        return self.base_url

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def _open(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ protocol

    async def _models(self, _request: web.Request) -> web.Response:
        models = [{"id": "scripted", "object": "model"}]
        return web.json_response({"object": "list", "data": models})

    async def _embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON")
        with self._lock:
            self.embedding_requests.append(body)
            self.embedding_headers.append(dict(request.headers))
            failure = self._embedding_failures.popleft() if self._embedding_failures else None
        if failure is not None:
            return _error(failure, "scripted embeddings error")
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
            return _error(400, "'input' must be a string or a non-empty list of strings")
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": fake_embedding(text, self.embedding_dimensions),
            }
            for index, text in enumerate(texts)
        ]
        tokens = sum(_estimate_tokens(text) for text in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model", "scripted-embeddings")),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    def _next_reply(self, body: JsonDict) -> Reply | JsonDict | None:
        with self._lock:
            self.requests.append(body)
            if self._queue:
                return self._queue.popleft()
        if self._fallback is not None:
            return self._fallback(body)
        return None

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON")
        with self._lock:
            self.headers.append(dict(request.headers))
        reply = self._next_reply(body)
        if reply is None:
            count = len(self.requests)
            return _error(400, f"ScriptedOpenAI: script exhausted at request {count}")
        if isinstance(reply, dict):
            return web.json_response(reply)
        if reply.status != 200:
            return _error(reply.status, reply.error_message or "scripted error")
        completion_id = f"chatcmpl-scripted-{next(self._ids)}"
        model = reply.model or str(body.get("model", "scripted"))
        usage = _usage(body, reply)
        if body.get("stream"):
            return await self._stream(request, completion_id, model, reply, usage)
        message: JsonDict = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for call in reply.tool_calls
            ]
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": reply.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
        )

    async def _stream(
        self, request: web.Request, completion_id: str, model: str, reply: Reply, usage: JsonDict
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())

        def chunk(delta: JsonDict, finish: str | None = None, **extra: Any) -> bytes:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}))
        if reply.content:
            # Two pieces, so clients have to concatenate deltas as they do with real providers.
            half = len(reply.content) // 2
            for piece in (reply.content[:half], reply.content[half:]):
                if piece:
                    await response.write(chunk({"content": piece}))
        for index, call in enumerate(reply.tool_calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await response.write(chunk({"tool_calls": [head]}))
            arguments = call.arguments_json()
            await response.write(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})
            )
        await response.write(chunk({}, reply.finish_reason))
        usage_chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await response.write(f"data: {json.dumps(usage_chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _usage(body: JsonDict, reply: Reply) -> JsonDict:
    completion_text = (reply.content or "") + "".join(
        call.name + call.arguments_json() for call in reply.tool_calls
    )
    prompt = (
        reply.prompt_tokens
        if reply.prompt_tokens is not None
        else _estimate_tokens(_messages_text(body) + json.dumps(body.get("tools", [])))
    )
    completion = (
        reply.completion_tokens
        if reply.completion_tokens is not None
        else _estimate_tokens(completion_text)
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _error(status: int, message: str) -> web.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}, status=status
    )
