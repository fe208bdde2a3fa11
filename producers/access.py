"""Who is who, and who may do what: one module for every door (bot, API, CLI).

People are rows of `users` with a role (admin, member) and a status (active, blocked). Only an
active person reaches the bus. Admins come from configuration (the bot promotes its configured
admin ids at start) or from another admin; members are added by an admin directly or through
a one-time invite code. Members act on their own projects only; admins on everyone's, and they
also see the platform (servers, incidents, dead letters, lag).

Every change names the person who made it (`added_by`), and every change is checked here with
`require_admin`, so the bot, the API and the CLI cannot drift apart on the rules. The host CLI
acts as `operator(<login>)`: whoever can run it already holds the database credentials.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import Project, User, UserInvite, UserRole, UserStatus
from producers.read_model import find_project

#: `added_by` of admins that come from configuration rather than from another person.
FROM_CONFIG = "config"

#: Telegram's `/start` payload allows 64 characters of [A-Za-z0-9_-]; 22 of them are 128 bits.
_INVITE_BYTES = 16
_USER_ID = re.compile(r"^(telegram|api|cli):[A-Za-z0-9_.@-]{1,180}$")


class AccessError(Exception):
    """A refused or impossible access change; the message tells the person what to do."""


class NotAllowed(AccessError):
    pass


class UnknownUser(AccessError):
    pass


class InvalidInvite(AccessError):
    pass


@dataclass(frozen=True)
class Person:
    """A user as the doors see them."""

    id: str
    role: str
    status: str
    added_by: str | None = None
    display_name: str = ""
    llm_budget_usd_month: Decimal | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == UserRole.ADMIN and self.is_active

    @property
    def is_active(self) -> bool:
        return self.status == UserStatus.ACTIVE


def operator(login: str) -> Person:
    """The person at the host's CLI: an admin by virtue of holding the platform's credentials."""
    return Person(id=f"cli:{login}", role=UserRole.ADMIN, status=UserStatus.ACTIVE)


def telegram_user(telegram_id: int) -> str:
    return f"telegram:{telegram_id}"


def normalise_user_id(ref: str) -> str:
    """`12345` means a Telegram user; otherwise a full id such as `api:ci` or `cli:alice`."""
    ref = ref.strip()
    if ref.isdigit():
        return telegram_user(int(ref))
    if not _USER_ID.fullmatch(ref):
        raise AccessError(
            f"{ref!r} is not a user id: give a Telegram id (digits) or telegram:<id>, "
            "api:<name> or cli:<login>"
        )
    return ref


def may_act_on(person: Person, owner: str) -> bool:
    """Members act on their own projects only; admins on everyone's."""
    return person.is_active and (person.is_admin or person.id == owner)


def project_scope(person: Person) -> str | None:
    """The owner to filter project queries by: None (everyone's) for an admin."""
    return None if person.is_admin else person.id


def require_admin(person: Person, action: str) -> None:
    if not person.is_admin:
        raise NotAllowed(f"only an admin may {action}; ask one of this bot's admins")


def hash_invite(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def _person(user: User) -> Person:
    return Person(
        id=user.id,
        role=user.role,
        status=user.status,
        added_by=user.added_by,
        display_name=user.display_name,
        llm_budget_usd_month=user.llm_budget_usd_month,
    )


class Directory:
    """The user directory over PostgreSQL; one short transaction per call."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def person(self, user_id: str) -> Person | None:
        async with self._sessionmaker() as session:
            user = await session.get(User, user_id)
            return _person(user) if user is not None else None

    async def people(self) -> list[Person]:
        async with self._sessionmaker() as session:
            users = await session.scalars(select(User).order_by(User.role, User.id))
            return [_person(u) for u in users]

    async def seed_admins(self, user_ids: Iterable[str]) -> None:
        """Create or promote the configured admins; a configured admin is never left blocked."""
        async with self._sessionmaker() as session, session.begin():
            for user_id in user_ids:
                user = await session.get(User, user_id, with_for_update=True)
                if user is None:
                    session.add(
                        User(
                            id=user_id,
                            role=UserRole.ADMIN,
                            status=UserStatus.ACTIVE,
                            added_by=FROM_CONFIG,
                        )
                    )
                else:
                    user.role = UserRole.ADMIN
                    user.status = UserStatus.ACTIVE

    async def allow(
        self,
        by: Person,
        user_id: str,
        *,
        role: UserRole = UserRole.MEMBER,
        display_name: str = "",
        chat_id: int | None = None,
    ) -> Person:
        """Let `user_id` in (create, or re-activate a blocked one) with `role`."""
        require_admin(by, "add people")
        if user_id == by.id and role != UserRole.ADMIN:
            raise NotAllowed("you cannot demote yourself; ask another admin")
        async with self._sessionmaker() as session, session.begin():
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                user = User(id=user_id, display_name=display_name, chat_id=chat_id)
                session.add(user)
            user.role = role
            user.status = UserStatus.ACTIVE
            user.added_by = by.id
            await session.flush()
            return _person(user)

    async def set_status(self, by: Person, user_id: str, status: UserStatus) -> Person:
        """Block or unblock someone. Nobody blocks themselves (that would lock the door)."""
        require_admin(by, f"set someone {status}")
        if user_id == by.id and status == UserStatus.BLOCKED:
            raise NotAllowed("you cannot block yourself; ask another admin")
        return await self._change(user_id, status=status)

    async def set_role(self, by: Person, user_id: str, role: UserRole) -> Person:
        require_admin(by, "change roles")
        if user_id == by.id and role != UserRole.ADMIN:
            raise NotAllowed("you cannot demote yourself; ask another admin")
        return await self._change(user_id, role=role)

    async def set_user_budget(self, by: Person, user_id: str, usd: Decimal | None) -> Person:
        """A monthly LLM budget for one person (None: the configured default applies)."""
        require_admin(by, "set budgets")
        return await self._change(user_id, budget=usd, set_budget=True)

    async def set_project_budget(self, by: Person, ref: str, usd: Decimal | None) -> uuid.UUID:
        """An LLM budget for one project (None: the configured default applies)."""
        require_admin(by, "set budgets")
        async with self._sessionmaker() as session, session.begin():
            project = await find_project(session, ref)
            await session.execute(
                update(Project).where(Project.id == project.id).values(llm_budget_usd=usd)
            )
            return project.id

    async def create_invite(
        self, by: Person, *, role: UserRole = UserRole.MEMBER, ttl: timedelta
    ) -> str:
        """A one-time invite code; only its SHA-256 is stored, so the code is shown once."""
        require_admin(by, "invite people")
        code = secrets.token_urlsafe(_INVITE_BYTES)
        async with self._sessionmaker() as session, session.begin():
            session.add(
                UserInvite(
                    code_hash=hash_invite(code),
                    role=role,
                    created_by=by.id,
                    expires_at=datetime.now(UTC) + ttl,
                )
            )
        return code

    async def redeem_invite(
        self, code: str, user_id: str, *, display_name: str = "", chat_id: int | None = None
    ) -> Person:
        """Use an invite once: the first redeemer gets in, every later try is refused."""
        now = datetime.now(UTC)
        async with self._sessionmaker() as session, session.begin():
            invite = await session.get(UserInvite, hash_invite(code), with_for_update=True)
            if invite is None or invite.used_by is not None or invite.expires_at <= now:
                raise InvalidInvite(
                    "this invite link is unknown, used or expired: ask an admin for a new one"
                )
            user = await session.get(User, user_id, with_for_update=True)
            if user is not None and user.status == UserStatus.BLOCKED:
                raise NotAllowed("your access is blocked; an invite does not lift that")
            if user is None:
                user = User(id=user_id, display_name=display_name, chat_id=chat_id)
                session.add(user)
                user.role = invite.role
                user.status = UserStatus.ACTIVE
                user.added_by = invite.created_by
            invite.used_by = user_id
            invite.used_at = now
            await session.flush()
            return _person(user)

    async def _change(
        self,
        user_id: str,
        *,
        status: UserStatus | None = None,
        role: UserRole | None = None,
        budget: Decimal | None = None,
        set_budget: bool = False,
    ) -> Person:
        async with self._sessionmaker() as session, session.begin():
            user = await session.get(User, user_id, with_for_update=True)
            if user is None:
                raise UnknownUser(
                    f"no user {user_id}: add them first (`/allow <id>` in the bot or "
                    "`orchestrator users add <id>`)"
                )
            if status is not None:
                user.status = status
            if role is not None:
                user.role = role
            if set_budget:
                user.llm_budget_usd_month = budget
            await session.flush()
            return _person(user)
