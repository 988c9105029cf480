"""The statistics overview: per-cluster and per-business counts and usage against quota.

Sums are computed in the database (one grouped query per view), so the page costs the same with
ten businesses or a thousand. Everything is limited to what the caller may see.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from gaia.api.deps import PrincipalDep, SessionDep, visible_clusters_stmt
from gaia.api.schemas.base import BusinessOverview, ClusterOverview, OverviewOut, UsageLine
from gaia.domain.resources import DIMENSIONS, to_api_amount
from gaia.store.models import Business, Cluster, Membership, Quota, User

router = APIRouter(tags=["overview"])

_SUMS = [func.coalesce(func.sum(getattr(Quota, f"used_{n}")), 0) for n, *_ in DIMENSIONS] + [
    func.coalesce(func.sum(getattr(Quota, f"hard_{n}")), 0) for n, *_ in DIMENSIONS
]


def _usage(values: tuple[int, ...]) -> list[UsageLine]:
    k = len(DIMENSIONS)
    return [
        UsageLine(
            dimension=name,
            unit=unit,
            used=to_api_amount(name, int(values[i])),
            total=to_api_amount(name, int(values[k + i])),
        )
        for i, (name, _s, unit, _l) in enumerate(DIMENSIONS)
    ]


@router.get("/overview", response_model=OverviewOut)
def overview(principal: PrincipalDep, session: SessionDep) -> OverviewOut:
    admin = principal.is_platform_admin
    visible_biz = principal.business_ids()

    quota_filter = [] if admin else [Quota.business_id.in_(visible_biz)]
    per_cluster = {
        row[0]: row[1:]
        for row in session.execute(
            select(Quota.cluster_id, func.count(Quota.id), *_SUMS)
            .where(*quota_filter)
            .group_by(Quota.cluster_id)
        )
    }
    clusters = []
    for c in session.scalars(visible_clusters_stmt(principal).order_by(Cluster.name)):
        agg = per_cluster.get(c.id)
        clusters.append(
            ClusterOverview(
                name=c.name,
                kind=c.kind,
                region=c.region,
                zone=c.zone,
                health=c.health,
                node_count=c.node_count,
                ready_node_count=c.ready_node_count,
                businesses=int(agg[0]) if agg else 0,
                usage=_usage(tuple(agg[1:]) if agg else (0,) * (2 * len(DIMENSIONS))),
            )
        )

    biz_stmt = select(Business).order_by(Business.name).limit(500)
    if not admin:
        biz_stmt = biz_stmt.where(Business.id.in_(visible_biz))
    businesses = list(session.scalars(biz_stmt))
    ids = [b.id for b in businesses]
    members: dict[int, int] = {
        business_id: count
        for business_id, count in session.execute(
            select(Membership.business_id, func.count(Membership.id))
            .where(Membership.business_id.in_(ids))
            .group_by(Membership.business_id)
        )
    }
    per_biz = {
        row[0]: row[1:]
        for row in session.execute(
            select(Quota.business_id, func.count(Quota.id), *_SUMS)
            .where(Quota.business_id.in_(ids))
            .group_by(Quota.business_id)
        )
    }
    biz_out = []
    for b in businesses:
        agg = per_biz.get(b.id)
        biz_out.append(
            BusinessOverview(
                name=b.name,
                display_name=b.display_name,
                members=members.get(b.id, 0),
                clusters=int(agg[0]) if agg else 0,
                usage=_usage(tuple(agg[1:]) if agg else (0,) * (2 * len(DIMENSIONS))),
            )
        )

    totals = {
        "clusters": len(clusters),
        "healthy_clusters": sum(1 for c in clusters if c.health == "Healthy"),
        "businesses": (
            session.scalar(select(func.count(Business.id))) or 0 if admin else len(visible_biz)
        ),
        "nodes": sum(c.node_count or 0 for c in clusters),
    }
    if admin:
        totals["users"] = session.scalar(select(func.count(User.id))) or 0
    return OverviewOut(totals=totals, clusters=clusters, businesses=biz_out)
