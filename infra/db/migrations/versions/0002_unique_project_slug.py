"""one project per slug (it names the repository and the deploy directory)

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_unique_constraint(op.f("uq_projects_slug"), "projects", ["slug"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_projects_slug"), "projects", type_="unique")
