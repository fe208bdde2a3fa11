"""The indexer's step: remember what an event says about a project, in its owner's scope.

Triggered by the spec and its revisions, the answers the coordinator accepted
(`project.spec.requested` and `project.spec.revision.requested` carry them), step and deploy
outcomes, a successful deploy (the released commit's files) and `project.archived` (every
archive deletes the project's secrets and service; its memory goes too).

Whose memory it is comes from the read model, not the event: the project's owner in
`projects.user_id`. Events name the project only, and an answer's `user_id` may be an admin's;
the owner is who the analyst and engineer search for. The repository to read a release from
is the project's recorded `repo_clone_url`, checked against the configured git host.

Guarantees: a point's id is deterministic (scope, kind, source, commit, chunk), so a
redelivered event rewrites the same points. A release replaces the previous commit's code, so
search returns the live code. Nothing is written for an archived project, so a late event
cannot bring back what an archive deleted.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from contracts.envelope import Event
from infra.bus.runtime import PermanentError, TransientError
from infra.db.enums import ProjectState
from infra.db.models import Project, ProjectRevision
from infra.memory import MemoryDocument, MemoryStore
from infra.repo_urls import ForeignCloneUrl, ForgeSettings, check_clone_url

from . import documents
from .releases import CommitMissing, ReleaseReader, RepositoryUnavailable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Owner:
    user_id: str
    archived: bool
    clone_url: str | None


class IndexerService:
    """One event's memory writes; the store's calls run in a thread."""

    def __init__(
        self,
        session: AsyncSession,
        store: MemoryStore,
        releases: ReleaseReader,
        forge: ForgeSettings,
    ) -> None:
        self._session = session
        self._store = store
        self._releases = releases
        self._forge = forge

    async def _owner(self, project_id: uuid.UUID) -> _Owner | None:
        row = (
            await self._session.execute(
                select(Project.user_id, Project.state, Project.repo_clone_url).where(
                    Project.id == project_id
                )
            )
        ).one_or_none()
        if row is None:
            log.warning("indexer.unknown_project", project_id=str(project_id))
            return None
        return _Owner(row.user_id, row.state == ProjectState.ARCHIVED, row.repo_clone_url)

    async def _live_owner(self, project_id: uuid.UUID) -> _Owner | None:
        owner = await self._owner(project_id)
        if owner is None or owner.archived:
            return None
        return owner

    async def _write(self, docs: list[MemoryDocument]) -> None:
        if docs:
            await asyncio.to_thread(self._store.upsert, docs)

    async def spec_requested(self, event: ev.SpecRequested) -> None:
        owner = await self._live_owner(event.project_id)
        if owner is not None:
            await self._write(documents.answers(owner.user_id, event.project_id, event.answers))

    async def spec_ready(self, event: ev.SpecReady) -> None:
        owner = await self._live_owner(event.project_id)
        if owner is not None:
            await self._write([documents.spec(owner.user_id, event)])

    async def revision_requested(self, event: ev.SpecRevisionRequested) -> None:
        owner = await self._live_owner(event.project_id)
        if owner is not None:
            prefix = f"revision:{event.revision}:"
            await self._write(
                documents.answers(owner.user_id, event.project_id, event.answers, prefix)
            )

    async def spec_revised(self, event: ev.SpecRevised) -> None:
        owner = await self._live_owner(event.project_id)
        if owner is None:
            return
        change = await self._session.scalar(
            select(ProjectRevision.change).where(
                ProjectRevision.project_id == event.project_id,
                ProjectRevision.number == event.revision,
            )
        )
        await self._write([documents.revision(owner.user_id, event, change or "")])

    async def outcome(self, event: Event) -> None:
        project_id: uuid.UUID = getattr(event, "project_id")  # noqa: B009 (every routed event has one)
        owner = await self._live_owner(project_id)
        if owner is None:
            return
        doc = documents.outcome(owner.user_id, project_id, event)
        await self._write([doc] if doc is not None else [])

    async def deploy_succeeded(self, event: ev.DeploySucceeded) -> None:
        """The outcome, then the released commit's files in place of the previous commit's."""
        await self.outcome(event)
        owner = await self._live_owner(event.project_id)
        if owner is None:
            return
        if not owner.clone_url:
            log.warning("indexer.no_repository", project_id=str(event.project_id))
            return
        try:
            clone_url = check_clone_url(owner.clone_url, self._forge)
        except ForeignCloneUrl as exc:
            raise PermanentError(f"the project's repository is not on the git host: {exc}") from exc
        try:
            chunks = await self._releases.chunks(clone_url, event.commit)
        except RepositoryUnavailable as exc:
            raise TransientError(str(exc)) from exc
        except CommitMissing as exc:
            raise PermanentError(f"{exc}; a deploy of a commit the repository lacks") from exc
        written = await asyncio.to_thread(
            self._store.replace_code, owner.user_id, event.project_id, event.commit, chunks
        )
        log.info("indexer.release_indexed", commit=event.commit, chunks=written)

    async def project_archived(self, event: ev.ProjectArchived) -> None:
        owner = await self._owner(event.project_id)
        if owner is not None:
            await asyncio.to_thread(self._store.delete_project, owner.user_id, event.project_id)
