"""gray upgrades: one name in code, the table app_rollouts becomes app_upgrades

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 16:45:00.000000

The concept is a gray upgrade everywhere (API, console, docs); the table was the last place that
said "rollout". Only names change, never data: the table, its index, and on PostgreSQL its
sequence and constraint names (SQLite keeps constraint names inside the table's CREATE statement,
where nothing reads them, so renaming the table and its index is the whole change there).
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _rename(old: str, new: str) -> None:
    op.rename_table(f"app_{old}", f"app_{new}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER SEQUENCE app_{old}_id_seq RENAME TO app_{new}_id_seq")
        op.execute(f"ALTER INDEX ix_app_{old}_app_id RENAME TO ix_app_{new}_app_id")
        op.execute(f"ALTER TABLE app_{new} RENAME CONSTRAINT pk_app_{old} TO pk_app_{new}")
        op.execute(
            f"ALTER TABLE app_{new} RENAME CONSTRAINT fk_app_{old}_app_id_apps "
            f"TO fk_app_{new}_app_id_apps"
        )
        return
    # SQLite cannot rename an index: make the new one, then drop the old
    op.create_index(f"ix_app_{new}_app_id", f"app_{new}", ["app_id"], unique=False)
    op.drop_index(f"ix_app_{old}_app_id", table_name=f"app_{new}")


def upgrade() -> None:
    _rename("rollouts", "upgrades")


def downgrade() -> None:
    _rename("upgrades", "rollouts")
