"""Thin handler: `RepoRequested` from the coordinator becomes `RepoCreated` or `RepoFailed`."""

from __future__ import annotations

from contracts.envelope import Event
from contracts.events import (
    RepoAdopted,
    RepoAdoptRequested,
    RepoCreated,
    RepoFailed,
    RepoRequested,
    RepoRevised,
    RepoRevisionFailed,
    RepoRevisionRequested,
    SchedulerTick,
)
from infra.bus.runtime import ConsumerApp, StepContext, TransientError

from .adoption import Adopter
from .errors import GitHostUnavailable, RepoHostError
from .reconciliation import Reconciler
from .revision import RevisionRenderer
from .service import RepoService


def register(app: ConsumerApp, service: RepoService) -> None:
    @app.handles(RepoRequested)
    async def on_repo_requested(ctx: StepContext, event: RepoRequested) -> Event:
        """Create (or find) the repository and its scaffold commit.

        A refusal by the git host is the project's outcome (`RepoFailed`, the coordinator
        decides); an unreachable host is retried by redelivery with backoff.
        """
        try:
            result = await service.create(
                event.spec, event.project_id, requested_at=event.occurred_at
            )
        except RepoHostError as exc:
            ctx.log.warning("repo.refused", repo=event.spec.slug, reason=str(exc))
            return event.derive(
                RepoFailed, actor=ctx.consumer, project_id=event.project_id, reason=str(exc)
            )
        except GitHostUnavailable as exc:
            raise TransientError(str(exc)) from exc
        ctx.log.info("repo.scaffolded", repo=result.repo_name, commit=result.commit)
        return event.derive(
            RepoCreated,
            actor=ctx.consumer,
            project_id=event.project_id,
            repo_name=result.repo_name,
            clone_url=result.clone_url,
            web_url=result.web_url,
            default_branch=result.default_branch,
            commit=result.commit,
        )


def register_revisions(app: ConsumerApp, renderer: RevisionRenderer) -> None:
    @app.handles(RepoRevisionRequested)
    async def on_revision_requested(ctx: StepContext, event: RepoRevisionRequested) -> Event:
        """Render an offline revision's spec over the project's current commit and push it.

        The coordinator sends it once the analyst revised the spec of a live offline project;
        the engineer then tests the pushed commit like any other.
        """
        try:
            result = await renderer.render(
                event.spec,
                event.project_id,
                event.revision,
                event.base_commit,
                requested_at=event.occurred_at,
            )
        except RepoHostError as exc:
            ctx.log.warning("repo.revision_refused", revision=event.revision, reason=str(exc))
            return event.derive(
                RepoRevisionFailed,
                actor=ctx.consumer,
                project_id=event.project_id,
                revision=event.revision,
                reason=str(exc),
            )
        except GitHostUnavailable as exc:
            raise TransientError(str(exc)) from exc
        ctx.log.info("repo.revised", revision=event.revision, commit=result.commit)
        return event.derive(
            RepoRevised,
            actor=ctx.consumer,
            project_id=event.project_id,
            revision=event.revision,
            commit=result.commit,
            files=result.files[:200],
        )


def register_adoption(app: ConsumerApp, adopter: Adopter) -> None:
    @app.handles(RepoAdoptRequested)
    async def on_adopt_requested(ctx: StepContext, event: RepoAdoptRequested) -> Event:
        """Inspect the repository a person adopts and import it as the project's repository.

        A repository that cannot run (or is not on the git host) is `RepoFailed` with what is
        missing, for the user; an unreachable host is retried by redelivery.
        """
        try:
            result = await adopter.adopt(
                event.repository_url,
                event.slug,
                event.project_id,
                requested_at=event.occurred_at,
            )
        except RepoHostError as exc:
            ctx.log.warning("repo.adopt_refused", repo=event.slug, reason=str(exc)[:500])
            return event.derive(
                RepoFailed, actor=ctx.consumer, project_id=event.project_id, reason=str(exc)
            )
        except GitHostUnavailable as exc:
            raise TransientError(str(exc)) from exc
        ctx.log.info("repo.adopted", repo=result.hosted.name, commit=result.commit)
        return event.derive(
            RepoAdopted,
            actor=ctx.consumer,
            project_id=event.project_id,
            spec=result.inspection.spec,
            repo_name=result.hosted.name,
            clone_url=result.hosted.clone_url,
            web_url=result.hosted.web_url,
            default_branch=result.hosted.default_branch,
            commit=result.commit,
            findings=result.inspection.findings[:200],
        )


def register_reconciliation(app: ConsumerApp, reconciler: Reconciler) -> None:
    @app.handles(SchedulerTick)
    async def on_reconcile_tick(ctx: StepContext, tick: SchedulerTick) -> list[Event]:
        """Compare the git host and the inventory with the projects (see `reconciliation`).

        An unreachable or refusing host is retried by redelivery: a tick that could not list
        the repositories must not resolve the incidents it could not check.
        """
        try:
            return await reconciler.reconcile(ctx.session, tick, ctx.consumer)
        except (GitHostUnavailable, RepoHostError) as exc:
            raise TransientError(str(exc)) from exc
