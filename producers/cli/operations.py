"""`orchestrator redeploy|restart|rollback|retry <project>`: a person's operations on a project.

Each checks the project against `infra.project_operations` first, so an impossible request is
refused at once with the reason (exit code 1) and nothing is published; otherwise it publishes
the intent as the operator (an admin) and prints its id. The coordinator applies the same rules
again and reports the outcome on the project's timeline (`orchestrator status <project>`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from infra.project_operations import Operation, refusal
from producers.intents import operation_request
from producers.read_model import ProjectNotFound, find_project

from .commands import as_operator
from .connection import nats_client, publisher
from .database import database
from .endpoints import Endpoints, NoStack, resolve

Out = Callable[[str], None]


class Refused(Exception):
    """The project's state rules the operation out; the message says why."""


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`: resolve endpoints, run, report errors."""
    operation: Operation = args.operation
    try:
        return asyncio.run(
            run(
                resolve(args.state_dir),
                operation,
                args.project,
                user=args.user,
                commit=getattr(args, "commit", None),
                out=print,
            )
        )
    except (Refused, ProjectNotFound, NoStack) as exc:
        print(f"orchestrator {operation}: {exc}", file=sys.stderr)
        return 1


async def run(
    endpoints: Endpoints,
    operation: Operation,
    ref: str,
    *,
    user: str,
    commit: str | None,
    out: Out,
) -> int:
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    reason = refusal(project, operation)
    if reason is not None:
        raise Refused(reason)
    event = operation_request(
        operation,
        project.id,
        project.flow_id,
        user_id=await as_operator(endpoints, user),
        commit=commit,
    )
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(event)
    out(f"{operation} requested for project {project.id} (event {event.event_id})")
    out(f"follow it with: orchestrator status {project.id}")
    return 0
