"""access control: user roles and status, invites, token roles and expiry, quota overrides

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users", sa.Column("role", sa.String(length=16), server_default="member", nullable=False)
    )
    op.add_column(
        "users", sa.Column("status", sa.String(length=16), server_default="active", nullable=False)
    )
    op.add_column("users", sa.Column("added_by", sa.String(length=200), nullable=True))
    op.add_column(
        "users",
        sa.Column("llm_budget_usd_month", sa.Numeric(precision=12, scale=6), nullable=True),
    )
    op.add_column("users", sa.Column("projects_per_day", sa.Integer(), nullable=True))
    op.add_column("users", sa.Column("builds_at_once", sa.Integer(), nullable=True))
    op.create_table(
        "user_invites",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_by", sa.String(length=200), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_user_invites")),
    )
    op.add_column(
        "api_tokens",
        sa.Column("role", sa.String(length=16), server_default="member", nullable=False),
    )
    op.add_column(
        "api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "projects",
        sa.Column("llm_budget_usd", sa.Numeric(precision=12, scale=6), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("projects", "llm_budget_usd")
    op.drop_column("api_tokens", "expires_at")
    op.drop_column("api_tokens", "role")
    op.drop_table("user_invites")
    for column in (
        "builds_at_once",
        "projects_per_day",
        "llm_budget_usd_month",
        "added_by",
        "status",
        "role",
    ):
        op.drop_column("users", column)
