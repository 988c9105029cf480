"""registry: repositories and tags of Gaia's image registry, a business's registry quota

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 06:00:00.000000

Issue 18. The registry's push notifications fill ``registry_repositories`` and
``registry_tags`` (gaia.store.registry); the images themselves live in the registry's storage,
so dropping these tables on downgrade loses only Gaia's view of them (who pushed when), which
the next pushes rebuild.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_repositories",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("namespace", sa.String(length=127), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_repositories")),
        sa.UniqueConstraint("name", name=op.f("uq_registry_repositories_name")),
    )
    op.create_index(
        op.f("ix_registry_repositories_namespace"),
        "registry_repositories",
        ["namespace"],
        unique=False,
    )
    op.create_table(
        "registry_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("digest", sa.String(length=71), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("blobs", sa.JSON(), nullable=False),
        sa.Column("pushed_by", sa.String(length=255), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["registry_repositories.id"],
            name=op.f("fk_registry_tags_repository_id_registry_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_tags")),
        sa.UniqueConstraint("repository_id", "tag", name=op.f("uq_registry_tags_repository_id")),
    )
    op.create_index(
        op.f("ix_registry_tags_repository_id"), "registry_tags", ["repository_id"], unique=False
    )
    with op.batch_alter_table("businesses") as batch:
        batch.add_column(sa.Column("registry_quota_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("businesses") as batch:
        batch.drop_column("registry_quota_bytes")
    op.drop_index(op.f("ix_registry_tags_repository_id"), table_name="registry_tags")
    op.drop_table("registry_tags")
    op.drop_index(op.f("ix_registry_repositories_namespace"), table_name="registry_repositories")
    op.drop_table("registry_repositories")
