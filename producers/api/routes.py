"""The endpoints: each validates, calls one use case of `ProjectService`, shapes the answer.

The router itself depends on `Guards.caller`, so every route on it is authenticated and
rate-limited; the endpoints that need the caller take the same (cached) dependency.

No `from __future__ import annotations` here: FastAPI reads the `Annotated` dependencies
below at definition time, and they close over the injected service and auth dependency.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from infra.db.models import Project
from infra.project_operations import Operation
from producers.api.auth import Guards
from producers.api.schemas import (
    SECRET_NAME_PATTERN,
    Accepted,
    AdoptRequest,
    AnswerRequest,
    ArchiveRequest,
    ChangeRequest,
    OperationAccepted,
    ProjectDetail,
    ProjectList,
    ProjectRequest,
    ProjectSummary,
    RedeployRequest,
    SecretNames,
    SecretValue,
    TimelineItem,
)
from producers.api.service import ProjectService, Submitted
from producers.api.tokens import Caller
from producers.idempotency import PATTERN as IDEMPOTENCY_KEY_PATTERN
from producers.intents import OperationIntent
from producers.read_model import ProjectView

_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "The body is not JSON (e.g. not UTF-8)"},
    401: {"description": "Missing, unknown, expired or revoked token (the detail says which)"},
    404: {"description": "You have no project with this reference"},
    413: {"description": "The request body is larger than the API accepts"},
    429: {"description": "Too many requests for this token; wait `Retry-After` seconds"},
    503: {"description": "The event bus or Vault is unavailable; nothing was recorded, try again"},
}

Ref = Annotated[
    str, Path(description="Project id, its first 8+ characters, or its slug", max_length=200)
]
SecretName = Annotated[
    str, Path(pattern=SECRET_NAME_PATTERN, description="Variable name: A-Z, 0-9, _")
]
_REFUSED_TEXT: dict[int | str, dict[str, str]] = {
    422: {"description": "Invalid body, or the text contains a credential (the detail says)"},
}
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Any unique string (a UUID) to make the request safe to send again: a "
        "retry with the same key within 24 hours gets the same answer and does nothing again "
        "(no second project, answer, change or operation; answered with "
        "`Idempotent-Replayed: true`, even if the first request has since moved the project "
        "on); the key sent with a different request is refused with 422.",
    ),
]


def build_router(service: ProjectService, guards: Guards) -> APIRouter:
    router = APIRouter(tags=["projects"], responses=_ERRORS, dependencies=[Depends(guards.caller)])
    CallerDep = Annotated[Caller, Depends(guards.caller)]

    def accepted(
        request: Request, response: Response, project_id: uuid.UUID, flow_id: uuid.UUID
    ) -> Accepted:
        status_url = str(request.url_for("get_project", ref=str(project_id)))
        response.headers["Location"] = status_url
        return Accepted(project_id=project_id, flow_id=flow_id, status_url=status_url)

    def submitted(request: Request, response: Response, done: Submitted[Any]) -> Accepted:
        """202 for a published intent (every one carries its project id and flow id)."""
        if done.replay:
            response.headers["Idempotent-Replayed"] = "true"
        return accepted(request, response, done.event.project_id, done.event.correlation_id)

    @router.post(
        "/projects",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Ask for a new service",
        description="Publishes the request; the analyst, then the rest of the pipeline, take it "
        "from there. Follow progress at `status_url`. Refused with 422 if the description "
        "contains a credential (store it as a secret instead) and with 429 once your daily "
        "project quota is used up (403 if your quota is 0).",
        responses={
            **_REFUSED_TEXT,
            403: {"description": "Your daily project quota is 0"},
            429: {"description": "Rate limit or daily project quota reached; see Retry-After"},
        },
    )
    async def create_project(
        body: ProjectRequest,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Accepted:
        done = await service.request_project(caller, body.description, idempotency_key)
        return submitted(request, response, done)

    @router.post(
        "/projects/adopt",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Adopt an existing repository and deploy it",
        description="The repository is read (never run) to write its spec: language, start "
        "command, tests, variables from `.env.example`, `deploy.json`, a Dockerfile. Its own "
        "tests then run in the sandbox and it is deployed like any other project; the secrets "
        "it declares are asked for and the deploy waits for them. A repository that cannot run "
        "fails with what is missing. Refused with 422 for a URL that is not on this system's "
        "git host or carries a credential, 429/403 like a new project for the daily quota.",
        responses={
            **_REFUSED_TEXT,
            403: {"description": "Your daily project quota is 0"},
            429: {"description": "Rate limit or daily project quota reached; see Retry-After"},
        },
    )
    async def adopt_repository(
        body: AdoptRequest,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Accepted:
        done = await service.adopt_repository(caller, body.repository_url, idempotency_key)
        return submitted(request, response, done)

    @router.get("/projects", summary="Your projects (an admin's: everyone's), newest first")
    async def list_projects(
        caller: CallerDep,
        limit: Annotated[int, Query(ge=1, le=100, description="At most this many")] = 20,
    ) -> ProjectList:
        projects = await service.list_projects(caller, limit)
        return ProjectList(projects=[_summary(p) for p in projects])

    @router.get("/projects/{ref}", summary="A project's state, URL and timeline")
    async def get_project(ref: Ref, caller: CallerDep) -> ProjectDetail:
        return _detail(await service.view(caller, ref))

    @router.post(
        "/projects/{ref}/answers",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Answer the analyst's open question",
        responses={**_REFUSED_TEXT, 409: {"description": "No question is waiting for an answer"}},
    )
    async def answer(
        ref: Ref,
        body: AnswerRequest,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Accepted:
        done = await service.answer(caller, ref, body.answer, idempotency_key)
        return submitted(request, response, done)

    @router.post(
        "/projects/{ref}/changes",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Ask for a change to a live service",
        description="The analyst turns the change into the next revision of the spec (asking "
        "a question when it is unclear), the code is changed from the project's current "
        "commit, tested and deployed with rollback; the timeline shows each revision. Offline "
        "mode makes the changes its rules can express (a new entity, collection endpoint, bot "
        "command or variable) and says so when a change needs an LLM.",
        responses={
            **_REFUSED_TEXT,
            404: {"description": "You have no such project"},
            409: {"description": "The project is not live, or another change is in progress"},
        },
    )
    async def request_change(
        ref: Ref,
        body: ChangeRequest,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Accepted:
        done = await service.request_change(caller, ref, body.change, idempotency_key)
        return submitted(request, response, done)

    @router.put(
        "/projects/{ref}/secrets/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="Store a secret the service needs (e.g. TELEGRAM_BOT_TOKEN)",
        description="The value goes to Vault only. It is never returned, logged or put on the "
        "bus; the deploy writes it into the service's `.env`. Writing again replaces it.",
    )
    async def put_secret(
        ref: Ref,
        name: SecretName,
        body: SecretValue,
        caller: CallerDep,
    ) -> Response:
        await service.store_secret(caller, ref, name, body.value.get_secret_value())
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get(
        "/projects/{ref}/secrets",
        summary="Names of the project's stored secrets (never their values)",
    )
    async def list_secrets(ref: Ref, caller: CallerDep) -> SecretNames:
        return SecretNames(names=await service.secret_names(caller, ref))

    @router.delete(
        "/projects/{ref}/secrets/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        summary="Delete a stored secret (every version)",
        description="A deploy that needs it waits for it again until it is stored anew.",
    )
    async def delete_secret(ref: Ref, name: SecretName, caller: CallerDep) -> Response:
        await service.delete_secret(caller, ref, name)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/projects/{ref}/archive",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Retire a project and release its server resources",
        responses={409: {"description": "Already archived"}},
    )
    async def archive(
        ref: Ref,
        caller: CallerDep,
        request: Request,
        response: Response,
        body: ArchiveRequest | None = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Accepted:
        done = await service.archive(caller, ref, body.reason if body else "", idempotency_key)
        return submitted(request, response, done)

    def operation_accepted(
        request: Request, response: Response, done: Submitted[OperationIntent]
    ) -> OperationAccepted:
        answer = submitted(request, response, done)
        return OperationAccepted(**answer.model_dump(), event_id=done.event.event_id)

    @router.post(
        "/projects/{ref}/redeploy",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Deploy a live project again: its current commit, or the one you name",
        description="The deploy keeps its guarantees: a release that does not come up is rolled "
        "back and the previous one keeps serving. The current commit again is a no-op when it "
        "already serves (nothing is restarted).",
        responses={409: {"description": "Not live, or another operation is under way"}},
    )
    async def redeploy(
        ref: Ref,
        caller: CallerDep,
        request: Request,
        response: Response,
        body: RedeployRequest | None = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> OperationAccepted:
        commit = body.commit if body else None
        done = await service.operate(caller, ref, Operation.REDEPLOY, commit, idempotency_key)
        return operation_accepted(request, response, done)

    @router.post(
        "/projects/{ref}/restart",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Restart a live project's running release (no new deploy)",
        responses={409: {"description": "Not live, or another operation is under way"}},
    )
    async def restart(
        ref: Ref,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> OperationAccepted:
        done = await service.operate(caller, ref, Operation.RESTART, None, idempotency_key)
        return operation_accepted(request, response, done)

    @router.post(
        "/projects/{ref}/rollback",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Serve a live project's previous release again",
        responses={
            409: {"description": "Not live, no previous release, or another operation under way"}
        },
    )
    async def rollback(
        ref: Ref,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> OperationAccepted:
        done = await service.operate(caller, ref, Operation.ROLLBACK, None, idempotency_key)
        return operation_accepted(request, response, done)

    @router.post(
        "/projects/{ref}/retry",
        status_code=status.HTTP_202_ACCEPTED,
        summary="Resume a failed project from the step that failed",
        description="What was done before the failure (spec, resources, repository, code) is "
        "kept; only the failed step and those after it run again.",
        responses={409: {"description": "The project has not failed"}},
    )
    async def retry(
        ref: Ref,
        caller: CallerDep,
        request: Request,
        response: Response,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> OperationAccepted:
        done = await service.operate(caller, ref, Operation.RETRY, None, idempotency_key)
        return operation_accepted(request, response, done)

    return router


def _summary(project: Project | ProjectView) -> ProjectSummary:
    return ProjectSummary(
        id=project.id,
        flow_id=project.flow_id,
        name=project.name,
        slug=project.slug,
        state=project.state,
        url=project.url,
        offline=project.offline,
        created_at=project.created_at,
    )


def _detail(view: ProjectView) -> ProjectDetail:
    return ProjectDetail(
        **_summary(view).model_dump(),
        error=view.error,
        timeline=[
            TimelineItem(
                at=t.occurred_at,
                type=t.event_type,
                actor=t.actor,
                state=t.state,
                summary=t.summary,
            )
            for t in view.timeline
        ],
        missing_secrets=list(view.missing_secrets),
    )
