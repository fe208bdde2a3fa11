"""API tokens: issued once, stored only as a SHA-256, checked on every request.

A token is `orch_` plus 32 random bytes (URL-safe base64): the prefix lets secret scanners and
people recognise a leaked one. The database holds the hash alone, so a copy of the database
cannot call the API. Tokens are named (one name per integration, so one can be revoked
without touching the others) and belong to a user, whose id `api:<user>` owns the projects
created with it.

A token has a role: `member` tokens act on their user's projects only, `admin` tokens also
reach the `/admin` routes and every user's projects. A token may expire; an expired, revoked
or blocked user's token is refused with the reason, so the caller knows whom to ask.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import ApiToken, User, UserRole, UserStatus

TOKEN_PREFIX = "orch_"  # noqa: S105 -- the public prefix that marks a token, not a secret
USER_PREFIX = "api:"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION = re.compile(r"^(\d{1,5})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TokenError(ValueError):
    """A token operation was refused; the message tells the operator what to do instead."""


class InvalidToken(PermissionError):
    """The request's credentials were missing, unknown or revoked; the message says which."""


@dataclass(frozen=True)
class Caller:
    """Who is calling the API: the token's name (for logs), the user it acts for, its role."""

    token_name: str
    user_id: str
    role: UserRole = UserRole.MEMBER

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN


@dataclass(frozen=True)
class IssuedToken:
    name: str
    user_id: str
    token: str = field(repr=False)
    role: UserRole = UserRole.MEMBER
    expires_at: datetime | None = None


@dataclass(frozen=True)
class TokenInfo:
    name: str
    user_id: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool
    role: str
    expires_at: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


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


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m` or `2w` as a timedelta; the message says the accepted shapes."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise TokenError(
            f"invalid duration {text!r}: give a positive number and a unit, "
            "e.g. 90m, 12h, 30d or 2w"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


async def issue_token(
    sessionmaker: async_sessionmaker[AsyncSession],
    name: str,
    user: str,
    *,
    role: UserRole = UserRole.MEMBER,
    expires_in: timedelta | None = None,
) -> IssuedToken:
    """Create a token named `name` for the user `api:<user>` (created if new).

    An admin token also makes its user an admin, so the user's role (shown by the admin
    routes) and the token's agree; a member token leaves an existing user's role alone.
    """
    _check_name(name, "token name")
    user_id = USER_PREFIX + _check_name(user, "user")
    token = generate_token()
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    async with sessionmaker() as session:
        insert = pg_insert(User).values(id=user_id, display_name=user, role=role)
        if role == UserRole.ADMIN:
            await session.execute(
                insert.on_conflict_do_update(index_elements=[User.id], set_={"role": role})
            )
        else:
            await session.execute(insert.on_conflict_do_nothing())
        session.add(
            ApiToken(
                name=name,
                token_hash=hash_token(token),
                user_id=user_id,
                role=role,
                expires_at=expires_at,
            )
        )
        try:
            await session.commit()
        except IntegrityError as exc:
            raise TokenError(
                f"a token named {name!r} already exists (revoked tokens keep their name): "
                "choose another name, or see `orchestrator tokens list`"
            ) from exc
    return IssuedToken(name=name, user_id=user_id, token=token, role=role, expires_at=expires_at)


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
    """The caller a bearer token stands for, recording when it was last used.

    The token's role is capped by its user's: an admin token whose user was demoted to
    member acts as a member, so demoting a person takes effect on their tokens at once.
    """
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
        now = datetime.now(UTC)
        if row.expires_at is not None and row.expires_at <= now:
            raise InvalidToken(
                f"API token {row.name!r} expired at {row.expires_at:%Y-%m-%d %H:%M} UTC: "
                "ask an operator for a new one (`orchestrator tokens create --expires-in`)"
            )
        user = await session.get(User, row.user_id)
        if user is None or user.status != UserStatus.ACTIVE:
            raise InvalidToken(
                f"the user {row.user_id} of API token {row.name!r} is blocked: "
                "ask an admin to unblock them"
            )
        row.last_used_at = now
        role = (
            UserRole.ADMIN
            if row.role == UserRole.ADMIN and user.role == UserRole.ADMIN
            else UserRole.MEMBER
        )
        caller = Caller(token_name=row.name, user_id=row.user_id, role=role)
        await session.commit()
    return caller


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        name=row.name,
        user_id=row.user_id,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked,
        role=row.role,
        expires_at=row.expires_at,
    )
