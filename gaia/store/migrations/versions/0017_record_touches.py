"""operation records say what they changed of the apps: a quiet app controller reads it

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 00:30:00.000000

A quiet app controller reads the operation records written since its last look to tell which
apps they changed (one app: a look at it alone; none: no look; else a full pass). It read that
from the request's path, so the store knew the API's URL layout and every call that was not an
app's (a login, a token, an alert rule) cost a full pass. The API now says it when it writes
the record: ``touches`` is "<business>/<app>", "" or "*". Rows written before (and by a replica
not yet upgraded) have none, which reads as "*": a full pass, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operation_records") as batch:
        batch.add_column(sa.Column("touches", sa.String(length=110), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operation_records") as batch:
        batch.drop_column("touches")
