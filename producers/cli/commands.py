"""`orchestrator request | answer | archive`: the intents a person sends about a project.

Each publishes one intent as the operator (registered as an admin on first use, see
`as_operator`), which the coordinator then applies; `orchestrator status` shows the outcome.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable

from sqlalchemy.dialects.postgresql import insert as pg_insert

from infra.db.models import User
from producers.access import operator
from producers.credential_scan import refuse_credentials
from producers.intents import (
    archive_request,
    clarification_answer,
    project_request,
)
from producers.read_model import find_project

from .connection import nats_client, publisher
from .database import database
from .endpoints import Endpoints, resolve
from .follow import DEFAULT_INTERVAL_SECONDS, follow
from .project_output import print_requested
from .running import print_line, run

Out = Callable[[str], None]


async def as_operator(endpoints: Endpoints, login: str) -> str:
    """The operator's user id, registered as an admin if new, so the coordinator accepts it.

    Whoever runs the host CLI holds the database credentials (`producers.access.operator`); the
    coordinator checks every intent's user against the users table, so the row must exist. An
    existing row is left as it is: an operator an admin blocked stays blocked.
    """
    person = operator(login)
    async with database(endpoints) as sessions, sessions() as session, session.begin():
        await session.execute(
            pg_insert(User)
            .values(id=person.id, role=person.role, status=person.status, added_by="cli")
            .on_conflict_do_nothing(index_elements=["id"])
        )
    return person.id


#: Where the credential refusal points: the secret command reads the value from stdin.
HOW_TO_STORE = 'printf %s "$VALUE" | orchestrator secrets set <project> NAME'


async def request(
    endpoints: Endpoints,
    description: str,
    user: str,
    out: Out,
    *,
    as_json: bool = False,
    follow_it: bool = False,
    interval: float = DEFAULT_INTERVAL_SECONDS,
) -> int:
    """Publish the request; with `follow_it`, then print its timeline until it settles."""
    refuse_credentials(description, how_to_store=HOW_TO_STORE)
    event = project_request(description, user_id=await as_operator(endpoints, user), source="cli")
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(event)
    print_requested(str(event.project_id), str(event.correlation_id), out, as_json, follow_it)
    if not follow_it:
        return 0
    return await follow(
        endpoints, str(event.project_id), out, as_json, interval, requested=event.project_id
    )


async def answer(endpoints: Endpoints, ref: str, text: str, user: str, out: Out) -> int:
    refuse_credentials(text, how_to_store=HOW_TO_STORE)
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    event = clarification_answer(
        project.id, project.flow_id, text, user_id=await as_operator(endpoints, user), source="cli"
    )
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(event)
    out(f"answer sent for project {project.id}")
    return 0


async def archive(
    endpoints: Endpoints, ref: str, reason: str, out: Out, user: str | None = None
) -> int:
    async with database(endpoints) as sessions, sessions() as session:
        project = await find_project(session, ref)
    user_id = await as_operator(endpoints, user or getpass.getuser())
    event = archive_request(project.id, project.flow_id, reason, user_id=user_id)
    async with nats_client(endpoints) as nc:
        await publisher(nc).publish(event)
    out(f"archive requested for project {project.id}")
    return 0


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`."""
    endpoints = resolve(args.state_dir)
    if args.command == "request":
        return run(
            request(
                endpoints,
                args.description,
                args.user,
                print_line,
                as_json=args.json,
                follow_it=args.follow,
                interval=args.interval,
            )
        )
    if args.command == "answer":
        return run(answer(endpoints, args.project, args.text, args.user, print_line))
    return run(archive(endpoints, args.project, args.reason, print_line))
