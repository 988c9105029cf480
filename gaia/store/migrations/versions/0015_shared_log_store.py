"""shared log store: container and platform log lines in the platform database (PostgreSQL)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 20:30:00.000000

Issue 21 (several replicas): with PostgreSQL every replica reads and writes the same log lines
(``gaia.monitor.logs.postgres``), so a follower's log API shows what the monitoring leader
collected. On SQLite the tables are created too (one schema for both) and stay empty: the
single replica keeps its lines in ``<data_dir>/logs.db``. Downgrading drops the lines, which
are disposable.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_groups",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("cluster", sa.String(length=255), nullable=False),
        sa.Column("namespace", sa.String(length=255), nullable=False),
        sa.Column("app", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_groups")),
        sa.UniqueConstraint("kind", "cluster", "namespace", "app", name=op.f("uq_log_groups_kind")),
    )
    op.create_table(
        "log_sources",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("grp", sa.BigInteger(), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("lines", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grp"],
            ["log_groups.id"],
            name=op.f("fk_log_sources_grp_log_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_sources")),
        sa.UniqueConstraint("grp", "instance", name=op.f("uq_log_sources_grp")),
    )
    op.create_table(
        "log_lines",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("grp", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("logger", sa.String(length=255), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_lines")),
    )
    op.create_index("ix_log_lines_source_at", "log_lines", ["source", "at", "id"], unique=False)
    op.create_index("ix_log_lines_grp_at", "log_lines", ["grp", "at", "id"], unique=False)
    op.create_index("ix_log_lines_at", "log_lines", ["at"], unique=False, postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_log_lines_at", table_name="log_lines")
    op.drop_index("ix_log_lines_grp_at", table_name="log_lines")
    op.drop_index("ix_log_lines_source_at", table_name="log_lines")
    op.drop_table("log_lines")
    op.drop_table("log_sources")
    op.drop_table("log_groups")
