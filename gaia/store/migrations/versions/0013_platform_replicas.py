"""platform replicas: each running Gaia replica and its loops, for the components page

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 17:40:00.000000

Issue 21 (platform components). Every replica writes its row at each heartbeat (version, host,
pid, address, schema revision, each loop's last pass and failures) and takes the loop restarts
an administrator asked of it. Rows of replicas gone for a day are pruned. Dropping the table on
downgrade loses only that view.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "platform_replicas",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=255), nullable=False),
        sa.Column("schema_revision", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("loops", sa.JSON(), nullable=False),
        sa.Column("restart_loops", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_platform_replicas")),
    )
    op.create_index(
        op.f("ix_platform_replicas_seen_at"), "platform_replicas", ["seen_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_platform_replicas_seen_at"), table_name="platform_replicas")
    op.drop_table("platform_replicas")
