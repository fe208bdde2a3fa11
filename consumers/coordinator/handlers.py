"""Thin handlers: each outcome event is one use case of the coordinator service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from contracts import events as ev
from contracts.envelope import Event
from infra.bus.runtime import ConsumerApp, StepContext
from infra.repo_urls import ForgeSettings
from infra.settings import QuotaSettings

from .queues import DurableQueues
from .service import Coordinator

UseCase = Callable[[Coordinator, Any], Awaitable[Sequence[Event]]]

#: Which use case handles which event: reading this table is reading the coordinator.
ROUTES: dict[type[Event], UseCase] = {
    ev.ProjectRequested: Coordinator.project_requested,
    ev.ClarificationAnswered: Coordinator.clarification_answered,
    ev.ProjectArchiveRequested: Coordinator.archive_requested,
    ev.SecretStored: Coordinator.secret_stored,
    ev.ClarificationAsked: Coordinator.clarification_asked,
    ev.SpecReady: Coordinator.spec_ready,
    ev.SpecFailed: Coordinator.spec_failed,
    ev.ResourcesAllocated: Coordinator.resources_allocated,
    ev.ProvisioningFailed: Coordinator.provisioning_failed,
    ev.RepoCreated: Coordinator.repo_created,
    ev.RepoFailed: Coordinator.repo_failed,
    ev.CodeGenerated: Coordinator.code_generated,
    ev.CodeFailed: Coordinator.code_failed,
    ev.DeploySucceeded: Coordinator.deploy_succeeded,
    ev.DeployFailed: Coordinator.deploy_failed,
    ev.DeployRolledBack: Coordinator.deploy_rolled_back,
    ev.DeployStopped: Coordinator.deploy_stopped,
    ev.SchedulerTick: Coordinator.check_timeouts,
    ev.DeployAwaitingSecrets: Coordinator.deploy_awaiting_secrets,
    ev.ProjectRedeployRequested: Coordinator.redeploy_requested,
    ev.ProjectRestartRequested: Coordinator.restart_requested,
    ev.ProjectRollbackRequested: Coordinator.rollback_requested,
    ev.ProjectRetryRequested: Coordinator.retry_requested,
    ev.DeployRestarted: Coordinator.deploy_restarted,
    ev.ChangeRequested: Coordinator.change_requested,
    ev.SpecRevised: Coordinator.spec_revised,
    ev.SpecRevisionFailed: Coordinator.spec_revision_failed,
    ev.RepoRevised: Coordinator.repo_revised,
    ev.RepoRevisionFailed: Coordinator.repo_revision_failed,
    ev.ProjectAdoptRequested: Coordinator.adopt_requested,
    ev.RepoAdopted: Coordinator.repo_adopted,
}


def register(
    app: ConsumerApp, *, offline: bool, quotas: QuotaSettings, forge: ForgeSettings
) -> None:
    queues = DurableQueues(lambda: app.nc)
    for event_type, use_case in ROUTES.items():

        async def handle(
            ctx: StepContext, event: Event, use_case: UseCase = use_case
        ) -> Sequence[Event]:
            coordinator = Coordinator(
                ctx.session, offline=offline, quota_defaults=quotas, forge=forge, queues=queues
            )
            return await use_case(coordinator, event)

        app.handles(event_type)(handle)
