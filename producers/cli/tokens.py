"""`orchestrator tokens create | list | revoke`: credentials for the HTTP API.

A token is printed once, when it is created; only its SHA-256 is stored, so a lost token is
revoked and replaced, never recovered. The command functions take a sessionmaker and an
output function, so tests call them against a real PostgreSQL; the arguments are in
`producers.cli.parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import UserRole
from producers.api.tokens import (
    TokenError,
    TokenInfo,
    issue_token,
    list_tokens,
    parse_duration,
    revoke_token,
)
from producers.cli.database import database
from producers.cli.endpoints import Endpoints, resolve
from producers.cli.json_output import document
from producers.cli.tables import table_lines

Out = Callable[[str], None]

_TABLE_HEADER = ("NAME", "USER", "ROLE", "CREATED", "LAST USED", "EXPIRES", "STATUS")


async def create(
    sessionmaker: async_sessionmaker[AsyncSession],
    out: Out,
    *,
    name: str,
    user: str | None = None,
    role: UserRole = UserRole.MEMBER,
    expires_in: timedelta | None = None,
) -> int:
    """Issue a token for `api:<user>` (the user defaults to the token's name) and print it once."""
    issued = await issue_token(sessionmaker, name, user or name, role=role, expires_in=expires_in)
    expiry = f"expires {_when(issued.expires_at)} UTC" if issued.expires_at else "never expires"
    out(issued.token)
    out(
        f"{issued.role} token {issued.name} for {issued.user_id} ({expiry}): shown only now, "
        "store it in a secret manager; call the API with `Authorization: Bearer <token>`"
    )
    return 0


async def show(
    sessionmaker: async_sessionmaker[AsyncSession], out: Out, *, as_json: bool = False
) -> int:
    """Print every token (never the token itself: it is not stored)."""
    tokens = await list_tokens(sessionmaker)
    if as_json:
        out(document([_token_object(t) for t in tokens]))
        return 0
    if not tokens:
        out("no API tokens: create one with `orchestrator tokens create NAME --user USER`")
        return 0
    rows = [
        (
            t.name,
            t.user_id,
            t.role,
            _when(t.created_at),
            _when(t.last_used_at),
            _when(t.expires_at),
            _status(t),
        )
        for t in tokens
    ]
    for line in table_lines(_TABLE_HEADER, rows):
        out(line)
    return 0


async def revoke(sessionmaker: async_sessionmaker[AsyncSession], out: Out, *, name: str) -> int:
    """Revoke a token: the API refuses it from its next request on."""
    info = await revoke_token(sessionmaker, name)
    out(f"revoked token {info.name} ({info.user_id}); its next request gets 401")
    return 0


def _status(t: TokenInfo) -> str:
    return "revoked" if t.revoked else "expired" if t.expired else "active"


def _token_object(t: TokenInfo) -> dict[str, object]:
    return {
        "name": t.name,
        "user": t.user_id,
        "role": t.role,
        "created_at": t.created_at,
        "last_used_at": t.last_used_at,
        "expires_at": t.expires_at,
        "status": _status(t),
    }


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


def handle(args: argparse.Namespace) -> int:
    """Entry point from `producers.cli.main.dispatch`: resolve endpoints, run, report errors."""
    try:
        return asyncio.run(run(args, resolve(args.state_dir)))
    except TokenError as exc:
        print(f"orchestrator tokens {args.tokens_command}: {exc}", file=sys.stderr)
        return 1


async def run(args: argparse.Namespace, endpoints: Endpoints) -> int:
    """Open the database and run one action."""
    out: Out = print
    async with database(endpoints) as sessionmaker:
        if args.tokens_command == "create":
            expires_in = parse_duration(args.expires_in) if args.expires_in else None
            return await create(
                sessionmaker,
                out,
                name=args.name,
                user=args.user,
                role=UserRole(args.role),
                expires_in=expires_in,
            )
        if args.tokens_command == "revoke":
            return await revoke(sessionmaker, out, name=args.name)
        return await show(sessionmaker, out, as_json=args.json)
