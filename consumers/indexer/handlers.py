"""Thin handlers: each event is one use case of the indexer service; none emits an event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from contracts import events as ev
from contracts.envelope import Event
from infra.bus.runtime import ConsumerApp, StepContext

from .service import IndexerService

UseCase = Callable[[IndexerService, Any], Awaitable[None]]

#: Which use case handles which event: reading this table is reading the indexer.
ROUTES: dict[type[Event], UseCase] = {
    ev.SpecRequested: IndexerService.spec_requested,
    ev.SpecReady: IndexerService.spec_ready,
    ev.SpecRevisionRequested: IndexerService.revision_requested,
    ev.SpecRevised: IndexerService.spec_revised,
    ev.SpecFailed: IndexerService.outcome,
    ev.SpecRevisionFailed: IndexerService.outcome,
    ev.ProvisioningFailed: IndexerService.outcome,
    ev.RepoFailed: IndexerService.outcome,
    ev.RepoRevisionFailed: IndexerService.outcome,
    ev.CodeGenerated: IndexerService.outcome,
    ev.CodeFailed: IndexerService.outcome,
    ev.DeploySucceeded: IndexerService.deploy_succeeded,
    ev.DeployFailed: IndexerService.outcome,
    ev.DeployRolledBack: IndexerService.outcome,
    ev.DeployAwaitingSecrets: IndexerService.outcome,
    ev.ProjectArchived: IndexerService.project_archived,
}


def register(app: ConsumerApp, service: Callable[[StepContext], IndexerService]) -> None:
    for event_type, use_case in ROUTES.items():

        async def handle(ctx: StepContext, event: Event, use_case: UseCase = use_case) -> None:
            await use_case(service(ctx), event)

        app.handles(event_type)(handle)
