"""The relational state: projects and their timeline, delivery bookkeeping, inventory, usage.

Alembic migrations under `infra/db/migrations/` create exactly these tables; a test compares
the migrated schema with this metadata so the two never drift.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Re-exported under their old home: code across the project imports them from this module.
from infra.db.enums import ProjectState as ProjectState
from infra.db.enums import ServerState as ServerState
from infra.db.enums import UserRole as UserRole
from infra.db.enums import UserStatus as UserStatus

JsonType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class User(Base):
    """A person, by a stable id (`telegram:<id>`, `api:<token name>`, `cli:<login>`).

    Only active users reach the bus: the doors (bot, API, CLI) refuse everyone else, and the
    consumers check the owner of a project against the actor of every intent.
    """

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16), default=UserRole.MEMBER, server_default="member")
    status: Mapped[str] = mapped_column(
        String(16), default=UserStatus.ACTIVE, server_default="active"
    )
    #: Who let this person in (a user id, or `config` for admins from configuration).
    added_by: Mapped[str | None] = mapped_column(String(200))
    #: Per-user overrides of the configured quotas (None: the configured default applies).
    llm_budget_usd_month: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    projects_per_day: Mapped[int | None] = mapped_column(Integer)
    builds_at_once: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserInvite(Base):
    """A one-time invite link (`/start <code>`): only a SHA-256 of the code is stored."""

    __tablename__ = "user_invites"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), default=UserRole.MEMBER)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_by: Mapped[str | None] = mapped_column(String(200))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PendingSecret(Base):
    """A secret the bot asked a user for: their next message is its value (never stored here).

    In the database so the question survives a bot restart; `expires_at` bounds how long an
    unrelated later message could be mistaken for the value.
    """

    __tablename__ = "pending_secrets"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    name: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    flow_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(200), default="")
    slug: Mapped[str | None] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(32), default=ProjectState.REQUESTED)
    #: Optimistic concurrency: every transition bumps it under a row lock.
    version: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    answers: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    offline: Mapped[bool] = mapped_column(Boolean, default=True)
    # The join: deploy is emitted only when both halves are recorded.
    code_commit: Mapped[str | None] = mapped_column(String(64))
    repo_clone_url: Mapped[str | None] = mapped_column(Text)
    repo_branch: Mapped[str | None] = mapped_column(String(200))
    repo_commit: Mapped[str | None] = mapped_column(String(64))
    server_name: Mapped[str | None] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    #: Retries used per step, e.g. {"deploy": 1}.
    attempts: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    #: When the current step times out (the coordinator's tick checks it).
    step_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: An admin's override of the per-project LLM budget (None: the configured default).
    llm_budget_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    #: Set while the build waits for one of the owner's running builds to finish (the
    #: builds-at-once quota); the oldest waiting build starts first.
    build_queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Names (never values) of the secrets an `awaiting_secrets` deploy still waits for.
    missing_secrets: Mapped[list[Any]] = mapped_column(
        JsonType, default=list, server_default=text("'[]'")
    )
    #: The commit that serves now, and the one that served before it (what a rollback restores).
    live_commit: Mapped[str | None] = mapped_column(String(64))
    previous_commit: Mapped[str | None] = mapped_column(String(64))
    #: The redeploy, restart or rollback under way on a live project, and since when.
    operation: Mapped[str | None] = mapped_column(String(32))
    operation_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The repository an adopted project was imported from (None for a described project):
    #: its spec step is the repo step's inspection, not the analyst.
    adopted_from: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        Index("ix_projects_user_id", "user_id"),
        Index("ix_projects_state_deadline", "state", "step_deadline"),
    )


class ProjectEvent(Base):
    """Append-only timeline: every stage outcome, in order."""

    __tablename__ = "project_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    actor: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str | None] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevisionStatus(StrEnum):
    """Where one spec revision of a project is; the first five are a change in flight."""

    SPECIFYING = "specifying"
    AWAITING_ANSWER = "awaiting_answer"
    RENDERING = "rendering"
    BUILDING = "building"
    DEPLOYING = "deploying"
    LIVE = "live"
    FAILED = "failed"
    REFUSED = "refused"
    ABANDONED = "abandoned"


class ProjectRevision(Base):
    """One revision of a project's spec: the first is the spec it was built from, each change
    request adds the next. The project row keeps the live spec; a revision's spec replaces it
    only once its release is live."""

    __tablename__ = "project_revisions"

    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    change: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[str | None] = mapped_column(String(200))
    #: Answers to the analyst's questions about this change, in order.
    answers: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    summary: Mapped[str] = mapped_column(Text, default="")
    base_commit: Mapped[str | None] = mapped_column(String(64))
    commit: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class InboxEntry(Base):
    """`(consumer, event_id)` seen: written in the same transaction as the step's effect."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    #: Ids of the events this step emitted, re-published when a duplicate arrives.
    result_event_ids: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    #: The relay prunes rows older than any stream keeps a message (by `processed_at`).
    __table_args__ = (Index("ix_inbox_processed_at", "processed_at"),)


class OutboxMessage(Base):
    """An event to publish, written with the state change that caused it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    subject: Mapped[str] = mapped_column(String(255))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Failed publishes of this row (an outage of NATS is not counted).
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Why the last publish failed, for the operator who finds the row parked.
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Set when the relay gave up on the row (it always fails, e.g. over `max_payload`), so the
    #: rows behind it flow; an operator fixes the cause and clears it to publish it again.
    parked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at"),
    )


class Server(Base):
    """A deploy target in the inventory. Its SSH key lives in Vault at `servers/<name>`."""

    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    ssh_port: Mapped[int] = mapped_column(Integer, default=22)
    ssh_user: Mapped[str] = mapped_column(String(100), default="deploy")
    #: The pinned host key line (known_hosts format); SSH never trusts on first use.
    host_key: Mapped[str] = mapped_column(Text)
    labels: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    capacity: Mapped[int] = mapped_column(Integer, default=20)
    #: Deploys this server takes at once (`consumers/deployer/deploy_slots.py`); None: only the
    #: deployer's own concurrency bounds them.
    deploy_slots: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    port_min: Mapped[int] = mapped_column(Integer, default=20000)
    port_max: Mapped[int] = mapped_column(Integer, default=20999)
    public_host: Mapped[str] = mapped_column(String(255), default="")
    #: Only `ready` servers take new projects; moves are checked by `infra.server_lifecycle`.
    state: Mapped[str] = mapped_column(String(20), default=ServerState.NEW)
    #: Why the server is in its state (a failed bootstrap, the failing health check), or "".
    state_reason: Mapped[str] = mapped_column(Text, default="")
    state_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        CheckConstraint(
            "state IN ('new', 'provisioning', 'ready', 'unreachable', 'draining', 'retired')",
            name="ck_servers_state",
        ),
        CheckConstraint(
            "deploy_slots IS NULL OR deploy_slots >= 1", name="ck_servers_deploy_slots"
        ),
    )


class PortAllocation(Base):
    __tablename__ = "port_allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"))
    port: Mapped[int] = mapped_column(Integer)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("server_id", "port", name="uq_port_allocations_server_port"),
    )


class Deployment(Base):
    """One release of one commit; the natural key makes a redelivered deploy converge."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    commit: Mapped[str] = mapped_column(String(64))
    release: Mapped[str] = mapped_column(String(200))
    server_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        UniqueConstraint("project_id", "commit", name="uq_deployments_project_commit"),
    )


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text)
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    status: Mapped[str] = mapped_column(String(16), default="open")
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # One open incident per natural key; resolved ones are history.
        Index(
            "uq_incidents_open_key",
            "key",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
    )


class ApiToken(Base):
    """HTTP API credentials: only a SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    #: admin tokens reach the admin routes; member tokens only their user's projects.
    role: Mapped[str] = mapped_column(String(16), default=UserRole.MEMBER, server_default="member")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LlmUsage(Base):
    __tablename__ = "llm_usage"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    stage: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    #: The event whose handling spent the tokens: a redelivery never counts twice.
    event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NotifierProgressMessage(Base):
    """The one Telegram message per project that progress edits in place."""

    __tablename__ = "notifier_progress_messages"

    project_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class IdempotencyKey(Base):
    """An HTTP client's `Idempotency-Key`, remembered for a day with what it was used for.

    A retry with the same key and the same request is answered as the first was (the event's
    ids are derived from the key, `producers/idempotency.py`); the same key for another request
    is refused.
    """

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    #: The operation and a SHA-256 of its arguments.
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
