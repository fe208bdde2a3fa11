"""Composition root of the lag exporter: its NATS user (from Vault), the collectors, /metrics,
/livez and /readyz.

It connects as the `lag_exporter` NATS user, which may read stream and durable info and
nothing else (`infra.bus.permissions.lag_exporter_permissions`), reconnects forever, and exits
with 1 when the connection is closed for good so its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from nats.aio.client import Client
from prometheus_client import REGISTRY
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.bus.credentials import connect as connect_nats
from infra.health import HealthChecks, nats_connected
from infra.lag_exporter.collectors import (
    ExporterMetrics,
    JetStreamLagCollector,
    NatsServerCollector,
)
from infra.logging import configure_logging
from infra.metrics import PeriodicCollector
from infra.process_endpoints import ProcessEndpoints
from infra.settings import Settings, get_settings

PROCESS = "lag_exporter"

log = structlog.stdlib.get_logger(__name__)


class LagExporterSettings(BaseSettings):
    """`ORCH_LAG_EXPORTER__*`: what to read and how often (NATS and Vault come from `Settings`)."""

    model_config = SettingsConfigDict(env_prefix="ORCH_LAG_EXPORTER__", extra="ignore")

    monitor_urls: str = Field(
        "",
        description="NATS monitoring URLs (http://host:8222), comma separated, one per server; "
        "empty exports JetStream lag only",
    )
    interval_seconds: float = Field(
        15.0, gt=0, description="Seconds between reads; keep it at or below the scrape interval"
    )

    def monitors(self) -> list[str]:
        return [url.strip() for url in self.monitor_urls.split(",") if url.strip()]


async def serve(settings: Settings, exporter: LagExporterSettings) -> int:
    """Export until SIGINT/SIGTERM (exit 0) or until NATS is closed for good (exit 1)."""
    if settings.metrics.port == 0:
        raise SystemExit(
            "the lag exporter exists to serve /metrics: set ORCH_METRICS__PORT (and "
            "ORCH_METRICS__HOST=0.0.0.0 in a container)"
        )
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    nc: Client | None = None
    # Ready while it can read JetStream; the servers' monitoring ports are reported as metrics.
    health = HealthChecks(settings.health)
    health.add("nats", nats_connected(lambda: nc))
    async with ProcessEndpoints(settings.metrics.host, settings.metrics.port, health):
        # Logs in to Vault with the exporter's AppRole to read its NATS password (none
        # configured: no credentials, which only a server without authentication accepts).
        nc = await connect_nats(
            settings, max_reconnect_attempts=-1, connect_timeout=5, closed_cb=on_closed
        )
        return await _export(nc, closed, exporter)


async def _export(nc: Client, closed: asyncio.Event, exporter: LagExporterSettings) -> int:
    metrics = ExporterMetrics(REGISTRY)
    collectors: list[PeriodicCollector] = [
        JetStreamLagCollector(nc.jsm(), metrics, interval=exporter.interval_seconds)
    ]
    if exporter.monitors():
        collectors.append(
            NatsServerCollector(exporter.monitors(), metrics, interval=exporter.interval_seconds)
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    for collector in collectors:
        collector.start()
    log.info("lag_exporter.started", monitors=len(exporter.monitors()))
    stopping = asyncio.create_task(stop.wait())
    bus_closed = asyncio.create_task(closed.wait())
    try:
        await asyncio.wait([stopping, bus_closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopping, bus_closed):
            task.cancel()
        for collector in collectors:
            await collector.stop()
        if not closed.is_set():
            with contextlib.suppress(Exception):
                await nc.close()
    if closed.is_set() and not stop.is_set():
        log.error("lag_exporter.bus_closed", detail="NATS connection closed; exiting for a restart")
        return 1
    return 0


def main() -> None:
    configure_logging(PROCESS)
    # Always `lag_exporter`: its Vault AppRole and its NATS user are the exporter's.
    settings = get_settings().model_copy(update={"process_name": PROCESS})
    raise SystemExit(asyncio.run(serve(settings, LagExporterSettings())))
