"""The progress-message table, through core statements in the step's own transaction.

Saving in the handler's session means the remembered message id commits together with the
inbox row: a notification is either fully handled (sent and remembered) or redelivered.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from consumers.notifier.ports import ProgressMessage
from infra.db.models import NotifierProgressMessage

_ROW = NotifierProgressMessage


class SqlProgressStore:
    """`notifier_progress_messages`: one row per project, upserted on every update."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, project_id: uuid.UUID) -> ProgressMessage | None:
        # A transaction-scoped advisory lock serializes one project's progress updates even
        # before its row exists, so two concurrent first updates cannot both send a message.
        await self._session.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended(str(project_id), 0)))
        )
        row = (
            await self._session.execute(
                select(_ROW.chat_id, _ROW.message_id, _ROW.updated_at).where(
                    _ROW.project_id == project_id
                )
            )
        ).one_or_none()
        if row is None:
            return None
        return ProgressMessage(row.chat_id, row.message_id, row.updated_at)

    async def save(self, project_id: uuid.UUID, message: ProgressMessage) -> None:
        values = {
            "chat_id": message.chat_id,
            "message_id": message.message_id,
            "updated_at": message.updated_at,
        }
        await self._session.execute(
            insert(_ROW)
            .values(project_id=project_id, **values)
            .on_conflict_do_update(index_elements=[_ROW.project_id], set_=values)
        )
