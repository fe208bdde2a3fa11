"""The HTTP API as remote mode reaches it: a bearer token, one-line errors, safe retries.

Every request carries `Authorization: Bearer <token>`. A request that publishes something
(`POST`) carries an `Idempotency-Key` chosen once per command, so the retry after a lost answer
(a timeout, a dropped connection, a 503 that says nothing was recorded) is the same request to the
API: it answers what it answered the first time and never makes a second project or operation.

Whatever goes wrong ends as `ApiError`, whose message is the one line the person reads: the token
was refused, the API's `detail` (404, 409, 422), or the URL that could not be reached.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .endpoints import RemoteApi

#: Attempts per request, and the pause before each retry: a lost answer is retried at once,
#: a restarting API gets a few seconds.
ATTEMPTS = 3
BACKOFF_SECONDS = (0.5, 2.0)
TIMEOUT_SECONDS = 15.0


class ApiError(RuntimeError):
    """The API refused the request or could not be reached; the message says which, in a line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class ApiClient:
    """One command's requests to the API, over one connection pool."""

    def __init__(self, remote: RemoteApi, http: httpx.AsyncClient) -> None:
        self._remote = remote
        self._http = http

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return (await self._send("GET", path, params=params)).json()

    async def post(self, path: str, body: dict[str, Any] | None, idempotency_key: str) -> Any:
        headers = {"Idempotency-Key": idempotency_key}
        return (await self._send("POST", path, json=body, headers=headers)).json()

    async def put(self, path: str, body: dict[str, Any]) -> None:
        await self._send("PUT", path, json=body)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying what is safe to send again; raise `ApiError` for anything but 2xx."""
        for attempt in range(ATTEMPTS):
            last = attempt == ATTEMPTS - 1
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ApiError(
                        f"cannot reach the API at {self._remote.url}: {_why(exc)}"
                    ) from None
            else:
                if response.status_code != 503 or last:
                    _raise_for_status(response)
                    return response
            await asyncio.sleep(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
        raise AssertionError("unreachable: the last attempt returns or raises")


@asynccontextmanager
async def api_client(remote: RemoteApi) -> AsyncIterator[ApiClient]:
    headers = {"Authorization": f"Bearer {remote.token}", "Accept": "application/json"}
    async with httpx.AsyncClient(
        base_url=remote.url, headers=headers, timeout=TIMEOUT_SECONDS
    ) as http:
        yield ApiClient(remote, http)


def _raise_for_status(response: httpx.Response) -> None:
    code = response.status_code
    if code < 400:
        return
    detail = _detail(response)
    if code in (401, 403):
        raise ApiError(f"the API refused the token: {detail}", code)
    if code == 429:
        wait = response.headers.get("Retry-After")
        raise ApiError(detail + (f" (retry after {wait} s)" if wait else ""), code)
    if code >= 500:
        raise ApiError(f"the API failed ({code}): {detail}", code)
    raise ApiError(detail, code)


def _detail(response: httpx.Response) -> str:
    """FastAPI's `detail`: a sentence, or a list of validation errors (the first one is enough)."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        where = ".".join(str(part) for part in detail[0].get("loc", ())[1:])
        detail = f"{where}: {detail[0].get('msg', '')}" if where else detail[0].get("msg")
    if not detail:
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return " ".join(str(detail).split())


def _why(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unknown"
    return str(exc) or type(exc).__name__
