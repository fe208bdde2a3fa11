"""The metering proxy: a per-run HTTP server between model-facing code and the LLM provider.

The engineer starts one per coding run. Model-facing code (the coding container, or the
in-process loop) gets the proxy's address and a one-time token instead of the provider key:

- only `POST /v1/chat/completions` and `/v1/embeddings` (OpenAI-compatible providers) or
  `POST /v1/messages` (Anthropic) are forwarded, with the key added here; the key never
  leaves this process;
- a request without the run's token (`Authorization: Bearer` or `x-api-key`, compared in
  constant time) is refused with 401;
- before each call the ledger is asked whether the budget has money left and the run's
  wall-clock bound is checked; a refusal is a 402 (not retried by the OpenAI or Anthropic
  clients, unlike 429) whose message is the reason the project fails, kept in `refused`;
- after each call its tokens are read from the response (streamed or not) and written to the
  ledger at once, so a crash or a kill of the caller never loses the record.

It listens on a UNIX socket (bind-mounted into a container that has no network at all) or on
a loopback TCP port (the in-process coder). `host_routes` adds token-checked endpoints the
container may call on the host (running its tests in a second container, searching the
project's memory) through the same socket, so that socket is the container's only door. A
route gets the request's JSON object (at most `MAX_HOST_ROUTE_BODY_BYTES`; an empty body is
`{}`) and decides nothing from the caller's identity: whatever it acts on (the workspace, the
memory scope) was fixed on the host when the route was made.

aiohttp serves (it streams responses and serves UNIX sockets); httpx talks to the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import structlog
from aiohttp import web

from consumers.engineer.llm_proxy.ledger import Ledger, MeteredCall
from consumers.engineer.llm_proxy.usage import UsageReading
from infra.llm import TokenUsage, cost_usd
from infra.settings import LLMSettings

#: Where each provider's API lives when the settings name no base URL.
DEFAULT_UPSTREAMS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
ROUTES = {
    "openai": ("/v1/chat/completions", "/v1/embeddings"),
    "anthropic": ("/v1/messages",),
}
#: Request headers a client may pass through to the provider; everything else is dropped.
_FORWARDED_HEADERS = ("content-type", "accept", "anthropic-version", "anthropic-beta")
_MAX_BODY_BYTES = 16 * 1024 * 1024
#: A host route's request is a few fields (a search query), never a payload.
MAX_HOST_ROUTE_BODY_BYTES = 16 * 1024
_UPSTREAM_TIMEOUT = httpx.Timeout(300.0, connect=15.0)
_log = structlog.get_logger(__name__)

#: A host endpoint: the request's JSON object in, a JSON object out.
HostRoute = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


class HostRouteError(Exception):
    """A host route's refusal: the HTTP status and the reason its caller reads."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LLMProxy:
    """One run's proxy; `async with` starts nothing, `start_*` listens, `close` stops."""

    def __init__(
        self,
        *,
        settings: LLMSettings,
        api_key: str,
        token: str,
        ledger: Ledger,
        time_limit_seconds: float | None = None,
        host_routes: Mapping[str, HostRoute] | None = None,
        upstream_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        provider = settings.provider.strip().lower()
        if provider not in ROUTES:
            raise ValueError(f"the LLM proxy cannot forward to provider {settings.provider!r}")
        if not token:
            raise ValueError("the LLM proxy needs a non-empty run token")
        self._provider = provider
        self._settings = settings
        self._upstream = (settings.base_url or DEFAULT_UPSTREAMS[provider]).rstrip("/")
        self._api_key = api_key
        self._token = token.encode()
        self._ledger = ledger
        self._deadline = (
            time.monotonic() + time_limit_seconds if time_limit_seconds is not None else None
        )
        self._time_limit = time_limit_seconds
        self._host_routes = dict(host_routes or {})
        self._client = httpx.AsyncClient(timeout=_UPSTREAM_TIMEOUT, transport=upstream_transport)
        self._runner: web.AppRunner | None = None
        self._calls = 0
        #: The first refusal's reason (budget or time spent): the run fails with it.
        self.refused: str | None = None

    @property
    def calls(self) -> int:
        """Calls forwarded so far (refused ones not counted)."""
        return self._calls

    async def start_unix(self, path: Path) -> None:
        """Listen on a UNIX socket at `path` (its directory is bind-mounted into the container)."""
        runner = await self._setup()
        site = web.UnixSite(runner, str(path))
        await site.start()
        # The container runs as an unprivileged user other than ours only if configured so;
        # the token, not the file mode, is what keeps other local users out.
        await asyncio.to_thread(path.chmod, 0o666)

    async def start_tcp(self, host: str = "127.0.0.1") -> str:
        """Listen on a random loopback port; return the base URL (no path)."""
        runner = await self._setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = int(runner.addresses[0][1])
        return f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._client.aclose()

    async def _setup(self) -> web.AppRunner:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        for path in ROUTES[self._provider]:
            app.router.add_post(path, self._forward)
        for path in self._host_routes:
            app.router.add_post(path, self._host_route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        return self._runner

    def _authorised(self, request: web.Request) -> bool:
        offered = request.headers.get("x-api-key", "")
        bearer = request.headers.get("Authorization", "")
        if bearer.lower().startswith("bearer "):
            offered = bearer[7:].strip()
        return hmac.compare_digest(offered.encode(), self._token)

    async def _refusal(self) -> str | None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return (
                f"the coding run's time limit of {self._time_limit:.0f} s for LLM calls is "
                "spent; the task was stopped"
            )
        return await self._ledger.refusal()

    async def _host_route(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return _error(401, "this socket needs the run's token")
        raw = await _bounded_body(request, MAX_HOST_ROUTE_BODY_BYTES)
        if raw is None:
            return _error(
                413,
                f"a request to {request.path} is at most {MAX_HOST_ROUTE_BODY_BYTES} bytes of JSON",
            )
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return _error(400, f"the body of {request.path} is not JSON; send a JSON object")
        if not isinstance(body, dict):
            return _error(400, f"the body of {request.path} must be a JSON object")
        try:
            answer = await self._host_routes[request.path](body)
        except HostRouteError as refused:
            return _error(refused.status, refused.reason)
        return web.json_response(dict(answer))

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return _error(401, "the LLM proxy needs the run's token (Authorization: Bearer)")
        try:
            reason = await self._refusal()
        except Exception as exc:
            _log.error("llm_proxy.budget_check_failed", error=str(exc))
            return _error(503, "the LLM budget cannot be checked right now; try again later")
        if reason is not None:
            self.refused = self.refused or reason
            return _error(402, reason)
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        if body.get("stream") and request.path == "/v1/chat/completions":
            # Without it an OpenAI-compatible stream carries no token counts to meter.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        index = self._calls
        self._calls += 1
        reading = UsageReading(model=str(body.get("model") or self._settings.model))
        try:
            return await self._relay(request, body, reading)
        finally:
            await self._record(index, reading)

    async def _relay(
        self, request: web.Request, body: dict[str, Any], reading: UsageReading
    ) -> web.StreamResponse:
        headers = {
            name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers
        }
        headers["content-type"] = "application/json"
        if self._provider == "anthropic":
            headers["x-api-key"] = self._api_key
        elif self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        url = self._upstream + (
            request.path if self._provider == "anthropic" else request.path.removeprefix("/v1")
        )
        upstream_request = self._client.build_request(
            "POST", url, headers=headers, content=json.dumps(body).encode()
        )
        try:
            upstream = await self._client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            return _error(502, f"the LLM provider could not be reached: {type(exc).__name__}")
        try:
            reading.answered = upstream.status_code < 400
            content_type = upstream.headers.get("content-type", "application/json")
            if "text/event-stream" not in content_type:
                payload = await upstream.aread()
                if upstream.status_code < 400:
                    with contextlib.suppress(ValueError):
                        reading.read_json(json.loads(payload))
                return web.Response(
                    status=upstream.status_code, body=payload, content_type="application/json"
                )
            response = web.StreamResponse(
                status=upstream.status_code, headers={"Content-Type": content_type}
            )
            await response.prepare(request)
            pending = b""
            async for chunk in upstream.aiter_raw():
                await response.write(chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    reading.read_event_line(line.rstrip(b"\r"))
            reading.read_event_line(pending)
            await response.write_eof()
            return response
        finally:
            await upstream.aclose()

    async def _record(self, index: int, reading: UsageReading) -> None:
        if not reading.answered and not (reading.prompt_tokens or reading.completion_tokens):
            return
        tokens = TokenUsage(reading.prompt_tokens, reading.completion_tokens)
        call = MeteredCall(
            index=index,
            model=reading.model,
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            cost_usd=Decimal(str(cost_usd(tokens, self._settings))),
        )
        try:
            await self._ledger.record(call)
        except Exception as exc:
            # The call happened; losing its row would under-count, so say so loudly.
            _log.error("llm_proxy.usage_not_recorded", call=index, model=call.model,
                       prompt_tokens=call.prompt_tokens, error=str(exc))


async def _bounded_body(request: web.Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it proves longer than `limit` bytes."""
    if (request.content_length or 0) > limit:
        return None
    raw = b""
    while chunk := await request.content.read(limit + 1 - len(raw)):
        raw += chunk
        if len(raw) > limit:
            return None
    return raw


def _error(status: int, message: str) -> web.Response:
    """An error both SDKs parse: OpenAI reads `error.message`, Anthropic `type` + `error`."""
    kind = {401: "authentication_error", 402: "budget_exceeded"}.get(status, "proxy_error")
    return web.json_response(
        {"type": "error", "error": {"type": kind, "message": message, "code": kind}},
        status=status,
    )
