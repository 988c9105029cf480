"""Instance configurations: named instance shapes ("4 cores, 10 GB, 4 GB disk, 10 Mbit/s, 2 GPU").

Two scopes with one table: platform-wide shapes (``/instance-configs``, written by platform
admins, readable by everyone) and a business's own (``/businesses/{biz}/instance-configs``,
written by its business admins). Apps refer to a shape by name; the business's own shape wins
over a platform shape of the same name (``find_config``). The rows are written by
``gaia.store.instance_configs``. See docs/architecture.md, "api".
"""

from __future__ import annotations

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
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page, ResourceAmounts
from gaia.api.schemas.instance_configs import (
    InstanceConfigIn,
    InstanceConfigOut,
    InstanceConfigUpdate,
)
from gaia.domain.rbac import Permission
from gaia.domain.resources import DIMENSIONS, ResourceVector, describe
from gaia.store import instance_configs
from gaia.store.models import Business, InstanceConfig

router = APIRouter(tags=["instance-configs"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
NamePath = Path(pattern=NAME_PATTERN, max_length=63, description="configuration name")


def summary_of(vector: ResourceVector) -> str:
    parts = [
        f"{describe(n, getattr(vector, n))} {label}"
        for n, _s, _u, label in DIMENSIONS
        if getattr(vector, n)
    ]
    return ", ".join(parts) or "no resources"


def config_out(row: InstanceConfig, business: Business | None) -> InstanceConfigOut:
    amounts = row.amounts()
    return InstanceConfigOut(
        name=row.name,
        scope="platform" if row.business_id is None else "business",
        business=business.name if business is not None else None,
        description=row.description,
        resources=ResourceAmounts.from_vector(amounts),
        summary=summary_of(amounts),
        created_at=row.created_at,
    )


def _list(
    session: Session, business: Business | None, *, limit: int, cursor: str | None
) -> Page[InstanceConfigOut]:
    """One page of a scope's shapes by name (a short catalogue: paged in memory)."""
    rows, nxt = page_in_memory(
        instance_configs.configs_in(session, business=business),
        key=lambda r: r.name,
        kind=f"instance-configs@{'platform' if business is None else f'business:{business.id}'}",
        limit=limit,
        cursor=cursor,
    )
    return Page[InstanceConfigOut](items=[config_out(r, business) for r in rows], next_cursor=nxt)


def _create(
    session: Session, business: Business | None, body: InstanceConfigIn, ctx: AuditContext
) -> InstanceConfigOut:
    vector = body.resources.to_vector()
    row = instance_configs.create_config(
        session, business=business, name=body.name, description=body.description, amounts=vector
    )
    ctx.summary = f"created instance configuration '{body.name}': {summary_of(vector)}"
    return config_out(row, business)


def _update(
    session: Session,
    business: Business | None,
    name: str,
    body: InstanceConfigUpdate,
    ctx: AuditContext,
) -> InstanceConfigOut:
    row = instance_configs.update_config(
        session,
        business=business,
        name=name,
        description=body.description,
        amounts=body.resources.to_vector() if body.resources is not None else None,
    )
    ctx.summary = f"updated instance configuration '{name}': {summary_of(row.amounts())}"
    return config_out(row, business)


# --- platform scope ----------------------------------------------------------------------


@router.get("/instance-configs", response_model=Page[InstanceConfigOut])
def list_platform_configs(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[InstanceConfigOut]:
    return _list(session, None, limit=limit, cursor=cursor)


@router.post("/instance-configs", response_model=InstanceConfigOut, status_code=201)
@inline_write
def create_platform_config(
    body: InstanceConfigIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> InstanceConfigOut:
    ctx = _ctx(request, "create", f"instance-config/{body.name}")
    require_platform_admin(principal, "create platform instance configurations")
    return _create(session, None, body, ctx)


@router.get("/instance-configs/{name}", response_model=InstanceConfigOut)
def get_platform_config(
    principal: PrincipalDep, session: SessionDep, name: str = NamePath
) -> InstanceConfigOut:
    return config_out(instance_configs.config_in(session, business=None, name=name), None)


@router.patch("/instance-configs/{name}", response_model=InstanceConfigOut)
@inline_write
def update_platform_config(
    body: InstanceConfigUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    name: str = NamePath,
) -> InstanceConfigOut:
    ctx = _ctx(request, "update", f"instance-config/{name}")
    require_platform_admin(principal, "change platform instance configurations")
    return _update(session, None, name, body, ctx)


@router.delete("/instance-configs/{name}", status_code=204)
@inline_write
def delete_platform_config(
    request: Request, principal: PrincipalDep, session: SessionDep, name: str = NamePath
) -> Response:
    ctx = _ctx(request, "delete", f"instance-config/{name}")
    require_platform_admin(principal, "delete platform instance configurations")
    instance_configs.delete_config(session, business=None, name=name)
    ctx.summary = f"deleted instance configuration '{name}'"
    return Response(status_code=204)


# --- business scope ----------------------------------------------------------------------


def _business(
    session: Session, principal: Principal, biz: str, permission: Permission, ctx: AuditContext
) -> Business:
    return business_for(session, principal, biz, permission, ctx=ctx)


@router.get("/businesses/{biz}/instance-configs", response_model=Page[InstanceConfigOut])
def list_business_configs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[InstanceConfigOut]:
    """The business's own shapes (platform shapes are at /instance-configs)."""
    business = _business(session, principal, biz, Permission.BUSINESS_READ, audit(request))
    return _list(session, business, limit=limit, cursor=cursor)


@router.post(
    "/businesses/{biz}/instance-configs", response_model=InstanceConfigOut, status_code=201
)
@inline_write
def create_business_config(
    body: InstanceConfigIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> InstanceConfigOut:
    ctx = _ctx(request, "create", f"business/{biz}/instance-config/{body.name}")
    business = _business(session, principal, biz, Permission.INSTANCE_CONFIG_WRITE, ctx)
    return _create(session, business, body, ctx)


@router.get("/businesses/{biz}/instance-configs/{name}", response_model=InstanceConfigOut)
def get_business_config(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> InstanceConfigOut:
    business = _business(session, principal, biz, Permission.BUSINESS_READ, audit(request))
    return config_out(instance_configs.config_in(session, business=business, name=name), business)


@router.patch("/businesses/{biz}/instance-configs/{name}", response_model=InstanceConfigOut)
@inline_write
def update_business_config(
    body: InstanceConfigUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> InstanceConfigOut:
    ctx = _ctx(request, "update", f"business/{biz}/instance-config/{name}")
    business = _business(session, principal, biz, Permission.INSTANCE_CONFIG_WRITE, ctx)
    return _update(session, business, name, body, ctx)


@router.delete("/businesses/{biz}/instance-configs/{name}", status_code=204)
@inline_write
def delete_business_config(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = NamePath,
) -> Response:
    ctx = _ctx(request, "delete", f"business/{biz}/instance-config/{name}")
    business = _business(session, principal, biz, Permission.INSTANCE_CONFIG_WRITE, ctx)
    instance_configs.delete_config(session, business=business, name=name)
    ctx.summary = f"deleted instance configuration '{name}'"
    return Response(status_code=204)


def _ctx(request: Request, verb: str, target: str) -> AuditContext:
    ctx = audit(request, action=f"instance_config.{verb}", target=target)
    return ctx
