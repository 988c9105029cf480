"""The statistics overview: per-cluster and per-business counts and usage against quota.

Sums are computed in the database (``gaia.store.clusters.usage_by_cluster`` and
``gaia.store.businesses.usage_by_business``, one grouped query per view), so the page costs the
same with ten businesses or a thousand. Everything is limited to what the caller may see; this
module only turns the sums into API units. See docs/architecture.md, "api".
"""

from __future__ import annotations

from fastapi import APIRouter

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep
from gaia.api.schemas.overview import BusinessOverview, ClusterOverview, OverviewOut, UsageLine
from gaia.domain.resources import DIMENSIONS, to_api_amount
from gaia.store.businesses import count_businesses, usage_by_business
from gaia.store.clusters import usage_by_cluster
from gaia.store.users import count_users

router = APIRouter(tags=["overview"], route_class=CommittingRoute)


def _usage(values: tuple[int, ...]) -> list[UsageLine]:
    """Usage lines from the sums in ``QUOTA_SUMS`` order: used per dimension, then hard."""
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
    scope = principal.business_scope()
    clusters = [
        ClusterOverview(
            name=c.name,
            kind=c.kind,
            region=c.region,
            zone=c.zone,
            health=c.health,
            node_count=c.node_count,
            ready_node_count=c.ready_node_count,
            businesses=quotas,
            usage=_usage(sums),
        )
        for c, quotas, sums in usage_by_cluster(session, business_ids=scope)
    ]
    businesses = [
        BusinessOverview(
            name=b.name,
            display_name=b.display_name,
            members=members,
            clusters=quotas,
            usage=_usage(sums),
        )
        for b, members, quotas, sums in usage_by_business(session, business_ids=scope)
    ]
    totals = {
        "clusters": len(clusters),
        "healthy_clusters": sum(1 for c in clusters if c.health == "Healthy"),
        "businesses": count_businesses(session) if admin else len(principal.business_ids()),
        "nodes": sum(c.node_count or 0 for c in clusters),
    }
    if admin:
        totals["users"] = count_users(session)
    return OverviewOut(totals=totals, clusters=clusters, businesses=businesses)
