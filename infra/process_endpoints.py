"""The HTTP port every process serves: `/metrics`, `/livez` and `/readyz`.

One small WSGI application on prometheus_client's threading WSGI server (what its own
`start_http_server` runs), bound to `ORCH_METRICS__HOST:ORCH_METRICS__PORT`: `/livez` and
`/readyz` answer JSON from `infra.health.HealthChecks`, every other path is the metrics
exposition, as before. It runs in a thread, not on the event loop, so that a blocked loop is
reported (503 from `/livez`) instead of leaving probes without an answer; the readiness checks
still run on the loop. The HTTP API serves the same routes from its own app on its own port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from infra.health import HealthChecks, HealthReport

LIVEZ = "/livez"
READYZ = "/readyz"


def health_response(report: HealthReport) -> tuple[int, bytes]:
    """Status code and JSON body of a health report: 200 when healthy, 503 otherwise."""
    return (200 if report.ok else 503), json.dumps(report.to_json()).encode()


def endpoints_app(health: HealthChecks) -> WSGIApplication:
    """`/livez` and `/readyz` from `health`; anything else is the Prometheus exposition."""
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == LIVEZ:
            report = health.liveness()
        elif path == READYZ:
            report = health.readiness_from_thread()
        else:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        code, body = health_response(report)
        start_response(
            "200 OK" if code == 200 else "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    """Probes arrive every few seconds; the process's structured log is not the access log."""

    def log_message(self, format: str, *args: object) -> None:
        return


class ProcessEndpoints:
    """The endpoints' server thread and the heartbeat they report on, started and stopped together.

    Port 0 (the settings' default) serves nothing; the heartbeat still runs, so the HTTP API,
    which serves the same routes itself, can use the same `HealthChecks`.
    """

    def __init__(self, host: str, port: int, health: HealthChecks) -> None:
        self.host = host
        self.port = port
        self.health = health
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the heartbeat on the running loop and bind the port (OSError if it is taken)."""
        self.health.start()
        if self.port == 0 or self._server is not None:
            return
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        self._server = make_server(
            self.host, self.port, endpoints_app(self.health), Server, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="process-endpoints", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # `shutdown` waits for the serving thread's next poll (up to half a second).
            await asyncio.to_thread(server.shutdown)
            server.server_close()
        await self.health.stop()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
