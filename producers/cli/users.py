"""`orchestrator users ...`: who may use the system, with which role and budget.

The host operator is an admin by construction (they hold the database credentials), so the
commands act as `producers.access.operator(<login>)` and go through the same rules as the bot's
`/allow`, `/block` and `/invite`. A user is named by a Telegram id (digits) or a full id such as
`telegram:123`, `api:ci` or `cli:alice`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import UserRole, UserStatus
from producers.access import AccessError, Directory, Person, normalise_user_id, operator
from producers.cli.database import database
from producers.cli.endpoints import Endpoints, resolve
from producers.cli.json_output import document
from producers.cli.tables import table_lines
from producers.read_model import ProjectNotFound

Out = Callable[[str], None]


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`: resolve endpoints, run, report errors."""
    try:
        return asyncio.run(run(args, resolve(args.state_dir), print))
    except (AccessError, ProjectNotFound) as exc:
        print(f"orchestrator users {args.users_command}: {exc}", file=sys.stderr)
        return 1


async def run(args: argparse.Namespace, endpoints: Endpoints, out: Out) -> int:
    async with database(endpoints) as sessionmaker:
        return await act(args, sessionmaker, operator(getpass.getuser()), out)


async def act(
    args: argparse.Namespace,
    sessionmaker: async_sessionmaker[AsyncSession],
    by: Person,
    out: Out,
) -> int:
    """Run one action as `by`."""
    directory = Directory(sessionmaker)
    command = args.users_command
    if command == "list":
        return _show(await directory.people(), args.json, out)
    if command == "invite":
        code = await directory.create_invite(
            by, role=UserRole(args.role), ttl=timedelta(hours=args.hours)
        )
        out(code)
        if args.bot:
            out(f"https://t.me/{args.bot}?start={code}")
        out(f"one-time {args.role} invite, valid for {args.hours} hours; shown only now")
        return 0
    if command == "set-project-budget":
        project_id = await directory.set_project_budget(by, args.project, args.usd)
        out(f"project {project_id}: LLM budget {_usd(args.usd)}")
        return 0
    user_id = normalise_user_id(args.user)
    if command == "add":
        person = await directory.allow(by, user_id, role=UserRole(args.role))
    elif command == "block":
        person = await directory.set_status(by, user_id, UserStatus.BLOCKED)
    elif command == "unblock":
        person = await directory.set_status(by, user_id, UserStatus.ACTIVE)
    elif command == "set-role":
        person = await directory.set_role(by, user_id, UserRole(args.role))
    elif command == "set-budget":
        person = await directory.set_user_budget(by, user_id, args.usd)
        out(f"{person.id}: monthly LLM budget {_usd(person.llm_budget_usd_month)}")
        return 0
    else:
        raise AssertionError(f"unhandled users command {command}")
    out(f"{person.id}: {person.role}, {person.status}")
    return 0


def _show(people: list[Person], as_json: bool, out: Out) -> int:
    if as_json:
        out(
            document(
                [
                    {
                        "id": p.id,
                        "role": p.role,
                        "status": p.status,
                        "added_by": p.added_by,
                        "display_name": p.display_name,
                        "llm_budget_usd_month": p.llm_budget_usd_month,
                    }
                    for p in people
                ]
            )
        )
        return 0
    if not people:
        out("no users yet: add one with `orchestrator users add <telegram id> --role admin`")
        return 0
    header = ("USER", "ROLE", "STATUS", "ADDED BY", "BUDGET/MONTH")
    rows = [
        (p.id, p.role, p.status, p.added_by or "-", _usd(p.llm_budget_usd_month)) for p in people
    ]
    for line in table_lines(header, rows, right=(4,)):
        out(line)
    return 0


def _usd(value: Decimal | None) -> str:
    return "default" if value is None else f"${value:.2f}"
