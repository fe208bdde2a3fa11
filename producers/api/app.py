"""Composition root of the HTTP API process: JetStream, database, Vault (AppRole `api`), uvicorn.

The API is a producer: it publishes intents and `SecretStored`, reads the project tables, and
writes secret values to Vault with a policy that cannot read them back. It never talks to a
consumer directly. `build_api` takes every dependency, so tests pass real servers' clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.bus.credentials import connect as connect_nats
from infra.bus.faults import is_connectivity_error, is_contention_error
from infra.bus.publisher import JetStreamPublisher, Publisher
from infra.db.session import make_engine, make_sessionmaker
from infra.health import HealthChecks, HealthReport, database_reachable, nats_connected
from infra.logging import configure_logging
from infra.quotas import QuotaExceeded
from infra.settings import QuotaSettings, Settings, get_settings
from infra.vault import SecretNotFound, VaultClient
from producers.adoption import BadRepositoryUrl
from producers.api.admin import build_admin_router
from producers.api.alerts import build_alerts_router
from producers.api.auth import Guards
from producers.api.body_limit import BodySizeLimit
from producers.api.metrics import RequestMetrics
from producers.api.routes import build_router
from producers.api.schemas import Health, HealthReportOut
from producers.api.service import Conflict, ProjectService, SecretWriter, Unavailable
from producers.api.settings import ApiSettings
from producers.credential_scan import CredentialInText
from producers.idempotency import IdempotencyKeyReused
from producers.rate_limit import RateLimiter
from producers.read_model import ProjectNotFound

PROCESS = "api"
#: Seconds a client should wait before repeating a request refused with 503.
RETRY_AFTER = "5"

log = structlog.stdlib.get_logger(__name__)


def build_api(
    publisher: Publisher,
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: SecretWriter,
    *,
    jetstream: JetStreamContext,
    settings: ApiSettings | None = None,
    quotas: QuotaSettings | None = None,
    health: HealthChecks | None = None,
) -> FastAPI:
    """The ASGI application; the caller owns (opens and closes) the dependencies.

    `jetstream` serves the admin routes' reads (lag, dead letters); intents go through
    `publisher`, so a test can make publishing fail without breaking the reads. `health` backs
    `/livez` and `/readyz`; the caller starts its heartbeat (`serve` does).
    """
    health = health or HealthChecks()
    settings = settings or ApiSettings()
    quotas = quotas or QuotaSettings()
    app = FastAPI(
        title="Codegen Orchestrator API",
        version="1",
        description="Describe a service in words; follow it being specified, built and "
        "deployed. Every endpoint but /healthz, /livez, /readyz and /metrics needs "
        "`Authorization: Bearer <token>` (`orchestrator tokens create NAME`); the /admin "
        "endpoints need an admin token (`--role admin`).",
    )
    guards = Guards(
        sessionmaker,
        RateLimiter(
            settings.rate_limit, namespace="api-token", storage_uri=settings.rate_limit_storage
        ),
    )
    service = ProjectService(publisher, sessionmaker, vault, quotas=quotas)
    app.include_router(build_router(service, guards))
    app.include_router(build_admin_router(guards, sessionmaker, jetstream, quotas))
    app.include_router(build_alerts_router(guards, sessionmaker, publisher))

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process serves requests")
    async def healthz() -> Health:
        return Health(status="ok")

    failing: dict[int | str, dict[str, Any]] = {
        503: {"model": HealthReportOut, "description": "A check failed (named in the body)"}
    }

    @app.get(
        "/livez",
        tags=["operations"],
        summary="Liveness: the event loop runs its heartbeat",
        response_model=HealthReportOut,
        responses=failing,
    )
    async def livez() -> JSONResponse:
        # This request runs on the loop, so the heartbeat may start here if the caller did not
        # start it (an app built alone, in a test).
        health.start()
        return _health_response(health.liveness())

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: NATS connected, PostgreSQL answering, the Vault token valid",
        response_model=HealthReportOut,
        responses=failing,
    )
    async def readyz() -> JSONResponse:
        health.start()
        return _health_response(await health.readiness())

    # A route, not a mounted ASGI app: a mount answers `/metrics` with a redirect to `/metrics/`.
    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # Added last is outermost: metrics see every request, the size limit runs before routing.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics)
    _add_error_handlers(app)
    return app


def _health_response(report: HealthReport) -> JSONResponse:
    return JSONResponse(
        report.to_json(),
        status.HTTP_200_OK if report.ok else status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Cache-Control": "no-store"},
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Domain errors become status codes with their message as `detail`."""

    @app.exception_handler(ProjectNotFound)
    async def not_found(_: Request, exc: ProjectNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)

    @app.exception_handler(SecretNotFound)
    async def secret_not_found(_: Request, exc: SecretNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)

    @app.exception_handler(CredentialInText)
    async def credential(_: Request, exc: CredentialInText) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(BadRepositoryUrl)
    async def bad_repository(_: Request, exc: BadRepositoryUrl) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(QuotaExceeded)
    async def quota(_: Request, exc: QuotaExceeded) -> JSONResponse:
        if exc.frees_at is None:
            return JSONResponse({"detail": str(exc)}, status.HTTP_403_FORBIDDEN)
        wait = max(1, math.ceil((exc.frees_at - datetime.now(UTC)).total_seconds()))
        return JSONResponse(
            {"detail": str(exc)},
            status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(wait)},
        )

    @app.exception_handler(IdempotencyKeyReused)
    async def key_reused(_: Request, exc: IdempotencyKeyReused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_409_CONFLICT)

    @app.exception_handler(Unavailable)
    async def unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": RETRY_AFTER},
        )

    @app.exception_handler(sa_exc.OperationalError)
    async def database_busy(_: Request, exc: sa_exc.OperationalError) -> JSONResponse:
        # A lock another request holds past `lock_timeout`, or the database out of reach:
        # nothing was done, and the same request (with its Idempotency-Key) can be sent again.
        if is_contention_error(exc):
            detail = "the database is busy with this data; send the request again"
        elif is_connectivity_error(exc):
            detail = "the database cannot be reached; send the request again"
        else:
            raise exc
        log.warning("api.database_unavailable", error=type(exc.orig).__name__)
        return JSONResponse(
            {"detail": detail},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": RETRY_AFTER},
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes each rejected `input`; for a secret that is its value.
        errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status.HTTP_422_UNPROCESSABLE_CONTENT)


class _Server(uvicorn.Server):
    """uvicorn, minus its signal capture.

    uvicorn re-raises the stop signal once it has served, which kills the process before it
    closes NATS and the database; `serve` handles SIGTERM and SIGINT itself instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, api_settings: ApiSettings) -> int:
    """Serve until a signal (exit 0) or until the NATS connection is closed for good (exit 1)."""
    vault = VaultClient.from_settings(settings.vault)
    await vault.login()
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    # Reconnect forever; if the client still closes, exit so the supervisor restarts us.
    nc = await connect_nats(
        settings,
        vault=vault,
        max_reconnect_attempts=-1,
        connect_timeout=5,
        closed_cb=on_closed,
    )
    engine = make_engine(
        settings.database.url,
        pool_size=settings.database.pool_size,
        options=settings.database.session_options(),
    )
    publisher = JetStreamPublisher.from_client(
        nc, timeout=api_settings.publish_timeout_seconds, attempts=2
    )
    health = HealthChecks(settings.health)
    health.add("nats", nats_connected(lambda: nc))
    health.add("postgres", database_reachable(lambda: engine))
    health.add("vault", vault.check_token)
    health.start()
    app = build_api(
        publisher,
        make_sessionmaker(engine),
        vault,
        jetstream=nc.jetstream(),
        settings=api_settings,
        quotas=settings.quotas,
        health=health,
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=api_settings.host,
            port=api_settings.port,
            log_config=None,  # keep the JSON pipeline `configure_logging` installed
            proxy_headers=True,
            forwarded_allow_ips=api_settings.forwarded_allow_ips,
        )
    )

    def stop() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    renew = asyncio.create_task(vault.keep_renewed())
    serving = asyncio.create_task(server.serve())
    bus_closed = asyncio.create_task(closed.wait())
    bus_lost = False
    try:
        await asyncio.wait([serving, bus_closed], return_when=asyncio.FIRST_COMPLETED)
        bus_lost = closed.is_set()
        if bus_lost:
            log.error("api.bus_closed", detail="NATS connection closed; exiting for a restart")
            server.should_exit = True
        await serving
    finally:
        for task in (renew, bus_closed):
            task.cancel()
        await health.stop()
        await engine.dispose()
        if not closed.is_set():
            with contextlib.suppress(Exception):
                await nc.close()
    return 1 if bus_lost else 0


def main() -> None:
    configure_logging(PROCESS)
    # The process is `api` whatever the environment says: its Vault AppRole and its NATS
    # user (read from Vault by that name) are the API's.
    settings = get_settings().model_copy(update={"process_name": PROCESS})
    raise SystemExit(asyncio.run(serve(settings, ApiSettings())))
