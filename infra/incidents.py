"""Incidents: one open row per natural key, opened and resolved by the checks that find them.

The key is unique among open incidents (a partial unique index), so a redelivered tick or a
second replica of the checking process never opens the same incident twice: the insert does
nothing and the caller emits nothing. Every check (ops' health sweep, the repo step's
reconciliation) opens and resolves through these two functions, so the rows and the
`ops.incident.*` events look the same whoever found the problem, and tells the admins through
`tell_admins` (every active admin with a chat, as the API's alerts do).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from contracts.envelope import Event
from infra.db.enums import UserRole, UserStatus
from infra.db.models import Incident, User

#: The keys of the reconciliation's incidents (`consumers/repo/reconciliation.py`) start so.
RECONCILE_KEY_PREFIX = "reconcile:"


async def open_incidents(session: AsyncSession, key_prefix: str = "") -> dict[str, Incident]:
    """The open incidents whose key starts with `key_prefix`, by key."""
    rows = await session.scalars(
        select(Incident).where(
            Incident.status == "open", Incident.key.startswith(key_prefix, autoescape=True)
        )
    )
    return {incident.key: incident for incident in rows.all()}


async def open_incident(
    session: AsyncSession,
    cause: Event,
    *,
    actor: str,
    index: int,
    kind: str,
    key: str,
    summary: str,
    project_id: uuid.UUID | None = None,
) -> ev.IncidentOpened | None:
    """Record the incident and return its event; None when one is already open for `key`."""
    opened = cause.derive(
        ev.IncidentOpened,
        actor=actor,
        index=index,
        incident_id=uuid.uuid4(),
        kind=kind,
        key=key,
        summary=summary,
        project_id=project_id,
    )
    inserted = await session.scalar(
        insert(Incident)
        .values(
            id=opened.incident_id,
            kind=kind,
            key=key,
            summary=summary,
            project_id=project_id,
            status="open",
        )
        .on_conflict_do_nothing()
        .returning(Incident.id)
    )
    return None if inserted is None else opened


def resolve_incident(
    incident: Incident, cause: Event, *, actor: str, index: int
) -> ev.IncidentResolved:
    """Mark the incident resolved (the caller's transaction stores it) and return its event."""
    incident.status = "resolved"
    incident.resolved_at = datetime.now(UTC)
    return cause.derive(
        ev.IncidentResolved, actor=actor, index=index, incident_id=incident.id, key=incident.key
    )


async def admin_chats(session: AsyncSession) -> list[tuple[str, int]]:
    """(user id, chat id) of every active admin with a chat: who hears about incidents."""
    rows = await session.execute(
        select(User.id, User.chat_id).where(
            User.role == UserRole.ADMIN,
            User.status == UserStatus.ACTIVE,
            User.chat_id.is_not(None),
        )
    )
    return [(user_id, chat_id) for user_id, chat_id in rows.tuples() if chat_id is not None]


def tell_admins(
    cause: Event, admins: Sequence[tuple[str, int]], *, actor: str, index: int, text: str
) -> list[ev.NotificationRequested]:
    """One failure notice per admin chat; derived ids from `index` up (one per admin)."""
    return [
        cause.derive(
            ev.NotificationRequested,
            actor=actor,
            index=index + n,
            user_id=user_id,
            chat_id=chat_id,
            kind=ev.NotificationKind.FAILURE,
            text=text,
        )
        for n, (user_id, chat_id) in enumerate(admins)
    ]
