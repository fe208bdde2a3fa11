"""`orchestrator status <project>`: a project's state and timeline, read from the database.

It reads the read model only, so it loads SQLAlchemy and nothing of the bus or Vault.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from producers.read_model import project_view

from .database import database
from .endpoints import Endpoints, resolve
from .running import print_line, run

Out = Callable[[str], None]


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    return run(status(resolve(args.state_dir), args.project, args.json, print_line))


async def status(endpoints: Endpoints, ref: str, as_json: bool, out: Out) -> int:
    async with database(endpoints) as sessions, sessions() as session:
        view = await project_view(session, ref)
    if as_json:
        out(
            json.dumps(
                {
                    "id": str(view.id),
                    "flow_id": str(view.flow_id),
                    "name": view.name,
                    "slug": view.slug,
                    "state": view.state,
                    "url": view.url,
                    "error": view.error,
                    "offline": view.offline,
                    "missing_secrets": list(view.missing_secrets),
                    "timeline": [
                        {
                            "at": t.occurred_at.isoformat(),
                            "type": t.event_type,
                            "actor": t.actor,
                            "state": t.state,
                            "summary": t.summary,
                        }
                        for t in view.timeline
                    ],
                },
                indent=2,
            )
        )
        return 0
    out(f"project  {view.id}  {view.name or '(unnamed yet)'}")
    out(f"state    {view.state}" + ("  [offline mode]" if view.offline else ""))
    if view.url:
        out(f"url      {view.url}")
    if view.error:
        out(f"error    {view.error}")
    for name in view.missing_secrets:
        project_ref = view.slug or str(view.id)
        out(f'waits    {name}: printf %s "$VALUE" | orchestrator secrets set {project_ref} {name}')
    out("timeline")
    for t in view.timeline:
        out(f"  {t.occurred_at:%Y-%m-%d %H:%M:%S}  {t.actor:<16} {t.event_type:<32} {t.summary}")
    return 0
