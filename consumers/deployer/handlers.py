"""Thin handlers: `DeployRequested` becomes one run of the deploy step, `DeployStopRequested`
(an archive) one removal of the project from its server, `DeployRestartRequested` one restart
of the serving release; all come from the coordinator."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from contracts.envelope import Event
from contracts.events import (
    DeployAwaitingSecrets,
    DeployFailed,
    DeployRequested,
    DeployRestartRequested,
    DeployRolledBack,
    DeployStopRequested,
    DeploySucceeded,
)
from infra.bus.runtime import ConsumerApp, PermanentError, StepContext, TransientError
from infra.metrics import DEPLOYS
from infra.repo_urls import ForeignCloneUrl

from .deploy_slots import DeploySlots, ServerBusy
from .ports import DeploymentRecords, PlaybookRunner, SecretSource, ServerInventory
from .service import DeployerConfig, DeployerService, StopFailed, TargetUnreachable

DEPLOY_OUTCOMES: dict[type[Event], str] = {
    DeploySucceeded: "succeeded",
    DeployFailed: "failed",
    DeployRolledBack: "rolled_back",
    DeployAwaitingSecrets: "awaiting_secrets",
}


@dataclass(frozen=True)
class DeployerPorts:
    """Process-wide adapters, plus factories for those that live in the step's transaction."""

    runner: PlaybookRunner
    secrets: SecretSource
    inventory: Callable[[AsyncSession], ServerInventory]
    records: Callable[[AsyncSession], DeploymentRecords]
    config: DeployerConfig
    #: Each server's own deploy limit (`deploy_slots.py`); None: only the concurrency.
    slots: DeploySlots | None = None


def register(app: ConsumerApp, ports: DeployerPorts) -> None:
    def service_for(ctx: StepContext) -> DeployerService:
        return DeployerService(
            ports.runner,
            ports.secrets,
            ports.inventory(ctx.session),
            ports.records(ctx.session),
            config=ports.config,
            actor=ctx.consumer,
            slots=ports.slots,
            outside_transaction=ctx.without_transaction,
        )

    @app.handles(DeployStopRequested)
    async def on_stop_requested(ctx: StepContext, event: DeployStopRequested) -> list[Event]:
        try:
            return await service_for(ctx).stop(event, heartbeat=ctx.heartbeat)
        except TargetUnreachable as exc:
            raise TransientError(str(exc)) from exc
        except StopFailed as exc:
            # The port stays allocated; an operator fixes the server and replays from the DLQ.
            raise PermanentError(str(exc)) from exc

    @app.handles(DeployRestartRequested)
    async def on_restart_requested(ctx: StepContext, event: DeployRestartRequested) -> list[Event]:
        try:
            return await service_for(ctx).restart(event, heartbeat=ctx.heartbeat)
        except TargetUnreachable as exc:
            raise TransientError(str(exc)) from exc

    @app.handles(DeployRequested)
    async def on_deploy_requested(ctx: StepContext, event: DeployRequested) -> list[Event]:
        service = service_for(ctx)
        try:
            emitted = await service.deploy(event, heartbeat=ctx.heartbeat)
        except ForeignCloneUrl as exc:
            # A forged or misrouted request: refused without failing the project it names.
            raise PermanentError(f"deploy refused: {exc}") from exc
        except TargetUnreachable as exc:
            # The server may come back; after max_deliver the request lands in the DLQ.
            raise TransientError(str(exc)) from exc
        except ServerBusy as exc:
            # Waiting for one of the server's deploy slots: the transient schedule's long budget.
            raise TransientError(str(exc)) from exc
        for outcome in emitted:
            if type(outcome) in DEPLOY_OUTCOMES:
                DEPLOYS.labels(DEPLOY_OUTCOMES[type(outcome)]).inc()
        return emitted
