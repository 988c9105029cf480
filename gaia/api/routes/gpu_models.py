"""Per-model GPU limits of a business in a cluster (heterogeneous GPUs).

The quota's ``gpu`` dimension counts cards of every model. A platform with V100s and T4s in one
cluster may also cap how many cards of one model a business holds:
``PUT /businesses/{biz}/quotas/{cluster}/gpu-models/{model}`` with ``{"cards": 8}``. The app
controller gives the scheduler each business's remaining budget per model, so an app that asks
for "any GPU" lands on another model once its budget for one is spent, and an app pinned to a
model waits (FailedScheduling says why). The limits are written by ``gaia.store.gpu_models``
(see docs/architecture.md, "api").
"""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session

from gaia.api.deps import (
    AuditContext,
    CommittingRoute,
    Principal,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    inline_write,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.tenancy import GpuModelLimitIn, GpuModelLimitOut
from gaia.domain.rbac import Permission
from gaia.domain.resources import from_api_amount, to_api_amount
from gaia.store import gpu_models
from gaia.store.models import Business, Cluster, GpuModelLimit

router = APIRouter(tags=["quotas"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")
ModelPath = Path(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$", max_length=63, description="GPU model"
)


def _out(row: GpuModelLimit) -> GpuModelLimitOut:
    value = to_api_amount("gpu", row.gpu)
    return GpuModelLimitOut(model=row.model, cards=Decimal(str(value)))


def _authorise(
    request: Request,
    principal: Principal,
    session: Session,
    *,
    verb: str,
    biz: str,
    cluster: str,
    model: str,
    what: str,
) -> tuple[AuditContext, Business, Cluster]:
    """Audit context, business and cluster of one change; only a platform admin may change
    limits."""
    ctx = audit(
        request,
        action=f"quota.gpu-model.{verb}",
        cluster=cluster,
        target=f"business/{biz}/quota/{cluster}/gpu-model/{model}",
    )
    business = business_for(session, principal, biz, Permission.QUOTA_READ, ctx=ctx)
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, what)
    return ctx, business, row


@router.get("/businesses/{biz}/quotas/{cluster}/gpu-models", response_model=Page[GpuModelLimitOut])
def list_gpu_model_limits(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[GpuModelLimitOut]:
    """The per-model GPU limits of one quota, by model (a handful: paged in memory)."""
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    row = visible_cluster(session, principal, cluster)
    rows, nxt = page_in_memory(
        gpu_models.gpu_model_limits(session, business_id=business.id, cluster_id=row.id),
        key=lambda r: r.model,
        kind=f"gpu-models@business:{business.id}:cluster:{row.id}",
        limit=limit,
        cursor=cursor,
    )
    return Page[GpuModelLimitOut](items=[_out(r) for r in rows], next_cursor=nxt)


@router.put(
    "/businesses/{biz}/quotas/{cluster}/gpu-models/{model}", response_model=GpuModelLimitOut
)
@inline_write
def put_gpu_model_limit(
    body: GpuModelLimitIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
    model: str = ModelPath,
) -> GpuModelLimitOut:
    ctx, business, row = _authorise(
        request,
        principal,
        session,
        verb="set",
        biz=biz,
        cluster=cluster,
        model=model,
        what="set GPU model limits",
    )
    limit = gpu_models.put_gpu_model_limit(
        session,
        business_id=business.id,
        cluster_id=row.id,
        model=model,
        cards=from_api_amount("gpu", body.cards),
    )
    ctx.summary = f"{biz} may hold {body.cards} {model} card(s) in {cluster}"
    return _out(limit)


@router.delete("/businesses/{biz}/quotas/{cluster}/gpu-models/{model}", status_code=204)
@inline_write
def delete_gpu_model_limit(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
    model: str = ModelPath,
) -> Response:
    ctx, business, row = _authorise(
        request,
        principal,
        session,
        verb="delete",
        biz=biz,
        cluster=cluster,
        model=model,
        what="remove GPU model limits",
    )
    gpu_models.delete_gpu_model_limit(
        session, business_id=business.id, cluster_id=row.id, model=model
    )
    ctx.summary = f"removed the {model} limit of {biz} in {cluster}"
    return Response(status_code=204)
