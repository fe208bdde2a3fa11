"""Thin handler: a tick is one sweep, chosen by its job (`ROUTES`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from contracts import events as ev
from contracts.envelope import Event
from infra.bus.runtime import ConsumerApp, StepContext

from .server_health import ServerHealthService, ServerHealthThresholds, ServerKeys, ServerProbe
from .service import HealthProbe, OpsService


@dataclass(frozen=True)
class OpsPorts:
    probe: HealthProbe
    server_probe: ServerProbe
    keys: ServerKeys
    thresholds: ServerHealthThresholds


Sweep = Callable[[StepContext, ev.SchedulerTick, OpsPorts], Awaitable[list[Event]]]


async def _services(ctx: StepContext, tick: ev.SchedulerTick, ports: OpsPorts) -> list[Event]:
    return await OpsService(ctx.session, ports.probe).check_health(tick)


async def _servers(ctx: StepContext, tick: ev.SchedulerTick, ports: OpsPorts) -> list[Event]:
    service = ServerHealthService(ctx.session, ports.server_probe, ports.keys, ports.thresholds)
    return await service.check_servers(tick)


#: Scheduler job → sweep (the jobs' durables are in `contracts.topology`).
ROUTES: dict[str, Sweep] = {"health": _services, "server-health": _servers}


def register(app: ConsumerApp, ports: OpsPorts) -> None:
    @app.handles(ev.SchedulerTick)
    async def on_tick(ctx: StepContext, tick: ev.SchedulerTick) -> list[Event]:
        sweep = ROUTES.get(tick.job)
        return [] if sweep is None else await sweep(ctx, tick, ports)
