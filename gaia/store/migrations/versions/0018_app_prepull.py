"""apps say what the platform may pull onto their nodes ahead of time

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 02:30:00.000000

``apps.prepull`` (``gaia.domain.upgrades.Prepull``): "upgrades" (what every app did before: a
running gray upgrade's next batches), "templates" (that, and the newest declared version no
instance runs yet, with no upgrade in flight) or "off". Existing apps keep "upgrades".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.add_column(
            sa.Column(
                "prepull",
                sa.String(length=16),
                nullable=False,
                server_default=sa.text("'upgrades'"),
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("prepull")
