"""login throttle: failed logins per (client, username) and per client, shared by replicas

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:15:00.000000

The throttle was a dict in each process: it forgot everything on restart, grew with every name
tried, and each replica allowed the full rate. Its buckets now live here (gaia.store.throttle),
so every replica on one database spends one budget. The table holds only counters that drain by
themselves: nothing is lost by dropping it on downgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client", "account", name=op.f("pk_login_throttle")),
    )
    op.create_index(
        op.f("ix_login_throttle_updated_at"), "login_throttle", ["updated_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_login_throttle_updated_at"), table_name="login_throttle")
    op.drop_table("login_throttle")
