"""Whose a project is, for the steps whose events do not say (the analyst, the engineer).

Their events carry the project id only; memory reads are scoped by user (`infra.memory.Scope`),
so these steps look the owner up in the project's row, in the message's own session.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Project


async def project_owner(session: AsyncSession, project_id: uuid.UUID) -> str | None:
    """The project's user id; None for a project the database does not know."""
    owner = await session.scalar(select(Project.user_id).where(Project.id == project_id))
    return str(owner) if owner is not None else None
