"""Composition root of the scheduler process."""

from __future__ import annotations

import asyncio
import signal

from nats.aio.client import Client
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.bus.credentials import connect as connect_nats
from infra.bus.publisher import JetStreamPublisher
from infra.health import HealthChecks, nats_connected
from infra.logging import configure_logging
from infra.process_endpoints import ProcessEndpoints
from infra.settings import get_settings

from .service import Scheduler


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_SCHEDULER__", extra="ignore")

    jobs: dict[str, float] = Field(
        {"timeouts": 30.0, "health": 60.0, "server-health": 60.0, "reconcile": 600.0},
        description="Job name → period in seconds (JSON in ORCH_SCHEDULER__JOBS)",
    )


async def serve(stop: asyncio.Event) -> int:
    settings = get_settings()
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc: Client | None = None
    # Ready while it can publish ticks: NATS is its only dependency.
    health = HealthChecks(settings.health)
    health.add("nats", nats_connected(lambda: nc))
    async with ProcessEndpoints(settings.metrics.host, settings.metrics.port, health):
        # Its own NATS user (from Vault), allowed to publish ticks and nothing else.
        nc = await connect_nats(settings, max_reconnect_attempts=-1, closed_cb=on_closed)
        scheduler = Scheduler(JetStreamPublisher.from_client(nc), SchedulerSettings().jobs)
        runner = asyncio.create_task(scheduler.run(stop))
        closed_wait = asyncio.create_task(closed.wait())
        await asyncio.wait([runner, closed_wait], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        closed_wait.cancel()
        await runner
        exit_code = 1 if closed.is_set() else 0
        if not closed.is_set():
            await nc.close()
    return exit_code


def main() -> None:
    configure_logging("scheduler")

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await serve(stop)

    raise SystemExit(asyncio.run(run()))
