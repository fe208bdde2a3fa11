"""`orchestrator status <project> --follow` and `request ... --follow`: watch a project settle.

It polls the read model (the `projects` row and its timeline) every `interval` seconds and
prints each timeline entry once, as it appears, until the project settles: active, failed,
archived, or waiting for a person (an answer, a secret). The exit code says which
(`producers.cli.exit_codes`), so a script can `orchestrator request "..." --follow && deploy-ok`.

Polling, not the bus: the timeline is what the coordinator committed, so what is printed is what
`status` shows afterwards, and following needs only the database (no NATS user, no Vault). At
one query pair per second per follower the database does not notice. A request the coordinator
refused never gets a project row, only its timeline entry, which ends the follow as failed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.enums import ProjectState
from infra.db.models import Project, ProjectEvent
from producers.read_model import ProjectNotFound, TimelineEntry, project_view

from .database import database
from .endpoints import Endpoints
from .project_output import SETTLED, TimelinePrinter

Out = Callable[[str], None]

DEFAULT_INTERVAL_SECONDS = 1.0


async def follow(
    endpoints: Endpoints,
    ref: str,
    out: Out,
    as_json: bool = False,
    interval: float = DEFAULT_INTERVAL_SECONDS,
    *,
    requested: uuid.UUID | None = None,
) -> int:
    """Print `ref`'s timeline as it grows; return the exit code of the state it settles in.

    `requested` is the id of a project just asked for: its row appears once the coordinator
    accepts the request, so until then the follow waits (and a refusal ends it) instead of
    reporting an unknown project.
    """
    printer = TimelinePrinter(out, as_json)
    async with database(endpoints) as sessions:
        while True:
            async with sessions() as session:
                try:
                    view = await project_view(session, ref)
                except ProjectNotFound:
                    if requested is None:
                        raise
                    refusal = await _refusal(session, requested)
                    if refusal is not None:
                        return printer.refused(requested, refusal)
                else:
                    ref = str(view.id)
                    printer.show(view)
                    code = SETTLED.get(ProjectState(view.state))
                    if code is not None:
                        return printer.settled(view, code)
            await asyncio.sleep(interval)


async def _refusal(session: AsyncSession, project_id: uuid.UUID) -> TimelineEntry | None:
    """The entry the coordinator recorded when it refused to create `project_id`, if it did.

    One statement, so one snapshot: an accepted request commits its row and its first entry
    together, and an entry without a row is a refusal, never a row that was not seen yet.
    """
    row = await session.scalar(
        select(ProjectEvent)
        .where(
            ProjectEvent.project_id == project_id,
            ~exists().where(Project.id == project_id),
        )
        .limit(1)
    )
    if row is None:
        return None
    return TimelineEntry(row.occurred_at, row.event_type, row.actor, row.state, row.summary)
