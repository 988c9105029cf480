"""cluster key salt: a cluster registered again is a new cluster to every key derived from it

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 00:40:00.000000

The P2P agent and node tokens, the peers' ticket keys and the CNI's IPAM node token are derived
from the platform secret and the cluster's id and name. SQLite (without ``AUTOINCREMENT``)
gives a new row the highest id plus one, so a cluster deleted while it had the highest id and
registered again under the same name got the same id back, and the old cluster's agents'
tokens worked against the new one. A random salt per cluster, in every derivation, ends that
for clusters registered from now on (PostgreSQL's sequences never reuse an id, but a restored
backup could, so both get it). Rows that exist keep an empty salt, which derives exactly what
they derived before: agents keep working across the upgrade. Rebuilding the table with
``AUTOINCREMENT`` instead would, on SQLite, cascade-delete every row that references a cluster.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(
            sa.Column("key_salt", sa.String(length=32), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("key_salt")
