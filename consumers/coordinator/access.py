"""Who may act on a project, checked by the coordinator itself and not only at the doors.

The bot, the API and the CLI refuse strangers before anything reaches the bus, but an event on
the bus proves nothing about who sent it: anything that can publish `intents.*` could claim to
be anyone's answer or archive request. So the coordinator applies an intent only when its
acting user exists, is active, and owns the project or is an admin. An intent without an acting
user (an old producer, a forged message) is refused, never treated as authorised.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project, User, UserRole, UserStatus


@dataclass(frozen=True)
class Refusal:
    """Why an intent was not applied: recorded on the timeline and told to the actor."""

    reason: str
    #: The actor to tell, when they are a known user (strangers are not messaged).
    actor: User | None


async def known_actor(session: AsyncSession, user_id: str | None) -> User | None:
    return None if user_id is None else await session.get(User, user_id)


def check_active(actor: User | None, user_id: str | None) -> Refusal | None:
    """A refusal unless `user_id` names an active user."""
    if user_id is None:
        return Refusal("refused: the request names no acting user", None)
    if actor is None:
        return Refusal(f"refused: {user_id} is not a user of this orchestrator", None)
    if actor.status != UserStatus.ACTIVE:
        return Refusal(f"refused: {user_id} is {actor.status}; an admin can restore access", actor)
    return None


async def check_may_act(
    session: AsyncSession, user_id: str | None, project: Project, what: str
) -> Refusal | None:
    """A refusal unless `user_id` is active and owns `project` or is an admin."""
    actor = await known_actor(session, user_id)
    refusal = check_active(actor, user_id)
    if refusal is not None or actor is None:
        return refusal
    if actor.id != project.user_id and actor.role != UserRole.ADMIN:
        return Refusal(
            f"refused: {actor.id} may not {what} project {project.id}; only its owner or an "
            "admin may",
            actor,
        )
    return None
