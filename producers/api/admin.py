"""The `/admin` routes: people, servers, incidents, dead letters, lag and LLM budgets.

The whole router depends on `Guards.admin`, so every route on it answers 401 without a valid
token and 403 to a member token, including routes added later. User changes go through
`producers.access.Directory`, the one place the bot, the API and the CLI share the rules
(nobody blocks or demotes themselves). The rest is read-only: dead letters are listed here and
replayed from the CLI, where an operator can inspect one first.

No `from __future__ import annotations` here: FastAPI reads the `Annotated` dependencies at
definition time.
"""

import re
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from nats.js import JetStreamContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.topology import CONSUMERS
from infra.bus.dead_letter import DeadLetterQueue
from infra.bus.publisher import JetStreamPublisher
from infra.db.models import Incident, Project, UserRole, UserStatus
from infra.inventory import list_servers
from infra.llm_budget import budget_status
from infra.settings import QuotaSettings
from producers.access import AccessError, Directory, NotAllowed, Person, UnknownUser
from producers.api.auth import Guards
from producers.api.schemas import (
    BudgetChange,
    BudgetReport,
    ConsumerLag,
    DeadLetterList,
    DeadLetterOut,
    IncidentList,
    IncidentOut,
    LagReport,
    ProjectBudget,
    RoleChange,
    ServerList,
    ServerOut,
    UserList,
    UserOut,
)
from producers.api.tokens import Caller

_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "The body is not JSON (e.g. not UTF-8)"},
    401: {"description": "Missing, unknown, expired or revoked token (the detail says which)"},
    403: {"description": "The token is a member token; these routes need an admin token"},
    413: {"description": "The request body is larger than the API accepts"},
    429: {"description": "Too many requests for this token; wait `Retry-After` seconds"},
}

#: The durable consumers' names, as the only values `?consumer=` accepts.
_DURABLES = "^(" + "|".join(re.escape(spec.durable) for spec in CONSUMERS) + ")$"

ProjectRef = Annotated[
    str, Path(description="Project id, its first 8+ characters, or its slug", max_length=200)
]
UserRef = Annotated[
    str, Path(description="User id: telegram:<id>, api:<name> or cli:<login>", max_length=200)
]


def build_admin_router(
    guards: Guards,
    sessionmaker: async_sessionmaker[AsyncSession],
    jetstream: JetStreamContext,
    quotas: QuotaSettings,
) -> APIRouter:
    router = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(guards.admin)],
        responses=_ERRORS,
    )
    AdminDep = Annotated[Caller, Depends(guards.admin)]
    directory = Directory(sessionmaker)

    @router.get("/users", summary="Every user with their role and status")
    async def list_users() -> UserList:
        people = await directory.people()
        return UserList(users=[_user(p) for p in people])

    def acting(caller: Caller) -> Person:
        return Person(id=caller.user_id, role=caller.role, status=UserStatus.ACTIVE)

    async def change(action: Awaitable[Person]) -> UserOut:
        """Run one directory change, its refusals as status codes with their message."""
        try:
            person = await action
        except UnknownUser as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from exc
        except NotAllowed as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
        except AccessError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from exc
        return _user(person)

    conflict: dict[int | str, dict[str, str]] = {
        404: {"description": "No such user"},
        409: {"description": "Not on yourself (nobody blocks or demotes themselves)"},
    }

    @router.post(
        "/users/{user_id}/block",
        summary="Refuse a user at every door (their tokens get 401)",
        responses=conflict,
    )
    async def block(user_id: UserRef, caller: AdminDep) -> UserOut:
        return await change(directory.set_status(acting(caller), user_id, UserStatus.BLOCKED))

    @router.post("/users/{user_id}/unblock", summary="Let a user in again", responses=conflict)
    async def unblock(user_id: UserRef, caller: AdminDep) -> UserOut:
        return await change(directory.set_status(acting(caller), user_id, UserStatus.ACTIVE))

    @router.put("/users/{user_id}/role", summary="Make a user admin or member", responses=conflict)
    async def set_role(user_id: UserRef, body: RoleChange, caller: AdminDep) -> UserOut:
        return await change(directory.set_role(acting(caller), user_id, UserRole(body.role)))

    @router.put(
        "/users/{user_id}/budget",
        summary="A user's monthly LLM budget (null: the configured default)",
        responses={404: {"description": "No such user"}},
    )
    async def set_user_budget(user_id: UserRef, body: BudgetChange, caller: AdminDep) -> UserOut:
        return await change(directory.set_user_budget(acting(caller), user_id, _usd(body)))

    @router.put(
        "/projects/{ref}/budget",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="A project's LLM budget (null: the configured default)",
        responses={404: {"description": "No project with this reference"}},
    )
    async def set_project_budget(ref: ProjectRef, body: BudgetChange, caller: AdminDep) -> Response:
        await directory.set_project_budget(acting(caller), ref, _usd(body))
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/servers", summary="Deploy targets and their port usage")
    async def servers() -> ServerList:
        rows = await list_servers(sessionmaker)
        return ServerList(
            servers=[
                ServerOut(
                    name=s.name,
                    host=s.host,
                    ssh_port=s.ssh_port,
                    labels=list(s.labels),
                    capacity=s.capacity,
                    used_ports=s.used_ports,
                    port_min=s.port_min,
                    port_max=s.port_max,
                    state=s.state,
                    state_reason=s.state_reason,
                )
                for s in rows
            ]
        )

    @router.get("/incidents", summary="Incidents the ops checks opened, newest first")
    async def incidents(
        open_only: Annotated[bool, Query(description="Only incidents still open")] = True,
        limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 100,
    ) -> IncidentList:
        query = select(Incident).order_by(Incident.opened_at.desc()).limit(limit)
        if open_only:
            query = query.where(Incident.status == "open")
        async with sessionmaker() as session:
            rows = list(await session.scalars(query))
        return IncidentList(
            incidents=[
                IncidentOut(
                    id=r.id,
                    kind=r.kind,
                    key=r.key,
                    summary=r.summary,
                    project_id=r.project_id,
                    status=r.status,
                    opened_at=r.opened_at,
                    resolved_at=r.resolved_at,
                )
                for r in rows
            ]
        )

    @router.get("/dead-letters", summary="Messages the consumers gave up on (list only)")
    async def dead_letters(
        consumer: Annotated[
            str | None, Query(pattern=_DURABLES, description="Only this durable's")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 100,
    ) -> DeadLetterList:
        queue = DeadLetterQueue(jetstream, JetStreamPublisher(jetstream))
        letters = await queue.list(consumer, limit)
        return DeadLetterList(
            dead_letters=[
                DeadLetterOut(
                    seq=d.seq,
                    consumer=d.consumer,
                    subject=d.subject,
                    error=d.error,
                    deliveries=d.deliveries,
                    failed_at=d.failed_at,
                )
                for d in letters
            ]
        )

    @router.get("/lag", summary="Pending and unacknowledged messages per durable consumer")
    async def lag() -> LagReport:
        rows: list[ConsumerLag] = []
        for spec in CONSUMERS:
            try:
                info = await jetstream.consumer_info(spec.stream.name, spec.durable)
            except Exception as exc:  # a missing durable is a row, not a failed request
                rows.append(
                    ConsumerLag(
                        durable=spec.durable,
                        stream=spec.stream.name,
                        pending=None,
                        ack_pending=None,
                        redelivered=None,
                        error=str(exc) or type(exc).__name__,
                    )
                )
                continue
            rows.append(
                ConsumerLag(
                    durable=spec.durable,
                    stream=spec.stream.name,
                    pending=info.num_pending or 0,
                    ack_pending=info.num_ack_pending or 0,
                    redelivered=info.num_redelivered or 0,
                    error=None,
                )
            )
        return LagReport(consumers=rows)

    @router.get("/budgets", summary="LLM spend against the budgets of the newest projects")
    async def budgets(
        limit: Annotated[int, Query(ge=1, le=200, description="At most this many projects")] = 50,
    ) -> BudgetReport:
        async with sessionmaker() as session:
            ids: list[uuid.UUID] = list(
                await session.scalars(
                    select(Project.id).order_by(Project.created_at.desc()).limit(limit)
                )
            )
            statuses = [await budget_status(session, pid, quotas) for pid in ids]
        return BudgetReport(
            budgets=[
                ProjectBudget(
                    project_id=b.project_id,
                    user_id=b.user_id,
                    project_spent_usd=float(b.project_spent),
                    project_limit_usd=float(b.project_limit),
                    user_spent_month_usd=float(b.user_spent_month),
                    user_limit_month_usd=float(b.user_limit_month),
                    exhausted=b.refusal(),
                )
                for b in statuses
            ]
        )

    return router


def _usd(body: BudgetChange) -> Decimal | None:
    # Through str: a float's binary expansion is not the amount the admin typed.
    return None if body.usd is None else Decimal(str(body.usd))


def _user(person: Person) -> UserOut:
    return UserOut(
        id=person.id,
        display_name=person.display_name,
        role=person.role,
        status=person.status,
        added_by=person.added_by,
    )
