"""Thin handler: `SpecRevisionRequested` becomes `SpecRevised`, `ClarificationAsked` or
`SpecRevisionFailed`."""

from __future__ import annotations

from collections.abc import Callable

from contracts.envelope import Event
from contracts.events import (
    ClarificationAsked,
    SpecRevised,
    SpecRevisionFailed,
    SpecRevisionRequested,
)
from infra.bus.runtime import ConsumerApp, StepContext, TransientError
from infra.llm_budget import LLMBudgetExhausted, ensure_budget_left
from infra.settings import QuotaSettings

from .revision import RefusalOutcome, Reviser, RevisionOutcome
from .service import ProviderUnavailable, QuestionOutcome
from .usage_ledger import record_usage


def register_revisions(
    app: ConsumerApp, reviser: Callable[[], Reviser], quotas: QuotaSettings
) -> None:
    @app.handles(SpecRevisionRequested)
    async def on_revision_requested(ctx: StepContext, event: SpecRevisionRequested) -> Event:
        """Revise a live project's spec for one change request.

        The coordinator sends it when the owner asks for a change, and again with each answer
        to a question about it. Offline, a change the rules cannot express is refused with
        what to configure instead; the project stays as it was.
        """
        service = reviser()
        actor, project_id, number = ctx.consumer, event.project_id, event.revision
        if not service.offline:
            try:
                await ensure_budget_left(ctx.session, project_id, quotas)
            except LLMBudgetExhausted as exc:
                return event.derive(
                    SpecRevisionFailed,
                    actor=actor,
                    project_id=project_id,
                    revision=number,
                    reason=str(exc),
                )
        try:
            outcome = await service.revise(event.spec, event.change, event.answers)
        except ProviderUnavailable as exc:
            raise TransientError(str(exc)) from exc
        if isinstance(outcome, RevisionOutcome):
            record_usage(ctx.session, project_id, event.event_id, outcome.calls)
            ctx.log.info("analyst.revised", revision=number, offline=outcome.offline)
            return event.derive(
                SpecRevised,
                actor=actor,
                project_id=project_id,
                revision=number,
                spec=outcome.spec,
                summary=outcome.summary,
                offline=outcome.offline,
            )
        if isinstance(outcome, QuestionOutcome):
            record_usage(ctx.session, project_id, event.event_id, outcome.calls)
            return event.derive(
                ClarificationAsked,
                actor=actor,
                project_id=project_id,
                question=outcome.question,
                missing=outcome.missing,
                offline=outcome.offline,
            )
        if isinstance(outcome, RefusalOutcome):
            ctx.log.info("analyst.revision_refused", revision=number, needs_llm=outcome.needs_llm)
            return event.derive(
                SpecRevisionFailed,
                actor=actor,
                project_id=project_id,
                revision=number,
                reason=outcome.reason,
                needs_llm=outcome.needs_llm,
            )
        record_usage(ctx.session, project_id, event.event_id, outcome.calls)
        ctx.log.warning("analyst.revision_failed", reason=outcome.reason)
        return event.derive(
            SpecRevisionFailed,
            actor=actor,
            project_id=project_id,
            revision=number,
            reason=outcome.reason,
        )
