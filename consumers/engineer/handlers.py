"""Thin handler: `CodeRequested` becomes `CodeGenerated` or `CodeFailed`."""

from __future__ import annotations

from collections.abc import Callable

from consumers.engineer.container_coder import ContainerEngineError
from consumers.engineer.service import EngineerService
from consumers.engineer.usage_ledger import record_usage
from consumers.engineer.workspace import GitUnavailable
from contracts.envelope import Event
from contracts.events import CodeGenerated, CodeRequested
from infra.bus.runtime import ConsumerApp, StepContext, TransientError
from infra.project_owner import project_owner


def register(app: ConsumerApp, engineer: Callable[[], EngineerService]) -> None:
    @app.handles(CodeRequested)
    async def on_code_requested(ctx: StepContext, event: CodeRequested) -> Event:
        """Make the scaffold's code satisfy the spec with green tests, and push it.

        The coordinator sends it once the repository is scaffolded. A git host or container
        engine that cannot be reached is retried by redelivery with backoff; code that does
        not pass its tests is the project's `CodeFailed`, with the failing tests named.
        """
        service = engineer()
        ctx.log.info("engineer.started", mode=service.mode, base_commit=event.base_commit)
        owner = await project_owner(ctx.session, event.project_id)
        try:
            # Minutes of a coding agent and test runs: no transaction stays open meanwhile.
            async with ctx.without_transaction():
                result = await service.handle(event, ctx.heartbeat, owner=owner)
        except (GitUnavailable, ContainerEngineError) as exc:
            raise TransientError(str(exc)) from exc
        record_usage(ctx.session, event.project_id, event.event_id, result.usage)
        outcome = result.event
        if isinstance(outcome, CodeGenerated):
            ctx.log.info(
                "engineer.generated", commit=outcome.commit, mode=outcome.mode,
                iterations=outcome.iterations, tests_passed=outcome.tests_passed,
            )
        else:
            ctx.log.warning("engineer.failed", reason=outcome.reason,
                            iterations=outcome.iterations)
        return outcome
