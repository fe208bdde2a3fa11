"""`orchestrator reconcile`: run the reconciliation now and print what it found and repaired.

The check itself runs in the repo process (only it can list the git host, see
`consumers/repo/reconciliation.py`): this command publishes a `reconcile` tick of its own, waits
until the repo process has handled it (its inbox row), and prints the open reconciliation
incidents and the ports that run freed. It repairs what the scheduled job repairs and nothing
more, so it has no `--repair`.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts import events as ev
from contracts.topology import REPO_RECONCILE
from infra.db.models import InboxEntry, Incident, OutboxMessage
from infra.incidents import RECONCILE_KEY_PREFIX
from producers.scheduler.ticks import TICKS_FLOW

from .connection import nats_client, publisher
from .database import database
from .endpoints import Endpoints, resolve
from .exit_codes import ExitCode
from .json_output import document
from .running import print_line, run
from .tables import table_lines

Out = Callable[[str], None]
JOB = "reconcile"
#: The repo process lists the git host and reads the inventory: seconds, even on GitHub.
WAIT_SECONDS = 120.0


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    return run(reconcile(resolve(args.state_dir), print_line, as_json=args.json))


async def reconcile(
    endpoints: Endpoints, out: Out, *, as_json: bool = False, wait_seconds: float = WAIT_SECONDS
) -> int:
    now = datetime.now(UTC)
    tick = ev.SchedulerTick(
        correlation_id=TICKS_FLOW,
        actor="cli",
        job=JOB,
        period=f"on demand {now:%Y-%m-%dT%H:%M:%S.%f}",
        occurred_at=now,
    )
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(tick)
    async with database(endpoints) as sessions:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while (entry := await _handled(sessions, tick.event_id)) is None:
            if loop.time() > deadline:
                out(
                    f"orchestrator: the repo process did not run the reconciliation within "
                    f"{wait_seconds:.0f} s; is it running? (orchestrator lag shows "
                    f"{REPO_RECONCILE.durable}'s pending ticks)"
                )
                return ExitCode.FAILED
            await asyncio.sleep(0.2)
        async with sessions() as session:
            incidents = list(
                await session.scalars(
                    select(Incident)
                    .where(Incident.status == "open", Incident.key.startswith(RECONCILE_KEY_PREFIX))
                    .order_by(Incident.kind, Incident.key)
                )
            )
            released = [
                ev.ResourcesReleased.model_validate_json(row.payload)
                for row in await session.scalars(
                    select(OutboxMessage).where(
                        OutboxMessage.event_id.in_([uuid.UUID(i) for i in entry]),
                        OutboxMessage.subject == ev.ResourcesReleased.TYPE,
                    )
                )
            ]
    findings = [
        {
            "kind": i.kind,
            "key": i.key,
            "summary": i.summary,
            "project_id": str(i.project_id) if i.project_id else None,
            "incident_id": str(i.id),
            "opened_at": i.opened_at,
        }
        for i in incidents
    ]
    repairs = [
        {"action": "port_freed", "project_id": str(r.project_id), "server": r.server_name,
         "port": r.port}
        for r in released
    ]  # fmt: skip
    if as_json:
        out(document({"findings": findings, "repairs": repairs}))
        return ExitCode.OK
    for repair in repairs:
        out(f"freed port {repair['port']} on {repair['server']} (project {repair['project_id']})")
    if not findings:
        out("nothing to reconcile: every repository, release and port has its project")
        return ExitCode.OK
    table = [(f["kind"], f["summary"]) for f in findings]
    for line in table_lines(("finding", "what to do"), table):
        out(line)
    return ExitCode.OK


async def _handled(
    sessions: async_sessionmaker[AsyncSession], event_id: uuid.UUID
) -> list[str] | None:
    """The ids the repo process emitted for the tick, once it has handled it."""
    async with sessions() as session:
        entry = await session.get(InboxEntry, (REPO_RECONCILE.durable, event_id))
    return None if entry is None else [str(i) for i in entry.result_event_ids]
