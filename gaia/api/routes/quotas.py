"""A business's quota per cluster: used/total on the eight dimensions, and admission checks."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.api.deps import PrincipalDep, SessionDep, audit, business_for, require_platform_admin
from gaia.api.schemas.base import (
    NAME_PATTERN,
    AdmissionCheck,
    AdmissionResult,
    AdmissionViolation,
    QuotaDimension,
    QuotaOut,
    QuotaPut,
    ResourceAmounts,
)
from gaia.domain.errors import Conflict, NotFound
from gaia.domain.rbac import Permission
from gaia.domain.resources import DIMENSIONS, ResourceVector, check_fits, to_api_amount
from gaia.store import events
from gaia.store.instance_configs import find_config
from gaia.store.models import Business, Cluster, Quota, utcnow
from gaia.store.quotas import pending_amounts

router = APIRouter(tags=["quotas"])
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")


def cluster_named(session: Session, name: str) -> Cluster:
    cluster = session.scalars(select(Cluster).where(Cluster.name == name)).one_or_none()
    if cluster is None:
        raise NotFound(f"cluster '{name}' not found")
    return cluster


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


def _quota(session: Session, business: Business, cluster: Cluster) -> Quota | None:
    return session.scalars(
        select(Quota).where(Quota.business_id == business.id, Quota.cluster_id == cluster.id)
    ).one_or_none()


@router.get("/businesses/{biz}/quotas", response_model=list[QuotaOut])
def list_quotas(principal: PrincipalDep, session: SessionDep, biz: str = BizPath) -> list[QuotaOut]:
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    rows = session.execute(
        select(Quota, Cluster)
        .join(Cluster, Cluster.id == Quota.cluster_id)
        .where(Quota.business_id == business.id)
        .order_by(Cluster.name)
    )
    return [quota_out(session, business, c, q) for q, c in rows]


@router.get("/businesses/{biz}/quotas/{cluster}", response_model=QuotaOut)
def get_quota(
    principal: PrincipalDep, session: SessionDep, biz: str = BizPath, cluster: str = ClusterPath
) -> QuotaOut:
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    target = cluster_named(session, cluster)
    quota = _quota(session, business, target)
    if quota is None:
        raise NotFound(f"business '{biz}' has no quota in cluster '{cluster}'")
    return quota_out(session, business, target, quota)


@router.put("/businesses/{biz}/quotas/{cluster}", response_model=QuotaOut)
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
    # Lock the row: a concurrent admission must see either the old or the new limits.
    quota = session.scalars(
        select(Quota)
        .where(Quota.business_id == business.id, Quota.cluster_id == target.id)
        .with_for_update()
    ).one_or_none()
    if quota is None:
        quota = Quota(business_id=business.id, cluster_id=target.id)
        quota.set_used(ResourceVector())
        session.add(quota)
    quota.set_hard(hard)
    quota.updated_at = utcnow()
    session.flush()
    ctx.summary = "set quota " + ", ".join(f"{k}={v}" for k, v in hard.to_api().items())
    over_dims = [n for n, *_ in DIMENSIONS if getattr(quota.used(), n) > getattr(hard, n)]
    if over_dims:
        events.emit(
            session,
            object_kind="Quota",
            object_name=f"{biz}/{cluster}",
            business_id=business.id,
            business=biz,
            cluster=cluster,
            reason="QuotaBelowUsage",
            message="quota set below current use on "
            + ", ".join(over_dims)
            + "; nothing is evicted, growth is refused until usage drops",
            type="Warning",
            user=principal.username,
        )
    return quota_out(session, business, target, quota)


@router.delete("/businesses/{biz}/quotas/{cluster}", status_code=204)
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
    quota = _quota(session, business, target)
    if quota is None:
        raise NotFound(f"business '{biz}' has no quota in cluster '{cluster}'")
    if not quota.used().is_zero():
        raise Conflict(
            f"business '{biz}' still uses resources in cluster '{cluster}'; free them first"
        )
    session.delete(quota)
    ctx.summary = f"removed quota of '{biz}' in '{cluster}'"
    return Response(status_code=204)


@router.post("/businesses/{biz}/quotas/{cluster}/admission-check", response_model=AdmissionResult)
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
    quota = _quota(session, business, target)
    used = quota.used() if quota else ResourceVector()
    hard = quota.hard() if quota else ResourceVector()
    violations = check_fits(requested=requested, used=used, hard=hard)
    return AdmissionResult(
        admitted=not violations,
        message="fits" if not violations else "; ".join(v.sentence() for v in violations),
        violations=[AdmissionViolation(**v.to_details()) for v in violations],
    )
