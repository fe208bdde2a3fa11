"""The bot's "send me the value of NAME" state, kept in PostgreSQL.

After `/secret NAME` the user's next message is the value. The question lives in the database
(`pending_secrets`, one open question per user) so a bot restart between the question and the
answer loses nothing, and it expires after a few minutes so a message sent much later is never
mistaken for a secret. The value itself never touches this table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.models import PendingSecret


@dataclass(frozen=True)
class AwaitedSecret:
    project_id: uuid.UUID
    name: str


class PendingSecrets:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: timedelta) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl

    @property
    def minutes(self) -> int:
        return max(1, int(self._ttl.total_seconds() // 60))

    async def ask(self, user_id: str, project_id: uuid.UUID, name: str) -> None:
        """Wait for `name` from `user_id`; a newer question replaces an older one."""
        expires_at = datetime.now(UTC) + self._ttl
        statement = insert(PendingSecret).values(
            user_id=user_id, project_id=project_id, name=name, expires_at=expires_at
        )
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[PendingSecret.user_id],
                    set_={"project_id": project_id, "name": name, "expires_at": expires_at},
                )
            )

    async def take(self, user_id: str) -> AwaitedSecret | None:
        """The open question of `user_id`, removed; None if there is none or it expired."""
        async with self._sessionmaker() as session, session.begin():
            row = (
                await session.execute(
                    delete(PendingSecret)
                    .where(PendingSecret.user_id == user_id)
                    .returning(
                        PendingSecret.project_id, PendingSecret.name, PendingSecret.expires_at
                    )
                )
            ).first()
        if row is None or row.expires_at <= datetime.now(UTC):
            return None
        return AwaitedSecret(project_id=row.project_id, name=row.name)
