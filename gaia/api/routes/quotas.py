"""A business's quota per cluster: used/total on the eight dimensions, and admission checks.

The limits are written by ``gaia.store.businesses`` (``put_quota``, ``delete_quota``); the
admission check asks the same rule real admission uses (``gaia.domain.resources.check_fits``)
without reserving anything. See docs/architecture.md, "api".
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    inline_write,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page, ResourceAmounts
from gaia.api.schemas.tenancy import (
    AdmissionCheck,
    AdmissionResult,
    AdmissionViolation,
    QuotaDimension,
    QuotaOut,
    QuotaPut,
)
from gaia.domain.rbac import Permission
from gaia.domain.resources import DIMENSIONS, ResourceVector, check_fits, to_api_amount
from gaia.store import businesses
from gaia.store.clusters import cluster_named
from gaia.store.instance_configs import find_config
from gaia.store.models import Business, Cluster, Quota
from gaia.store.quotas import pending_amounts

router = APIRouter(tags=["quotas"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")


def quota_out(session: Session, business: Business, cluster: Cluster, quota: Quota) -> QuotaOut:
    hard, used = quota.hard(), quota.used()
    pending = pending_amounts(session, quota)
    dims = []
    for name, _scale, unit, _label in DIMENSIONS:
        u, t = to_api_amount(name, getattr(used, name)), to_api_amount(name, getattr(hard, name))
        dims.append(
            QuotaDimension(
                dimension=name,
                unit=unit,
                used=u,
                total=t,
                pending=to_api_amount(name, getattr(pending, name)),
                display=f"{u}/{t} {unit}",
            )
        )
    return QuotaOut(
        business=business.name,
        cluster=cluster.name,
        hard=ResourceAmounts.from_vector(hard),
        used=ResourceAmounts.from_vector(used),
        dimensions=dims,
        updated_at=quota.updated_at,
    )


@router.get("/businesses/{biz}/quotas", response_model=Page[QuotaOut])
def list_quotas(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[QuotaOut]:
    """The business's quotas by cluster name (one per cluster: paged in memory)."""
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    rows, nxt = page_in_memory(
        businesses.quotas_of(session, business=business),
        key=lambda qc: qc[1].name,
        kind=f"quotas@business:{business.id}",
        limit=limit,
        cursor=cursor,
    )
    return Page[QuotaOut](
        items=[quota_out(session, business, c, q) for q, c in rows], next_cursor=nxt
    )


@router.get("/businesses/{biz}/quotas/{cluster}", response_model=QuotaOut)
def get_quota(
    principal: PrincipalDep, session: SessionDep, biz: str = BizPath, cluster: str = ClusterPath
) -> QuotaOut:
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    target = cluster_named(session, cluster)
    quota = businesses.quota_of(session, business=business, cluster=target)
    return quota_out(session, business, target, quota)


@router.put("/businesses/{biz}/quotas/{cluster}", response_model=QuotaOut)
@inline_write
def put_quota(
    body: QuotaPut,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
) -> QuotaOut:
    """Set the hard limits. Lowering below current use is allowed: it stops further growth."""
    ctx = audit(
        request, action="quota.put", cluster=cluster, target=f"business/{biz}/quota/{cluster}"
    )
    business = business_for(session, principal, biz, Permission.QUOTA_READ, ctx=ctx)
    require_platform_admin(principal, "set quotas")
    target = cluster_named(session, cluster)
    hard = body.hard.to_vector()
    quota = businesses.put_quota(
        session, business=business, cluster=target, hard=hard, user=principal.username
    )
    ctx.summary = "set quota " + ", ".join(f"{k}={v}" for k, v in hard.to_api().items())
    return quota_out(session, business, target, quota)


@router.delete("/businesses/{biz}/quotas/{cluster}", status_code=204)
@inline_write
def delete_quota(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
) -> Response:
    ctx = audit(
        request, action="quota.delete", cluster=cluster, target=f"business/{biz}/quota/{cluster}"
    )
    business = business_for(session, principal, biz, Permission.QUOTA_READ, ctx=ctx)
    require_platform_admin(principal, "remove quotas")
    target = cluster_named(session, cluster)
    businesses.delete_quota(session, business=business, cluster=target)
    ctx.summary = f"removed quota of '{biz}' in '{cluster}'"
    return Response(status_code=204)


@router.post("/businesses/{biz}/quotas/{cluster}/admission-check", response_model=AdmissionResult)
@inline_write
def admission_check(
    body: AdmissionCheck,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
) -> AdmissionResult:
    """Would this request fit now? The same rule as real admission, without reserving."""
    audit(request).read_only = True
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    target = cluster_named(session, cluster)
    if body.instance_config is not None:
        per_instance = find_config(session, business, body.instance_config).amounts()
    else:
        per_instance = body.request.to_vector()
    requested = per_instance.scaled(body.replicas)
    quota = businesses.find_quota(session, business=business, cluster=target)
    used = quota.used() if quota else ResourceVector()
    hard = quota.hard() if quota else ResourceVector()
    violations = check_fits(requested=requested, used=used, hard=hard)
    return AdmissionResult(
        admitted=not violations,
        message="fits" if not violations else "; ".join(v.sentence() for v in violations),
        violations=[AdmissionViolation(**v.to_details()) for v in violations],
    )
