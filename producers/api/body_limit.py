"""A bound on request bodies, enforced before anything reads them (parsing or authentication).

FastAPI reads and parses the JSON body before it resolves any dependency, the bearer token
included, and uvicorn sets no size limit; without this middleware a client with no token could
make the process buffer any amount. Two checks, both before the app sees a byte:

- a declared `Content-Length` above the limit is refused at once, with no read at all;
- a body without one (chunked) is counted as it streams, and refused as soon as it passes the
  limit, so at most `max_bytes` plus one chunk is ever held.

A refusal is 413 with a JSON `detail` naming the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the streamed body passes the limit.

    An HTTPException, because FastAPI turns any other error met while reading a body into
    "400 error parsing the body"; this one it re-raises, and its handler answers 413.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail=detail)


class BodySizeLimit:
    """ASGI middleware; add it outermost but for metrics, so it runs before routing."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    def _detail(self) -> str:
        return (
            f"the request body is larger than this API accepts ({self._max} bytes): "
            "send a shorter description, answer or secret"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise BodyTooLarge(self._detail())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # a handler streamed a response before reading its body: nothing to do
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": self._detail()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
