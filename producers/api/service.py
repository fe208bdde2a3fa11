"""What an API caller can do, as plain async use cases over three ports: bus, database, Vault.

Every use case is scoped to the caller: a member's request for a project that belongs to someone
else is reported as not found, so the API does not reveal which ids exist; an admin's scope is
every project. Descriptions and answers are scanned for credentials and new projects are
checked against the daily quota before anything is published. Writes are intents on the bus; the
coordinator decides what they mean for the project, the API only refuses what is plainly
impossible (an answer with no open question) so the user hears it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

import nats.errors
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.envelope import Event
from contracts.events import (
    ChangeRequested,
    ClarificationAnswered,
    ProjectAdoptRequested,
    ProjectArchiveRequested,
    ProjectRequested,
    SecretStored,
)
from infra.bus.publisher import Publisher
from infra.change_rules import change_in_flight, in_flight_message, why_not_changeable
from infra.db.models import Project, ProjectState, RevisionStatus
from infra.logging import register_secret
from infra.project_operations import Operation, refusal
from infra.quotas import check_project_quota
from infra.repo_urls import ForgeSettings
from infra.settings import QuotaSettings
from infra.vault import SecretNotFound, VaultError, project_secret_path
from producers.adoption import adopt_request
from producers.api.tokens import Caller
from producers.credential_scan import refuse_credentials
from producers.idempotency import Keyed, remember
from producers.intents import (
    OperationIntent,
    change_request,
    clarification_answer,
    operation_request,
    project_request,
)
from producers.read_model import (
    ProjectNotFound,
    ProjectView,
    find_project,
    project_view,
    user_projects,
)

log = structlog.stdlib.get_logger(__name__)

SOURCE: Final = "api"

Intent = TypeVar("Intent", bound=Event)
NewProject = TypeVar("NewProject", ProjectRequested, ProjectAdoptRequested)


@dataclass(frozen=True)
class Submitted(Generic[Intent]):
    """An intent as published, and whether it retried an earlier request (same key)."""

    event: Intent
    replay: bool


#: Where a refused description or answer points the user instead.
HOW_TO_STORE: Final = (
    "PUT /projects/{ref}/secrets/NAME with the value, once the project exists "
    "(or `orchestrator secrets set`)"
)


class SecretWriter(Protocol):
    """The API's Vault operations: write, list names, delete (its policy allows no read)."""

    async def write_secret(self, path: str, data: Mapping[str, str]) -> None: ...

    async def list_secrets(self, path: str) -> list[str]: ...

    async def delete_secret(self, path: str) -> None: ...


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
        *,
        quotas: QuotaSettings,
        forge: ForgeSettings | None = None,
    ) -> None:
        self._forge = forge or ForgeSettings()
        self._publisher = publisher
        self._sessionmaker = sessionmaker
        self._secrets = secrets
        self._quotas = quotas

    async def request_project(
        self, caller: Caller, description: str, idempotency_key: str | None = None
    ) -> Submitted[ProjectRequested]:
        """Publish a new project, unless the text holds a credential or the quota is used up."""
        refuse_credentials(description, how_to_store=HOW_TO_STORE)
        event = project_request(description, user_id=caller.user_id, source=SOURCE)
        submitted = await self._admit(caller, event, idempotency_key, description.strip())
        await self._publish(submitted.event)
        log.info(
            "api.project_requested",
            project_id=str(submitted.event.project_id),
            token_name=caller.token_name,
            replay=submitted.replay,
        )
        return submitted

    async def adopt_repository(
        self, caller: Caller, url: str, idempotency_key: str | None = None
    ) -> Submitted[ProjectAdoptRequested]:
        """Publish the adoption of an existing repository, checked like a new project (quota,
        a credential in the URL) and against the configured git host."""
        event = adopt_request(
            url,
            user_id=caller.user_id,
            source=SOURCE,
            forge=self._forge,
            how_to_store=HOW_TO_STORE,
        )
        submitted = await self._admit(caller, event, idempotency_key, event.repository_url)
        await self._publish(submitted.event)
        log.info(
            "api.adopt_requested",
            project_id=str(submitted.event.project_id),
            by=caller.user_id,
            replay=submitted.replay,
        )
        return submitted

    async def _admit(
        self, caller: Caller, event: NewProject, idempotency_key: str | None, argument: str
    ) -> Submitted[NewProject]:
        """Check the daily quota, unless this retries a request already admitted under its key.

        Under an idempotency key the event's ids are the key's (`producers/idempotency.py`).
        """
        async with self._sessionmaker() as session, session.begin():
            replay = False
            if idempotency_key is not None:
                keyed = Keyed.of(caller.user_id, idempotency_key, event.TYPE, argument)
                event = keyed.apply(event)
                replay = not await remember(session, keyed)
            if not replay:
                await check_project_quota(session, caller.user_id, self._quotas)
        return Submitted(event, replay)

    async def _once(
        self,
        caller: Caller,
        idempotency_key: str | None,
        event: Intent,
        check: Callable[[], Awaitable[None]],
        *arguments: str,
    ) -> Submitted[Intent]:
        """Publish an intent about an existing project after `check` passes, once per key.

        A retry under the same key publishes the same event id (the stream and the inbox drop
        the copy) without checking again: the first request may already have moved the project
        on. A check that refuses leaves the key unused, so the same key may be sent again.
        """
        replay = False
        if idempotency_key is not None:
            keyed = Keyed.of(caller.user_id, idempotency_key, event.TYPE, *arguments)
            event = keyed.apply_event_id(event)
            async with self._sessionmaker() as session, session.begin():
                replay = not await remember(session, keyed)
                if not replay:
                    await check()  # raising rolls the key back
        else:
            await check()
        await self._publish(event)
        return Submitted(event, replay)

    async def list_projects(self, caller: Caller, limit: int) -> list[Project]:
        """The caller's projects; an admin's list is everyone's."""
        async with self._sessionmaker() as session:
            if caller.is_admin:
                rows = await session.scalars(
                    select(Project).order_by(Project.created_at.desc()).limit(limit)
                )
                return list(rows)
            return await user_projects(session, caller.user_id, limit)

    async def view(self, caller: Caller, ref: str) -> ProjectView:
        async with self._sessionmaker() as session:
            project = await _own_project(session, caller, ref)
            return await project_view(session, str(project.id))

    async def answer(
        self, caller: Caller, ref: str, text: str, idempotency_key: str | None = None
    ) -> Submitted[ClarificationAnswered]:
        project = await self._project(caller, ref)

        async def check() -> None:
            if project.state != ProjectState.AWAITING_ANSWER and not await self._revision_asks(
                project
            ):
                raise Conflict(
                    f"project {project.id} is {project.state}: no question is waiting for an answer"
                )
            refuse_credentials(text, how_to_store=HOW_TO_STORE)

        event = clarification_answer(
            project.id, project.flow_id, text, user_id=caller.user_id, source=SOURCE
        )
        return await self._once(caller, idempotency_key, event, check, str(project.id), text)

    async def request_change(
        self, caller: Caller, ref: str, text: str, idempotency_key: str | None = None
    ) -> Submitted[ChangeRequested]:
        """Publish a change to a live project, unless it cannot take one now (the coordinator
        checks again) or the text holds a credential."""
        project = await self._project(caller, ref)

        async def check() -> None:
            async with self._sessionmaker() as session:
                reason = why_not_changeable(project)
                in_flight = await change_in_flight(session, project.id)
            if reason is not None:
                raise Conflict(reason)
            if in_flight is not None:
                raise Conflict(in_flight_message(project, in_flight))
            refuse_credentials(text, how_to_store=HOW_TO_STORE)

        event = change_request(
            project.id, project.flow_id, text, user_id=caller.user_id, source=SOURCE
        )
        submitted = await self._once(caller, idempotency_key, event, check, str(project.id), text)
        log.info("api.change_requested", project_id=str(project.id), by=caller.user_id)
        return submitted

    async def archive(
        self, caller: Caller, ref: str, reason: str, idempotency_key: str | None = None
    ) -> Submitted[ProjectArchiveRequested]:
        project = await self._project(caller, ref)

        async def check() -> None:
            if project.state == ProjectState.ARCHIVED:
                raise Conflict(f"project {project.id} is already archived")

        event = ProjectArchiveRequested(
            correlation_id=project.flow_id,
            actor=f"{SOURCE}:{caller.user_id}",
            project_id=project.id,
            reason=reason.strip() or f"archived through the API by {caller.user_id}",
            user_id=caller.user_id,
        )
        return await self._once(caller, idempotency_key, event, check, str(project.id), reason)

    async def operate(
        self,
        caller: Caller,
        ref: str,
        operation: Operation,
        commit: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted[OperationIntent]:
        """Publish a redeploy, restart, rollback or retry, unless the project's state rules it
        out now (the coordinator checks the same rules again when it applies it)."""
        project = await self._project(caller, ref)

        async def check() -> None:
            reason = refusal(project, operation)
            if reason is not None:
                raise Conflict(reason)

        event = operation_request(
            operation, project.id, project.flow_id, user_id=caller.user_id, commit=commit
        )
        submitted = await self._once(
            caller, idempotency_key, event, check, str(project.id), commit or ""
        )
        log.info(
            f"api.{operation}_requested",
            project_id=str(project.id),
            by=caller.user_id,
            replay=submitted.replay,
        )
        return submitted

    async def store_secret(self, caller: Caller, ref: str, name: str, value: str) -> SecretStored:
        """Write the value to Vault, then announce its name and path (never the value).

        The value joins the log-redaction registry only once the caller is known to own the
        project, so a stranger cannot grow the registry (it is bounded per value, too).
        """
        project = await self._project(caller, ref)
        register_secret(value)
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
            user_id=caller.user_id,
        )
        await self._publish(event)
        log.info("api.secret_stored", project_id=str(project.id), name=name)
        return event

    async def secret_names(self, caller: Caller, ref: str) -> list[str]:
        """The names of the project's stored secrets; values are never read (nor readable)."""
        project = await self._project(caller, ref)
        try:
            return sorted(await self._secrets.list_secrets(f"projects/{project.id}"))
        except VaultError as exc:
            raise Unavailable("the secret store did not answer; try again") from exc

    async def delete_secret(self, caller: Caller, ref: str, name: str) -> None:
        """Delete every version of one secret; the next deploy without it waits for it."""
        project = await self._project(caller, ref)
        try:
            if name not in await self._secrets.list_secrets(f"projects/{project.id}"):
                raise SecretNotFound(
                    f"project {project.id} has no secret {name}: "
                    f"GET /projects/{ref}/secrets lists its names"
                )
            await self._secrets.delete_secret(project_secret_path(str(project.id), name))
        except VaultError as exc:
            raise Unavailable("the secret store did not answer; try again") from exc
        log.info("api.secret_deleted", project_id=str(project.id), name=name, by=caller.user_id)

    async def _revision_asks(self, project: Project) -> bool:
        """True while the analyst's question about a change request waits for an answer."""
        async with self._sessionmaker() as session:
            revision = await change_in_flight(session, project.id)
        return revision is not None and revision.status == RevisionStatus.AWAITING_ANSWER

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
    """The caller's project by id, id prefix or slug (another user's is not found).

    An admin's scope is every project: they act on anyone's by its reference.
    """
    try:
        return await find_project(session, ref, user_id=None if caller.is_admin else caller.user_id)
    except ProjectNotFound:
        raise ProjectNotFound(
            f"you have no project {ref!r}: give its id (or first 8 characters) or its slug; "
            "GET /projects lists yours"
        ) from None
