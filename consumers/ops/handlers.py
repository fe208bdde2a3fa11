"""Thin handler: a health tick is one sweep of the ops service."""

from __future__ import annotations

from contracts import events as ev
from contracts.envelope import Event
from infra.bus.runtime import ConsumerApp, StepContext

from .service import HealthProbe, OpsService


def register(app: ConsumerApp, probe: HealthProbe) -> None:
    @app.handles(ev.SchedulerTick)
    async def on_health_tick(ctx: StepContext, tick: ev.SchedulerTick) -> list[Event]:
        return await OpsService(ctx.session, probe).check_health(tick)
