"""API tokens: issued once, stored only as a SHA-256, checked on every request.

A token is `orch_` plus 32 random bytes (URL-safe base64): the prefix lets secret scanners and
people recognise a leaked one. The database holds the hash alone, so a copy of the database
cannot call the API. Tokens are named (one name per integration, so one can be revoked
without touching the others) and belong to a user, whose id `api:<user>` owns the projects
created with it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import ApiToken, User

TOKEN_PREFIX = "orch_"  # noqa: S105 -- the public prefix that marks a token, not a secret
USER_PREFIX = "api:"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class TokenError(ValueError):
    """A token operation was refused; the message tells the operator what to do instead."""


class InvalidToken(PermissionError):
    """The request's credentials were missing, unknown or revoked; the message says which."""


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: the token's name (for logs) and the user it acts for."""

    token_name: str
    user_id: str


@dataclass(frozen=True)
class IssuedToken:
    name: str
    user_id: str
    token: str = field(repr=False)


@dataclass(frozen=True)
class TokenInfo:
    name: str
    user_id: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Hex SHA-256: tokens carry 256 random bits, so a plain hash is enough (no salt, no KDF)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise TokenError(
            f"invalid {what} {value!r}: use letters, digits, '.', '_' or '-' "
            "(at most 100, starting with a letter or digit)"
        )
    return value


async def issue_token(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, user: str
) -> IssuedToken:
    """Create a token named `name` for the user `api:<user>` (created if new)."""
    _check_name(name, "token name")
    user_id = USER_PREFIX + _check_name(user, "user")
    token = generate_token()
    async with sessionmaker() as session:
        await session.execute(
            pg_insert(User).values(id=user_id, display_name=user).on_conflict_do_nothing()
        )
        session.add(ApiToken(name=name, token_hash=hash_token(token), user_id=user_id))
        try:
            await session.commit()
        except IntegrityError as exc:
            raise TokenError(
                f"a token named {name!r} already exists (revoked tokens keep their name): "
                "choose another name, or see `orchestrator tokens list`"
            ) from exc
    return IssuedToken(name=name, user_id=user_id, token=token)


async def list_tokens(sessionmaker: async_sessionmaker[AsyncSession]) -> list[TokenInfo]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(ApiToken).order_by(ApiToken.name))
        return [_info(row) for row in rows]


async def revoke_token(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> TokenInfo:
    """Revoke a token at once: its next request gets 401. Revoking twice is harmless."""
    async with sessionmaker() as session:
        row = await session.scalar(
            update(ApiToken).where(ApiToken.name == name).values(revoked=True).returning(ApiToken)
        )
        if row is None:
            raise TokenError(f"no token named {name!r}; see `orchestrator tokens list`")
        info = _info(row)
        await session.commit()
    return info


async def authenticate(sessionmaker: async_sessionmaker[AsyncSession], token: str) -> Caller:
    """The caller a bearer token stands for, recording when it was last used."""
    if not token.startswith(TOKEN_PREFIX):
        raise InvalidToken(
            f"this is not an orchestrator API token (they start with {TOKEN_PREFIX!r}); "
            "an operator issues one with `orchestrator tokens create NAME`"
        )
    async with sessionmaker() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if row is None:
            raise InvalidToken(
                "unknown API token: check it was copied whole, or ask an operator for a new one"
            )
        if row.revoked:
            raise InvalidToken(
                f"API token {row.name!r} was revoked: ask an operator for a new one "
                "(`orchestrator tokens create`)"
            )
        row.last_used_at = datetime.now(UTC)
        caller = Caller(token_name=row.name, user_id=row.user_id)
        await session.commit()
    return caller


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        name=row.name,
        user_id=row.user_id,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked,
    )
