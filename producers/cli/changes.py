"""`orchestrator change <project> "..."`: ask for a change to a live project.

The change goes to the analyst as the project's next spec revision; the command refuses at once
what the coordinator would refuse (a project that is not live, a change already in progress, a
credential in the text) and otherwise prints how to follow the revision.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from infra.change_rules import change_in_flight, in_flight_message, why_not_changeable
from producers.cli.commands import HOW_TO_STORE, as_operator
from producers.cli.connection import nats_client, publisher
from producers.cli.database import database
from producers.cli.endpoints import Endpoints, NoStack, resolve
from producers.credential_scan import CredentialInText, refuse_credentials
from producers.intents import change_request
from producers.read_model import ProjectNotFound, find_project

Out = Callable[[str], None]


class ChangeRefused(RuntimeError):
    """The project cannot take this change now; the message says why."""


async def change(endpoints: Endpoints, ref: str, text: str, user: str, out: Out) -> int:
    refuse_credentials(text, how_to_store=HOW_TO_STORE)
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
        reason = why_not_changeable(project)
        in_flight = await change_in_flight(session, project.id)
    if reason is not None:
        raise ChangeRefused(reason)
    if in_flight is not None:
        raise ChangeRefused(in_flight_message(project, in_flight))
    event = change_request(
        project.id,
        project.flow_id,
        text,
        user_id=await as_operator(endpoints, user),
        source="cli",
    )
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(event)
    out(f"change sent for project {project.slug or project.id}")
    out(f"follow the revision with: orchestrator status {project.slug or project.id}")
    return 0


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`: resolve endpoints, run, report errors."""
    try:
        return asyncio.run(
            change(resolve(args.state_dir), args.project, args.text, args.user, print)
        )
    except (ChangeRefused, ProjectNotFound, CredentialInText, NoStack) as exc:
        print(f"orchestrator change: {exc}", file=sys.stderr)
        return 1
