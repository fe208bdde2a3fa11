"""Thin handler: `RepoRequested` from the coordinator becomes `RepoCreated` or `RepoFailed`."""

from __future__ import annotations

from contracts.envelope import Event
from contracts.events import RepoCreated, RepoFailed, RepoRequested
from infra.bus.runtime import ConsumerApp, StepContext, TransientError

from .errors import GitHostUnavailable, RepoHostError
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
