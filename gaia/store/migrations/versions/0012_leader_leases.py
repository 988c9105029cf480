"""leader leases: one leader per loop group among Gaia's replicas

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 13:30:00.000000

Issue 21 (HA). A row per loop group (``controllers``, ``monitoring``): which replica leads it,
until when, and its epoch, which grows at every change of leader. A leader's writes are fenced
by the epoch in the same transaction (``gaia.store.leases``). Dropping the table on downgrade
makes every replica lead every loop again, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_leases")),
    )


def downgrade() -> None:
    op.drop_table("leader_leases")
