"""Opening an incident: one open incident per natural key, whichever replica or sweep is first."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts import events as ev
from infra.db.models import Incident

ACTOR = "ops"


async def record_opened(session: AsyncSession, opened: ev.IncidentOpened) -> bool:
    """Insert the incident `opened` announces; False when one is already open for its key.

    The partial unique index on open incidents' keys decides, so a redelivered tick or a
    second ops replica never opens the same incident twice (and never announces it twice).
    """
    inserted = await session.scalar(
        insert(Incident)
        .values(
            id=opened.incident_id,
            kind=opened.kind,
            key=opened.key,
            summary=opened.summary,
            project_id=opened.project_id,
            status="open",
        )
        .on_conflict_do_nothing()
        .returning(Incident.id)
    )
    return inserted is not None


async def open_incidents(session: AsyncSession) -> dict[str, Incident]:
    """Every open incident by its natural key."""
    rows = await session.scalars(select(Incident).where(Incident.status == "open"))
    return {incident.key: incident for incident in rows.all()}


def resolve(tick: ev.SchedulerTick, incident: Incident, index: int) -> ev.IncidentResolved:
    """Mark `incident` resolved (committed with the sweep) and the event announcing it."""
    incident.status = "resolved"
    incident.resolved_at = datetime.now(UTC)
    return tick.derive(
        ev.IncidentResolved, actor=ACTOR, index=index, incident_id=incident.id, key=incident.key
    )
