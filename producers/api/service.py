"""What an API caller can do, as plain async use cases over three ports: bus, database, Vault.

Every use case is scoped to the caller: a project that belongs to someone else is reported as
not found, so the API does not reveal which ids exist. Writes are intents on the bus; the
coordinator decides what they mean for the project, the API only refuses what is plainly
impossible (an answer with no open question) so the user hears it at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Protocol

import nats.errors
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Event
from contracts.events import (
    ClarificationAnswered,
    ProjectArchiveRequested,
    ProjectRequested,
    SecretStored,
)
from infra.bus.publisher import Publisher
from infra.db.models import Project, ProjectState
from infra.vault import VaultError, project_secret_path
from producers.api.tokens import Caller
from producers.intents import clarification_answer, project_request
from producers.read_model import (
    ProjectNotFound,
    ProjectView,
    find_project,
    project_view,
    user_projects,
)

log = structlog.stdlib.get_logger(__name__)

SOURCE: Final = "api"


class SecretWriter(Protocol):
    """The one Vault operation the API has: write (its policy allows no read back)."""

    async def write_secret(self, path: str, data: Mapping[str, str]) -> None: ...


class Unavailable(RuntimeError):
    """A dependency (bus, Vault) did not answer; the request may simply be repeated."""


class Conflict(RuntimeError):
    """The project's state does not allow the request; the message says why."""


class ProjectService:
    def __init__(
        self,
        publisher: Publisher,
        sessionmaker: async_sessionmaker[AsyncSession],
        secrets: SecretWriter,
    ) -> None:
        self._publisher = publisher
        self._sessionmaker = sessionmaker
        self._secrets = secrets

    async def request_project(self, caller: Caller, description: str) -> ProjectRequested:
        event = project_request(description, user_id=caller.user_id, source=SOURCE)
        await self._publish(event)
        log.info(
            "api.project_requested",
            project_id=str(event.project_id),
            token_name=caller.token_name,
        )
        return event

    async def list_projects(self, caller: Caller, limit: int) -> list[Project]:
        async with self._sessionmaker() as session:
            return await user_projects(session, caller.user_id, limit)

    async def view(self, caller: Caller, ref: str) -> ProjectView:
        async with self._sessionmaker() as session:
            project = await _own_project(session, caller, ref)
            return await project_view(session, str(project.id))

    async def answer(self, caller: Caller, ref: str, text: str) -> ClarificationAnswered:
        project = await self._project(caller, ref)
        if project.state != ProjectState.AWAITING_ANSWER:
            raise Conflict(
                f"project {project.id} is {project.state}: no question is waiting for an answer"
            )
        event = clarification_answer(
            project.id, project.flow_id, text, user_id=caller.user_id, source=SOURCE
        )
        await self._publish(event)
        return event

    async def archive(self, caller: Caller, ref: str, reason: str) -> ProjectArchiveRequested:
        project = await self._project(caller, ref)
        if project.state == ProjectState.ARCHIVED:
            raise Conflict(f"project {project.id} is already archived")
        event = ProjectArchiveRequested(
            correlation_id=project.flow_id,
            actor=f"{SOURCE}:{caller.user_id}",
            project_id=project.id,
            reason=reason.strip() or f"archived through the API by {caller.user_id}",
        )
        await self._publish(event)
        return event

    async def store_secret(self, caller: Caller, ref: str, name: str, value: str) -> SecretStored:
        """Write the value to Vault, then announce its name and path (never the value)."""
        project = await self._project(caller, ref)
        path = project_secret_path(str(project.id), name)
        try:
            await self._secrets.write_secret(path, {"value": value})
        except VaultError as exc:
            log.error(
                "api.secret_write_failed", project_id=str(project.id), name=name, error=str(exc)
            )
            raise Unavailable("the secret store did not accept the value; try again") from exc
        event = SecretStored(
            correlation_id=project.flow_id,
            actor=f"{SOURCE}:{caller.user_id}",
            project_id=project.id,
            name=name,
            vault_path=path,
        )
        await self._publish(event)
        log.info("api.secret_stored", project_id=str(project.id), name=name)
        return event

    async def _project(self, caller: Caller, ref: str) -> Project:
        async with self._sessionmaker() as session:
            return await _own_project(session, caller, ref)

    async def _publish(self, event: Event) -> None:
        try:
            await self._publisher.publish(event)
        except (nats.errors.Error, TimeoutError) as exc:
            # nats-py's TimeoutError is both; a JetStream API error (stream missing) is an Error.
            log.warning("api.bus_unavailable", event_type=event.TYPE, error=repr(exc))
            raise Unavailable(
                "the event bus is unavailable, nothing was recorded; try again"
            ) from exc


async def _own_project(session: AsyncSession, caller: Caller, ref: str) -> Project:
    """The caller's project by id, id prefix or slug (another user's is not found)."""
    try:
        return await find_project(session, ref, user_id=caller.user_id)
    except ProjectNotFound:
        raise ProjectNotFound(
            f"you have no project {ref!r}: give its id (or first 8 characters) or its slug; "
            "GET /projects lists yours"
        ) from None
