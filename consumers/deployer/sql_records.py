"""`SqlDeploymentRecords`: the deployments ledger, written in the step's transaction.

The row is upserted on its natural key (project_id, commit), so a redelivered deploy, or a
later deploy of the same commit, updates the one row instead of failing on the constraint.
"""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db.models import Deployment, utcnow

from .ports import DeploymentRecord


class SqlDeploymentRecords:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def save(self, record: DeploymentRecord) -> None:
        values = {
            "project_id": record.project_id,
            "commit": record.commit,
            "release": record.release,
            "server_name": record.server_name,
            "status": record.status,
            "url": record.url,
            "error": record.error,
        }
        statement = insert(Deployment).values(**values)
        await self._session.execute(
            statement.on_conflict_do_update(
                constraint="uq_deployments_project_commit",
                set_={
                    "release": statement.excluded.release,
                    "server_name": statement.excluded.server_name,
                    "status": statement.excluded.status,
                    "url": statement.excluded.url,
                    "error": statement.excluded.error,
                    "updated_at": utcnow(),
                },
            )
        )
