"""`orchestrator status <project>`: a project's state and timeline, read from the database.

It reads the read model only, so it loads SQLAlchemy and nothing of the bus or Vault. With
`--follow` it keeps printing the timeline until the project settles (`producers.cli.follow`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from producers.read_model import project_view

from .database import database
from .endpoints import Endpoints, resolve
from .exit_codes import ExitCode
from .follow import follow
from .project_output import print_project
from .running import print_line, run

Out = Callable[[str], None]


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    endpoints = resolve(args.state_dir)
    if args.follow:
        return run(follow(endpoints, args.project, print_line, args.json, args.interval))
    return run(status(endpoints, args.project, args.json, print_line))


async def status(endpoints: Endpoints, ref: str, as_json: bool, out: Out) -> int:
    async with database(endpoints) as sessions, sessions() as session:
        view = await project_view(session, ref)
    print_project(view, out, as_json)
    return ExitCode.OK
