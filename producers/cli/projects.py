"""`orchestrator projects`: every project on this system, newest first, read from the database.

The host CLI is the operator's (an admin), so it lists everyone's projects; `--user` narrows
the list to one person's. Archived projects are left out unless asked for (`--state archived`
or `--all`). Like `status`, it loads SQLAlchemy and nothing of the bus or Vault.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sqlalchemy import select

from infra.db.enums import ProjectState
from infra.db.models import Project

from .database import database
from .endpoints import Endpoints, resolve
from .json_output import document
from .running import print_line, run
from .tables import table_lines

Out = Callable[[str], None]


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    return run(
        projects(
            resolve(args.state_dir),
            out=print_line,
            states=args.state,
            user=args.user,
            include_archived=args.all,
            limit=args.limit,
            as_json=args.json,
        )
    )


async def projects(
    endpoints: Endpoints,
    *,
    out: Out,
    states: list[str] | None = None,
    user: str | None = None,
    include_archived: bool = False,
    limit: int = 50,
    as_json: bool = False,
) -> int:
    query = select(Project).order_by(Project.created_at.desc()).limit(limit)
    if states:
        query = query.where(Project.state.in_(states))
    elif not include_archived:
        query = query.where(Project.state != ProjectState.ARCHIVED)
    if user:
        query = query.where(Project.user_id == user)
    async with database(endpoints) as sessions, sessions() as session:
        rows = list(await session.scalars(query))
    if as_json:
        out(document([_as_dict(project) for project in rows]))
        return 0
    if not rows:
        out("no projects" + (" match" if states or user else ' yet: orchestrator request "..."'))
        return 0
    table = [
        (
            str(p.id)[:8],
            (p.slug or p.name or "(unnamed yet)")[:40],
            p.state,
            p.user_id,
            f"{p.created_at:%Y-%m-%d %H:%M}",
            (p.url or p.error or "")[:120],
        )
        for p in rows
    ]
    for line in table_lines(("project", "name", "state", "owner", "created", "url"), table):
        out(line)
    return 0


def _as_dict(project: Project) -> dict[str, object]:
    return {
        "id": str(project.id),
        "flow_id": str(project.flow_id),
        "name": project.name,
        "slug": project.slug,
        "state": project.state,
        "owner": project.user_id,
        "port": project.port,
        "url": project.url,
        "error": project.error,
        "created_at": project.created_at.isoformat(),
    }
