"""HTTP request metrics, recorded in middleware so no endpoint has to remember them."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_DURATION = Histogram(
    "orchestrator_api_request_duration_seconds",
    "HTTP API requests by method, route template and status code",
    ("method", "route", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """ASGI middleware: one observation per HTTP request, labelled by route template.

    The template (`/projects/{ref}`), not the path, keeps label cardinality bounded; requests
    that match no route count as `unmatched`. Added outermost, so 401s and 422s count too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def record_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            REQUEST_DURATION.labels(scope["method"], _route(scope), str(status_code)).observe(
                time.perf_counter() - started
            )


def _route(scope: Scope) -> str:
    # The router records the matched route in the (shared) scope while it dispatches.
    return str(getattr(scope.get("route"), "path", "unmatched"))
