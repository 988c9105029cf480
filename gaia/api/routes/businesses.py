"""Businesses (the tenants) and their members.

Each route authorises (``business_for``, ``require_platform_admin``), calls one operation of
``gaia.store.businesses`` and shapes the answer; the rules that belong to the data (a business is
deleted only when empty, the last business-admin stays) live there. See docs/architecture.md,
"api".
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    Principal,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    inline_read,
    inline_write,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, USERNAME_PATTERN, Page
from gaia.api.schemas.tenancy import (
    BusinessCreate,
    BusinessOut,
    BusinessUpdate,
    MemberOut,
    MemberPut,
)
from gaia.domain.rbac import ROLE_PERMISSIONS, Permission, Role
from gaia.store import businesses
from gaia.store.models import Business

router = APIRouter(tags=["businesses"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
UserPath = Path(pattern=USERNAME_PATTERN, max_length=63)


def business_out(business: Business, principal: Principal) -> BusinessOut:
    role = principal.roles.get(business.id)
    if role is None and principal.is_platform_admin:
        role = Role.PLATFORM_ADMIN
    granted = (
        frozenset(Permission)
        if principal.is_platform_admin
        else ROLE_PERMISSIONS.get(role, frozenset())
        if role is not None
        else frozenset()
    )
    return BusinessOut(
        name=business.name,
        display_name=business.display_name,
        description=business.description,
        created_at=business.created_at,
        role=role,
        permissions=sorted(granted),
    )


@router.get("/businesses", response_model=Page[BusinessOut])
def list_businesses(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[BusinessOut]:
    """Businesses you belong to (all of them for a platform admin), by name."""
    rows, nxt = businesses.page_businesses(
        session, business_ids=principal.business_scope(), limit=limit, cursor=cursor
    )
    return Page[BusinessOut](items=[business_out(b, principal) for b in rows], next_cursor=nxt)


@router.post("/businesses", response_model=BusinessOut, status_code=201)
@inline_write
def create_business(
    body: BusinessCreate, request: Request, principal: PrincipalDep, session: SessionDep
) -> BusinessOut:
    ctx = audit(
        request, action="business.create", business=body.name, target=f"business/{body.name}"
    )
    require_platform_admin(principal, "create businesses")
    business, admins = businesses.create_business(
        session,
        name=body.name,
        display_name=body.display_name,
        description=body.description,
        admins=body.admins,
        user=principal.username,
    )
    ctx.business_id = business.id
    ctx.summary = f"created business '{body.name}'" + (
        f" with admins {', '.join(u.username for u in admins)}" if admins else ""
    )
    return business_out(business, principal)


@router.get("/businesses/{biz}", response_model=BusinessOut)
@inline_read
def get_business(principal: PrincipalDep, session: SessionDep, biz: str = BizPath) -> BusinessOut:
    return business_out(business_for(session, principal, biz, Permission.BUSINESS_READ), principal)


@router.patch("/businesses/{biz}", response_model=BusinessOut)
@inline_write
def update_business(
    body: BusinessUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> BusinessOut:
    ctx = audit(request, action="business.update", target=f"business/{biz}")
    business = business_for(session, principal, biz, Permission.BUSINESS_UPDATE, ctx=ctx)
    changed = businesses.update_business(
        business, display_name=body.display_name, description=body.description
    )
    ctx.summary = "updated " + (", ".join(changed) or "nothing")
    return business_out(business, principal)


@router.delete("/businesses/{biz}", status_code=204)
@inline_write
def delete_business(
    request: Request, principal: PrincipalDep, session: SessionDep, biz: str = BizPath
) -> Response:
    """Deletes a business that holds no resources; its quotas and memberships go with it."""
    ctx = audit(request, action="business.delete", target=f"business/{biz}")
    business = business_for(session, principal, biz, Permission.BUSINESS_READ, ctx=ctx)
    require_platform_admin(principal, "delete businesses")
    businesses.delete_business(session, business=business)
    ctx.summary = f"deleted business '{biz}'"
    return Response(status_code=204)


# --- members -----------------------------------------------------------------------------


@router.get("/businesses/{biz}/members", response_model=Page[MemberOut])
def list_members(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[MemberOut]:
    """The business's members by username (a team, not a directory: paged in memory)."""
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    rows, nxt = page_in_memory(
        businesses.members_of(session, business=business),
        key=lambda um: um[0].username,
        kind=f"members@business:{business.id}",
        limit=limit,
        cursor=cursor,
    )
    items = [
        MemberOut(
            username=u.username, display_name=u.display_name, role=Role(m.role), since=m.created_at
        )
        for u, m in rows
    ]
    return Page[MemberOut](items=items, next_cursor=nxt)


@router.put("/businesses/{biz}/members/{username}", response_model=MemberOut)
@inline_write
def put_member(
    body: MemberPut,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    username: str = UserPath,
) -> MemberOut:
    """Add a member or change their role."""
    ctx = audit(request, action="member.put", target=f"business/{biz}/member/{username}")
    business = business_for(session, principal, biz, Permission.MEMBER_MANAGE, ctx=ctx)
    # A business admin may not strand the business without one; platform admins may.
    change = businesses.set_member(
        session,
        business=business,
        username=username,
        role=body.role,
        protect_last_admin=not principal.is_platform_admin,
    )
    ctx.summary = (
        f"added {username} as {body.role}"
        if change.previous_role is None
        else f"changed {username} from {change.previous_role} to {body.role}"
    )
    return MemberOut(
        username=change.user.username,
        display_name=change.user.display_name,
        role=Role(body.role),
        since=change.membership.created_at,
    )


@router.delete("/businesses/{biz}/members/{username}", status_code=204)
@inline_write
def delete_member(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    username: str = UserPath,
) -> Response:
    ctx = audit(request, action="member.delete", target=f"business/{biz}/member/{username}")
    business = business_for(session, principal, biz, Permission.MEMBER_MANAGE, ctx=ctx)
    membership = businesses.remove_member(
        session,
        business=business,
        username=username,
        protect_last_admin=not principal.is_platform_admin,
    )
    ctx.summary = f"removed {username} ({membership.role})"
    return Response(status_code=204)
