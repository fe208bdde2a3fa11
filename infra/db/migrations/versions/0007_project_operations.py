"""coordinator: the live and previous releases' commits, and the operation under way

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("live_commit", sa.String(64), nullable=True))
    op.add_column("projects", sa.Column("previous_commit", sa.String(64), nullable=True))
    op.add_column("projects", sa.Column("operation", sa.String(32), nullable=True))
    op.add_column(
        "projects", sa.Column("operation_started_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("projects", "operation_started_at")
    op.drop_column("projects", "operation")
    op.drop_column("projects", "previous_commit")
    op.drop_column("projects", "live_commit")
