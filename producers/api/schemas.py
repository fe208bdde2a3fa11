"""Request and response bodies of the HTTP API; their descriptions are the OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SecretStr, field_validator

#: The same bound as `ProjectRequested.description`, checked here so the user hears why.
MAX_TEXT = 8000

#: Large enough for a PEM key or a service-account JSON; every stored value is also kept in
#: the log-redaction registry, so the bound also bounds that registry's growth per request.
MAX_SECRET = 16384

#: Secret names become variables in the service's `.env`, hence the shell-variable shape.
SECRET_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"  # noqa: S105 -- a name pattern, not a secret


#: "Not blank" as a `pattern`: a character `str.strip` keeps (every whitespace character
#: Python knows is below U+3001), so the OpenAPI document and `_bounded` agree exactly.
_NOT_BLANK = (
    "[^" + "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x3001)) if c.isspace()) + "]"
)
#: What the OpenAPI document says of a description or answer: the bounds `_bounded` enforces
#: (declared, not enforced by pydantic, so the refusal keeps `_bounded`'s message).
_TEXT_SCHEMA: dict[str, JsonValue] = {"minLength": 1, "maxLength": MAX_TEXT, "pattern": _NOT_BLANK}


def _bounded(value: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"the {what} is empty: say in words what you want")
    if len(text) > MAX_TEXT:
        raise ValueError(
            f"the {what} has {len(text)} characters; the limit is {MAX_TEXT}: "
            "shorten it (details can follow as answers to the analyst's questions)"
        )
    return text


class ProjectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        description="What the service should do, in your own words "
        f"(at most {MAX_TEXT} characters)",
        examples=["A Telegram bot that reminds me to drink water every two hours"],
        json_schema_extra=_TEXT_SCHEMA,
    )

    @field_validator("description")
    @classmethod
    def _check(cls, value: str) -> str:
        return _bounded(value, "description")


class AdoptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repository_url: str = Field(
        description="Git URL of the repository to adopt, on this system's git host (the local "
        "forge's git daemon, or https://github.com/<owner>/<name> when the forge is GitHub)",
        examples=["git://127.0.0.1:9418/notes.git"],
        min_length=1,
        max_length=2000,
    )


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str = Field(
        description=f"Your answer to the analyst's open question (at most {MAX_TEXT} characters)",
        json_schema_extra=_TEXT_SCHEMA,
    )

    @field_validator("answer")
    @classmethod
    def _check(cls, value: str) -> str:
        return _bounded(value, "answer")


class ChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    change: str = Field(
        description="What to change in the live service, in your own words "
        f"(at most {MAX_TEXT} characters)",
        examples=["Add an endpoint that returns totals per month"],
        json_schema_extra=_TEXT_SCHEMA,
    )

    @field_validator("change")
    @classmethod
    def _check(cls, value: str) -> str:
        return _bounded(value, "change")


class ArchiveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500, description="Why, shown in the project's timeline")


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: SecretStr = Field(
        min_length=1,
        max_length=MAX_SECRET,
        description=f"The secret value (at most {MAX_SECRET} characters); stored in Vault "
        "only, never returned or logged",
    )


class Accepted(BaseModel):
    """The intent is on the bus; the pipeline works on it asynchronously."""

    project_id: uuid.UUID = Field(description="The project's id")
    flow_id: uuid.UUID = Field(description="Correlation id shared by every event of this project")
    status_url: str = Field(description="Where to follow the project (GET)")


class OperationAccepted(Accepted):
    """A redeploy, restart, rollback or retry is on the bus; the outcome lands on the timeline."""

    event_id: uuid.UUID = Field(description="Id of the intent published (its timeline entry)")


class RedeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    commit: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{40}$",
        description="A full 40-hex commit of the project's repository to deploy; without it "
        "the project's current commit is deployed again (a no-op when it already serves)",
    )


class TimelineItem(BaseModel):
    at: datetime = Field(description="When it happened (UTC)")
    type: str = Field(description="Event type, e.g. project.spec.ready")
    actor: str = Field(description="Which part of the system recorded it")
    state: str | None = Field(description="The project's state after this event, if it moved")
    summary: str = Field(description="What happened, in words")


class ProjectSummary(BaseModel):
    id: uuid.UUID = Field(description="The project's id")
    flow_id: uuid.UUID = Field(description="Correlation id of the project's events")
    name: str = Field(description="Name from the spec (empty until the spec is written)")
    slug: str | None = Field(description="URL-safe name, usable as the {ref} of other endpoints")
    state: str = Field(description="Lifecycle state, e.g. awaiting_answer, building, active")
    url: str | None = Field(description="Where the deployed service answers, once active")
    offline: bool = Field(description="True when the pipeline runs without an LLM")
    created_at: datetime = Field(description="When the project was requested (UTC)")


class ProjectDetail(ProjectSummary):
    error: str | None = Field(description="Why the project failed, if it did")
    timeline: list[TimelineItem] = Field(description="Every recorded step, oldest first")
    missing_secrets: list[str] = Field(
        default_factory=list,
        description="Names of the secrets the deploy waits for (state awaiting_secrets); store "
        "each with PUT /projects/{ref}/secrets/{name} and the deploy resumes by itself",
    )


class ProjectList(BaseModel):
    projects: list[ProjectSummary] = Field(description="Your projects, newest first")


class Health(BaseModel):
    status: str = Field(description="ok while the process serves requests")


class HealthCheckOut(BaseModel):
    ok: bool = Field(description="Whether this check passed")
    detail: str = Field(description="What was found: the heartbeat's age, or why it failed")


class HealthReportOut(BaseModel):
    status: str = Field(description="ok when every check passed, failing otherwise (with 503)")
    checks: dict[str, HealthCheckOut] = Field(
        description="Each check by name: event_loop, and for /readyz nats, postgres and vault"
    )


class SecretNames(BaseModel):
    names: list[str] = Field(description="Names of the project's stored secrets (never values)")


class UserOut(BaseModel):
    id: str = Field(description="User id: telegram:<id>, api:<name> or cli:<login>")
    display_name: str = Field(description="Name shown in chat and listings")
    role: str = Field(description="admin or member")
    status: str = Field(description="active or blocked")
    added_by: str | None = Field(description="Who let this person in")


class UserList(BaseModel):
    users: list[UserOut] = Field(description="Every known user, admins first")


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "member"] = Field(description="The user's new role")


class ServerOut(BaseModel):
    name: str = Field(description="Inventory name")
    host: str = Field(description="SSH host")
    ssh_port: int = Field(description="SSH port")
    labels: list[str] = Field(description="Placement labels")
    capacity: int = Field(description="At most this many projects")
    used_ports: int = Field(description="Ports allocated to projects now")
    port_min: int = Field(description="Lowest port handed out")
    port_max: int = Field(description="Highest port handed out")
    state: str = Field(
        description="new, provisioning, ready, unreachable, draining or retired; only ready "
        "servers take new projects"
    )
    state_reason: str = Field(description="Why it is in that state (empty when nothing to say)")


class ServerList(BaseModel):
    servers: list[ServerOut] = Field(description="Deploy targets (their keys stay in Vault)")


class IncidentOut(BaseModel):
    id: uuid.UUID = Field(description="Incident id")
    kind: str = Field(description="What kind of check opened it")
    key: str = Field(description="Natural key: one open incident per key")
    summary: str = Field(description="What is wrong, in words")
    project_id: uuid.UUID | None = Field(description="The project concerned, if any")
    status: str = Field(description="open or resolved")
    opened_at: datetime = Field(description="When it was opened (UTC)")
    resolved_at: datetime | None = Field(description="When it was resolved (UTC)")


class IncidentList(BaseModel):
    incidents: list[IncidentOut] = Field(description="Newest first")


class DeadLetterOut(BaseModel):
    seq: int = Field(description="Sequence in the DLQ stream (`orchestrator dlq show SEQ`)")
    consumer: str = Field(description="The durable that gave up on the message")
    subject: str = Field(description="The original subject")
    error: str = Field(description="Why it failed")
    deliveries: int = Field(description="How many times it was delivered")
    failed_at: str = Field(description="When it was dead-lettered")


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterOut] = Field(
        description="Oldest first; inspect and replay them with `orchestrator dlq`"
    )


class ConsumerLag(BaseModel):
    durable: str = Field(description="Durable consumer name")
    stream: str = Field(description="Its stream")
    pending: int | None = Field(description="Messages not yet delivered (None: no consumer)")
    ack_pending: int | None = Field(description="Delivered, not yet acknowledged")
    redelivered: int | None = Field(description="Delivered more than once")
    error: str | None = Field(description="Why the consumer could not be read, if it could not")


class LagReport(BaseModel):
    consumers: list[ConsumerLag] = Field(description="One row per durable consumer")


class ProjectBudget(BaseModel):
    project_id: uuid.UUID = Field(description="The project")
    user_id: str | None = Field(description="Its owner")
    project_spent_usd: float = Field(description="LLM spend of the project so far")
    project_limit_usd: float = Field(description="The project's LLM budget")
    user_spent_month_usd: float = Field(description="The owner's LLM spend this month")
    user_limit_month_usd: float = Field(description="The owner's monthly LLM budget")
    exhausted: str | None = Field(description="Why no further LLM call is allowed, if so")


class BudgetReport(BaseModel):
    budgets: list[ProjectBudget] = Field(description="The newest projects' LLM budgets")


class BudgetChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    usd: float | None = Field(
        ge=0,
        le=999999,
        allow_inf_nan=False,
        description="The LLM budget in USD; null returns to the configured default",
    )
