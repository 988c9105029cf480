"""Per-model GPU limits of a business in a cluster (heterogeneous GPUs).

The quota's ``gpu`` dimension counts cards of every model. A platform with V100s and T4s in one
cluster may also cap how many cards of one model a business holds:
``PUT /businesses/{biz}/quotas/{cluster}/gpu-models/{model}`` with ``{"cards": 8}``. The app
controller gives the scheduler each business's remaining budget per model, so an app that asks
for "any GPU" lands on another model once its budget for one is spent, and an app pinned to a
model waits (FailedScheduling says why).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import Field
from sqlalchemy import select

from gaia.api.deps import (
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.schemas.base import NAME_PATTERN, Cards, Strict
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.domain.rbac import Permission
from gaia.domain.resources import from_api_amount, to_api_amount
from gaia.store.models import GpuModelLimit, utcnow

router = APIRouter(tags=["quotas"])
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")
ModelPath = Path(
    pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$", max_length=63, description="GPU model"
)


class GpuModelLimitIn(Strict):
    cards: Cards = Field(description="cards of this model the business may hold")


class GpuModelLimitOut(Strict):
    model: str
    cards: Cards


def _out(row: GpuModelLimit) -> GpuModelLimitOut:
    value = to_api_amount("gpu", row.gpu)
    return GpuModelLimitOut(model=row.model, cards=Decimal(str(value)))


def _locate(
    request: Request,
    principal: Any,
    session: Any,
    verb: str,
    biz: str,
    cluster: str,
    model: str,
    what: str,
) -> tuple[Any, Any, Any, GpuModelLimit | None]:
    """Audit context, business, cluster and the existing limit (or None) of one change; only
    a platform admin may change limits."""
    ctx = audit(
        request,
        action=f"quota.gpu-model.{verb}",
        cluster=cluster,
        target=f"business/{biz}/quota/{cluster}/gpu-model/{model}",
    )
    business = business_for(session, principal, biz, Permission.QUOTA_READ, ctx=ctx)
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, what)
    limit = session.scalars(
        select(GpuModelLimit).where(
            GpuModelLimit.business_id == business.id,
            GpuModelLimit.cluster_id == row.id,
            GpuModelLimit.model == model,
        )
    ).one_or_none()
    return ctx, business, row, limit


@router.get("/businesses/{biz}/quotas/{cluster}/gpu-models", response_model=list[GpuModelLimitOut])
def list_gpu_model_limits(
    principal: PrincipalDep, session: SessionDep, biz: str = BizPath, cluster: str = ClusterPath
) -> list[GpuModelLimitOut]:
    business = business_for(session, principal, biz, Permission.QUOTA_READ)
    row = visible_cluster(session, principal, cluster)
    limits = session.scalars(
        select(GpuModelLimit)
        .where(GpuModelLimit.business_id == business.id, GpuModelLimit.cluster_id == row.id)
        .order_by(GpuModelLimit.model)
    )
    return [_out(limit) for limit in limits]


@router.put(
    "/businesses/{biz}/quotas/{cluster}/gpu-models/{model}", response_model=GpuModelLimitOut
)
def put_gpu_model_limit(
    body: GpuModelLimitIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
    model: str = ModelPath,
) -> GpuModelLimitOut:
    ctx, business, row, limit = _locate(
        request, principal, session, "set", biz, cluster, model, "set GPU model limits"
    )
    cards = from_api_amount("gpu", body.cards)
    if cards % 100 and cards > 100:
        raise InvalidRequest("cards above one must be whole cards")
    if limit is None:
        limit = GpuModelLimit(business_id=business.id, cluster_id=row.id, model=model)
        session.add(limit)
    limit.gpu = cards
    limit.updated_at = utcnow()
    session.flush()
    ctx.summary = f"{biz} may hold {body.cards} {model} card(s) in {cluster}"
    return _out(limit)


@router.delete("/businesses/{biz}/quotas/{cluster}/gpu-models/{model}", status_code=204)
def delete_gpu_model_limit(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    cluster: str = ClusterPath,
    model: str = ModelPath,
) -> Response:
    ctx, _, _, limit = _locate(
        request, principal, session, "delete", biz, cluster, model, "remove GPU model limits"
    )
    if limit is None:
        raise NotFound(f"no limit for GPU model '{model}'")
    session.delete(limit)
    ctx.summary = f"removed the {model} limit of {biz} in {cluster}"
    return Response(status_code=204)
