"""projects.adopted_from: the repository an adopted project was imported from

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("adopted_from", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("projects", "adopted_from")
