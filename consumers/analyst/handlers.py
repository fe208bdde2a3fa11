"""Thin handler: `SpecRequested` becomes `SpecReady`, `ClarificationAsked` or `SpecFailed`."""

from __future__ import annotations

from collections.abc import Callable

from contracts.envelope import Event
from contracts.events import ClarificationAsked, SpecFailed, SpecReady, SpecRequested
from infra.bus.runtime import ConsumerApp, StepContext, TransientError
from infra.llm_budget import LLMBudgetExhausted, ensure_budget_left
from infra.project_owner import project_owner
from infra.settings import QuotaSettings

from .service import (
    AnalystService,
    ProviderUnavailable,
    QuestionOutcome,
    SpecOutcome,
)
from .usage_ledger import record_usage


def register(
    app: ConsumerApp, analyst: Callable[[], AnalystService], quotas: QuotaSettings
) -> None:
    @app.handles(SpecRequested)
    async def on_spec_requested(ctx: StepContext, event: SpecRequested) -> Event:
        """Write the spec, or ask the next question, for a project's description and answers.

        The coordinator sends it for a new project and again with every answer. An LLM
        provider that does not answer is retried by redelivery with backoff (then
        dead-lettered); a model that keeps answering nonsense is the project's `SpecFailed`,
        and so is a spent LLM budget (project or owner), checked before the model is called.
        """
        service = analyst()
        if not service.offline:
            try:
                await ensure_budget_left(ctx.session, event.project_id, quotas)
            except LLMBudgetExhausted as exc:
                ctx.log.warning("analyst.budget_spent", reason=str(exc))
                return event.derive(
                    SpecFailed, actor=ctx.consumer, project_id=event.project_id, reason=str(exc)
                )
        owner = await project_owner(ctx.session, event.project_id)
        try:
            # LLM calls take seconds to minutes: no transaction stays open meanwhile.
            async with ctx.without_transaction():
                outcome = await service.analyse(
                    event.project_id,
                    event.correlation_id,
                    event.description,
                    event.answers,
                    owner=owner,
                )
        except ProviderUnavailable as exc:
            raise TransientError(str(exc)) from exc
        record_usage(ctx.session, event.project_id, event.event_id, outcome.calls)
        actor, project_id = ctx.consumer, event.project_id
        if isinstance(outcome, SpecOutcome):
            ctx.log.info("analyst.spec", slug=outcome.spec.slug, offline=outcome.offline)
            return event.derive(
                SpecReady,
                actor=actor,
                project_id=project_id,
                spec=outcome.spec,
                offline=outcome.offline,
            )
        if isinstance(outcome, QuestionOutcome):
            ctx.log.info("analyst.question", missing=outcome.missing, offline=outcome.offline)
            return event.derive(
                ClarificationAsked,
                actor=actor,
                project_id=project_id,
                question=outcome.question,
                missing=outcome.missing,
                offline=outcome.offline,
            )
        ctx.log.warning("analyst.failed", reason=outcome.reason)
        return event.derive(SpecFailed, actor=actor, project_id=project_id, reason=outcome.reason)
