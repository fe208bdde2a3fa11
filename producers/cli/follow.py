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
from producers.read_model import ProjectNotFound, ProjectView, TimelineEntry, project_view

from .database import database
from .endpoints import Endpoints
from .exit_codes import ExitCode
from .json_output import record
from .project_output import entry_line, entry_object, header_line, state_lines

Out = Callable[[str], None]

#: Where a project stops moving without someone acting, and what the follow exits with there.
SETTLED = {
    ProjectState.ACTIVE: ExitCode.OK,
    ProjectState.FAILED: ExitCode.FAILED,
    ProjectState.ARCHIVED: ExitCode.ARCHIVED,
    ProjectState.AWAITING_ANSWER: ExitCode.WAITING_FOR_YOU,
    ProjectState.AWAITING_SECRETS: ExitCode.WAITING_FOR_YOU,
}

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
    printer = _Printer(out, as_json)
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


class _Printer:
    """Prints each entry once: the timeline is re-read whole, its entries are compared by value."""

    def __init__(self, out: Out, as_json: bool) -> None:
        self._out = out
        self._json = as_json
        self._seen: set[TimelineEntry] = set()

    def show(self, view: ProjectView) -> None:
        if not self._seen and not self._json:
            self._out(header_line(view))
            self._out("timeline")
        for entry in view.timeline:
            if entry not in self._seen:
                self._seen.add(entry)
                self._entry(entry)

    def _entry(self, entry: TimelineEntry) -> None:
        if self._json:
            self._out(record({"kind": "entry", **entry_object(entry)}))
        else:
            self._out(entry_line(entry))

    def settled(self, view: ProjectView, code: ExitCode) -> int:
        question = _question(view) if view.state == ProjectState.AWAITING_ANSWER else None
        if self._json:
            self._out(
                record(
                    {
                        "kind": "settled",
                        "id": str(view.id),
                        "slug": view.slug,
                        "state": view.state,
                        "url": view.url,
                        "error": view.error,
                        "question": question,
                        "missing_secrets": list(view.missing_secrets),
                        "exit_code": int(code),
                    }
                )
            )
            return code
        for line in state_lines(view):
            self._out(line)
        if question is not None:
            self._out(f"waits    an answer to: {question}")
            self._out(f'         reply with: orchestrator answer {view.slug or view.id} "..."')
        return code

    def refused(self, project_id: uuid.UUID, entry: TimelineEntry) -> int:
        self._entry(entry)
        if self._json:
            self._out(
                record(
                    {
                        "kind": "settled",
                        "id": str(project_id),
                        "state": "refused",
                        "error": entry.summary,
                        "exit_code": int(ExitCode.FAILED),
                    }
                )
            )
        else:
            self._out(f"refused  {entry.summary}")
        return ExitCode.FAILED


def _question(view: ProjectView) -> str | None:
    """The analyst's question, from the entry the coordinator recorded as the project started
    to wait (`question: <text>`)."""
    asked = [t for t in view.timeline if t.state == ProjectState.AWAITING_ANSWER]
    return asked[-1].summary.removeprefix("question: ") if asked else None
