"""server_deploy_slots: how many deploys one server takes at once (NULL: no limit of its own)

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("servers", sa.Column("deploy_slots", sa.Integer(), nullable=True))
    op.create_check_constraint(
        "ck_servers_deploy_slots", "servers", "deploy_slots IS NULL OR deploy_slots >= 1"
    )


def downgrade() -> None:
    op.drop_constraint("ck_servers_deploy_slots", "servers", type_="check")
    op.drop_column("servers", "deploy_slots")
