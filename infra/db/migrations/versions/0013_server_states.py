"""server_states: a lifecycle (new … retired) replaces the `enabled` flag

Enabled servers were taking projects, so they become `ready`; disabled ones took none but kept
their projects, which is what `draining` means.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = "('new', 'provisioning', 'ready', 'unreachable', 'draining', 'retired')"


def upgrade() -> None:
    op.add_column(
        "servers", sa.Column("state", sa.String(20), nullable=False, server_default="new")
    )
    op.add_column(
        "servers", sa.Column("state_reason", sa.Text(), nullable=False, server_default="")
    )
    op.add_column(
        "servers",
        sa.Column(
            "state_changed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    op.execute("UPDATE servers SET state = CASE WHEN enabled THEN 'ready' ELSE 'draining' END")
    op.create_check_constraint("ck_servers_state", "servers", f"state IN {_STATES}")
    op.drop_column("servers", "enabled")


def downgrade() -> None:
    op.add_column(
        "servers", sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true())
    )
    op.execute("UPDATE servers SET enabled = (state = 'ready')")
    op.drop_constraint("ck_servers_state", "servers", type_="check")
    op.drop_column("servers", "state_changed_at")
    op.drop_column("servers", "state_reason")
    op.drop_column("servers", "state")
