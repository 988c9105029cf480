"""backups: the platform's backups, and how Gaia reaches a cluster's etcd

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 17:40:00.000000

Issue 21 (disaster recovery). ``backups`` lists the backups the ``controllers`` leader takes
(on its schedule or when asked through the API) with their state and archive; each archive
holds its own manifest, so the table is a listing, not the source of truth.
``clusters.etcd_encrypted`` is the Fernet ciphertext of the cluster's etcd endpoints and client
certificates: a cluster with it gets an etcd snapshot in every backup.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("etcd_encrypted", sa.LargeBinary(), nullable=True))
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("parts", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backups")),
    )


def downgrade() -> None:
    op.drop_table("backups")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("etcd_encrypted")
