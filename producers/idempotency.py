"""Idempotency keys: a client that sends a request again gets the same answer, never a second act.

An HTTP client that lost the answer to `POST /projects` (a timeout, a dropped connection, a 503
while the bus was busy) sends it again with the same `Idempotency-Key`. The ids of the intent it
publishes (event id, project id, flow id) are derived from the caller, the operation and the
key, so the retry publishes the very same event: the stream's duplicate window drops it within
two minutes, the coordinator's inbox after that, and the answer names the same project. The
other intents the API publishes (an answer, a change, an archive, a redeploy, restart, rollback
or retry) take a key the same way: the retry publishes the same event id, so the operation runs
once, and it is answered 202 as before even if the first one has since changed the project's
state (a retried rollback is not refused because the rollback it retries is under way).

A key is remembered for a day with a fingerprint of its request. A retry of the same request
skips the daily quota (it was counted the first time) and is answered as a replay; the same key
for a different request is refused, since a key stands for one request.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.envelope import Event
from infra.db.models import IdempotencyKey

#: Fixed: the derived ids of a key must be the same in every process and every release.
NAMESPACE = uuid.UUID("8f8e5f06-ca33-4d0e-bc7b-d28a5650219f")
#: How long a key is remembered (the window within which a retry is recognised).
RETENTION = timedelta(hours=24)
#: What a key may be: up to 200 printable ASCII characters without spaces (a UUID fits).
PATTERN = r"^[!-~]{1,200}$"

E = TypeVar("E", bound=Event)


class IdempotencyKeyReused(ValueError):
    """The key was already used, within the last day, for a different request."""


@dataclass(frozen=True)
class Keyed:
    """A request under an idempotency key: its fingerprint and the ids derived from the key."""

    user_id: str
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def of(cls, user_id: str, key: str, operation: str, *arguments: str) -> Keyed:
        digest = hashlib.sha256("\0".join((operation, *arguments)).encode()).hexdigest()
        return cls(user_id, key, operation, digest)

    def derive(self, part: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, "\0".join((self.user_id, self.operation, self.key, part)))

    def apply(self, event: E) -> E:
        """A new project's intent with its event id, flow id and project id derived."""
        update: dict[str, uuid.UUID] = {
            "event_id": self.derive("event"),
            "correlation_id": self.derive("flow"),
        }
        if "project_id" in type(event).model_fields:
            update["project_id"] = self.derive("project")
        return event.model_copy(update=update)

    def apply_event_id(self, event: E) -> E:
        """An intent about an existing project with its event id derived (the rest is the
        project's: its id and flow)."""
        return event.model_copy(update={"event_id": self.derive("event")})


async def remember(session: AsyncSession, keyed: Keyed, *, now: datetime | None = None) -> bool:
    """Record the key: True on its first use, False for a retry of the same request.

    Raises `IdempotencyKeyReused` when the key was used for a different request. Two requests
    racing with one key both see the same row (the second insert waits for the first).
    """
    now = now or datetime.now(UTC)
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.user_id == keyed.user_id, IdempotencyKey.created_at < now - RETENTION
        )
    )
    inserted = await session.scalar(
        pg_insert(IdempotencyKey)
        .values(user_id=keyed.user_id, key=keyed.key, fingerprint=keyed.fingerprint, created_at=now)
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(IdempotencyKey.key)
    )
    if inserted is not None:
        return True
    stored = await session.scalar(
        select(IdempotencyKey.fingerprint).where(
            IdempotencyKey.user_id == keyed.user_id, IdempotencyKey.key == keyed.key
        )
    )
    if stored != keyed.fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used for a different request in the last 24 "
            "hours; send a new key for a new request (the same key only to retry the same one)"
        )
    return False
