"""`orchestrator redeploy|restart|rollback|retry <project>`: a person's operations on a project.

Each checks the project against `infra.project_operations` first, so an impossible request is
refused at once with the reason (exit code 1) and nothing is published; otherwise it publishes
the intent as the operator (an admin) and prints its id. The coordinator applies the same rules
again and reports the outcome on the project's timeline (`orchestrator status <project>`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from collections.abc import Callable

from infra.bus.publisher import JetStreamPublisher
from infra.project_operations import Operation, refusal
from producers.intents import operation_request
from producers.read_model import ProjectNotFound, find_project

from .commands import as_operator
from .connection import Endpoints, NoStack, database, nats_client, resolve

Out = Callable[[str], None]

_HELP = {
    Operation.REDEPLOY: "deploy a live project again (its current commit, or --commit)",
    Operation.RESTART: "restart a live project's running release, without a new deploy",
    Operation.ROLLBACK: "serve a live project's previous release again",
    Operation.RETRY: "resume a failed project from the step that failed",
}


def _commit(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a full 40-hex commit id")
    return text


class Refused(Exception):
    """The project's state rules the operation out; the message says why."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for operation, text in _HELP.items():
        parser = subparsers.add_parser(operation.value, help=text)
        parser.add_argument("project", help="project id, id prefix or slug")
        if operation is Operation.REDEPLOY:
            parser.add_argument(
                "--commit",
                type=_commit,
                help="a full 40-hex commit of the project's repository to deploy",
            )
        parser.add_argument("--user", default=getpass.getuser(), help="who asks (default: you)")
        parser.set_defaults(handler=_handle, operation=operation)


def _handle(args: argparse.Namespace) -> int:
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
        await JetStreamPublisher.from_client(nc).publish(event)
    out(f"{operation} requested for project {project.id} (event {event.event_id})")
    out(f"follow it with: orchestrator status {project.id}")
    return 0
