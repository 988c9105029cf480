"""Queries over registered clusters that several parts of the platform share."""

from __future__ import annotations

from sqlalchemy import Select, select

from gaia.store.models import Cluster, Quota


def visible_clusters(business_ids: set[int] | None) -> Select[Cluster]:
    """Clusters where one of ``business_ids`` holds a quota; every cluster for ``None``."""
    stmt = select(Cluster)
    if business_ids is not None:
        stmt = stmt.where(
            Cluster.id.in_(select(Quota.cluster_id).where(Quota.business_id.in_(business_ids)))
        )
    return stmt
