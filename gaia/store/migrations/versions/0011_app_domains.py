"""apps: a domain is bound to one app at most

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 12:50:00.000000

Issue 19 (access): an app's domain now routes real traffic (the access layer's HAProxy and
dnsmasq), so two apps may not share one: a tenant would take another's traffic. A partial
unique index (apps with a domain only) keeps that true under concurrent requests. Apps that
share a domain already stop the upgrade with their names: which one keeps it is an operator's
choice, not the migration's.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT domain, COUNT(*) FROM apps WHERE domain <> '' "
                "GROUP BY domain HAVING COUNT(*) > 1"
            )
        )
        .all()
    )
    if shared:
        listed = ", ".join(f"{d} ({n} apps)" for d, n in shared)
        raise RuntimeError(
            f"apps share a domain: {listed}; clear the domain of all but one of each "
            '(PATCH /api/v1/businesses/<b>/apps/<app> with domain "") and upgrade again'
        )
    op.create_index(
        "ix_apps_domain_unique",
        "apps",
        ["domain"],
        unique=True,
        sqlite_where=sa.text("domain <> ''"),
        postgresql_where=sa.text("domain <> ''"),
    )


def downgrade() -> None:
    op.drop_index("ix_apps_domain_unique", table_name="apps")
