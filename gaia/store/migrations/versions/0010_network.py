"""network: floating-IP pools and the instances' network attachments

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 09:43:09.759211

Issue 19 (the Galaxy network). ``floating_ip_pools``: ranges of a cluster's underlay subnets,
one pool per subnet. ``network_attachments``: an instance's floating IP (or a NAT instance's
node address and host ports), written by the nodes' CNI plugin through the API. The unique
constraints (pool, ip) and (cluster, business, pod) are what keeps one address from being
given twice under concurrent allocations. Dropping the tables on downgrade forgets which
instance holds which address; running instances keep their addresses until their next ADD.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "floating_ip_pools",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("subnet", sa.String(length=18), nullable=False),
        sa.Column("zone", sa.String(length=63), nullable=False),
        sa.Column("gateway", sa.String(length=15), nullable=False),
        sa.Column("range_start", sa.String(length=15), nullable=False),
        sa.Column("range_end", sa.String(length=15), nullable=False),
        sa.Column("created_by", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_floating_ip_pools_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_floating_ip_pools")),
        sa.UniqueConstraint("cluster_id", "name", name=op.f("uq_floating_ip_pools_cluster_id")),
        sa.UniqueConstraint("cluster_id", "subnet", name="uq_floating_ip_pools_subnet"),
    )
    op.create_index(
        op.f("ix_floating_ip_pools_cluster_id"), "floating_ip_pools", ["cluster_id"], unique=False
    )
    op.create_table(
        "network_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("business_id", sa.Integer(), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("ip", sa.String(length=15), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("container_id", sa.String(length=128), nullable=False),
        sa.Column("ports", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["business_id"],
            ["businesses.id"],
            name=op.f("fk_network_attachments_business_id_businesses"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_network_attachments_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["pool_id"],
            ["floating_ip_pools.id"],
            name=op.f("fk_network_attachments_pool_id_floating_ip_pools"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_attachments")),
        sa.UniqueConstraint(
            "cluster_id", "business_id", "pod", name="uq_network_attachments_owner"
        ),
        sa.UniqueConstraint("pool_id", "ip", name=op.f("uq_network_attachments_pool_id")),
    )
    op.create_index(
        op.f("ix_network_attachments_business_id"),
        "network_attachments",
        ["business_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_network_attachments_pool_id"), "network_attachments", ["pool_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_network_attachments_pool_id"), table_name="network_attachments")
    op.drop_index(op.f("ix_network_attachments_business_id"), table_name="network_attachments")
    op.drop_table("network_attachments")
    op.drop_index(op.f("ix_floating_ip_pools_cluster_id"), table_name="floating_ip_pools")
    op.drop_table("floating_ip_pools")
