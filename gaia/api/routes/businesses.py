"""Businesses (the tenants) and their members."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy import func, select

from gaia.api.deps import (
    AuditContext,
    Principal,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit, page_of
from gaia.api.schemas.base import (
    NAME_PATTERN,
    USERNAME_PATTERN,
    BusinessCreate,
    BusinessOut,
    BusinessUpdate,
    MemberOut,
    MemberPut,
    Page,
)
from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.rbac import Permission, Role
from gaia.store import events
from gaia.store.models import Business, Membership, Quota, User, utcnow

router = APIRouter(tags=["businesses"])
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
UserPath = Path(pattern=USERNAME_PATTERN, max_length=63)


def business_out(business: Business, principal: Principal) -> BusinessOut:
    role = principal.roles.get(business.id)
    if role is None and principal.is_platform_admin:
        role = Role.PLATFORM_ADMIN
    return BusinessOut(
        name=business.name,
        display_name=business.display_name,
        description=business.description,
        created_at=business.created_at,
        role=role,
    )


@router.get("/businesses", response_model=Page[BusinessOut])
def list_businesses(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[BusinessOut]:
    """Businesses you belong to (all of them for a platform admin), by name."""
    stmt = select(Business)
    if not principal.is_platform_admin:
        stmt = stmt.where(Business.id.in_(principal.business_ids()))
    rows, nxt = page_of(session, stmt, key=Business.name, limit=limit, cursor=cursor)
    return Page[BusinessOut](items=[business_out(b, principal) for b in rows], next_cursor=nxt)


@router.post("/businesses", response_model=BusinessOut, status_code=201)
def create_business(
    body: BusinessCreate, request: Request, principal: PrincipalDep, session: SessionDep
) -> BusinessOut:
    ctx = audit(
        request, action="business.create", business=body.name, target=f"business/{body.name}"
    )
    require_platform_admin(principal, "create businesses")
    if session.scalars(select(Business.id).where(Business.name == body.name)).first():
        raise Conflict(f"business '{body.name}' already exists")
    admins = []
    for username in dict.fromkeys(body.admins):
        user = session.scalars(select(User).where(User.username == username)).one_or_none()
        if user is None:
            raise InvalidRequest(f"admins: user '{username}' does not exist")
        admins.append(user)
    business = Business(
        name=body.name,
        display_name=body.display_name,
        description=body.description,
        created_at=utcnow(),
    )
    session.add(business)
    session.flush()
    for user in admins:
        session.add(
            Membership(business_id=business.id, user_id=user.id, role=Role.BUSINESS_ADMIN.value)
        )
    ctx.business_id = business.id
    ctx.summary = f"created business '{body.name}'" + (
        f" with admins {', '.join(u.username for u in admins)}" if admins else ""
    )
    events.emit(
        session,
        object_kind="Business",
        object_name=business.name,
        business_id=business.id,
        business=business.name,
        reason="Created",
        message="business created",
        user=principal.username,
    )
    return business_out(business, principal)


@router.get("/businesses/{biz}", response_model=BusinessOut)
def get_business(principal: PrincipalDep, session: SessionDep, biz: str = BizPath) -> BusinessOut:
    return business_out(business_for(session, principal, biz, Permission.BUSINESS_READ), principal)


@router.patch("/businesses/{biz}", response_model=BusinessOut)
def update_business(
    body: BusinessUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> BusinessOut:
    ctx = audit(request, action="business.update", target=f"business/{biz}")
    business = business_for(session, principal, biz, Permission.BUSINESS_UPDATE, ctx=ctx)
    changed = []
    if body.display_name is not None:
        business.display_name = body.display_name
        changed.append("display name")
    if body.description is not None:
        business.description = body.description
        changed.append("description")
    ctx.summary = "updated " + (", ".join(changed) or "nothing")
    return business_out(business, principal)


@router.delete("/businesses/{biz}", status_code=204)
def delete_business(
    request: Request, principal: PrincipalDep, session: SessionDep, biz: str = BizPath
) -> Response:
    """Deletes a business that holds no resources; its quotas and memberships go with it."""
    ctx = audit(request, action="business.delete", target=f"business/{biz}")
    business = business_for(session, principal, biz, Permission.BUSINESS_READ, ctx=ctx)
    require_platform_admin(principal, "delete businesses")
    in_use = [
        q
        for q in session.scalars(select(Quota).where(Quota.business_id == business.id))
        if not q.used().is_zero()
    ]
    if in_use:
        raise Conflict(
            f"business '{biz}' still holds resources in {len(in_use)} cluster(s); "
            "delete its apps and disks first"
        )
    session.delete(business)
    ctx.summary = f"deleted business '{biz}'"
    return Response(status_code=204)


# --- members -----------------------------------------------------------------------------


@router.get("/businesses/{biz}/members", response_model=list[MemberOut])
def list_members(
    principal: PrincipalDep, session: SessionDep, biz: str = BizPath
) -> list[MemberOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    rows = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.business_id == business.id)
        .order_by(User.username)
    )
    return [
        MemberOut(
            username=u.username, display_name=u.display_name, role=Role(m.role), since=m.created_at
        )
        for u, m in rows
    ]


def _admin_count(session: SessionDep, business_id: int) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.business_id == business_id, Membership.role == Role.BUSINESS_ADMIN.value
            )
        )
        or 0
    )


def _guard_last_admin(
    session: SessionDep,
    principal: Principal,
    business: Business,
    membership: Membership,
    ctx: AuditContext,
) -> None:
    """A business admin may not strand the business without one; platform admins may."""
    if principal.is_platform_admin or membership.role != Role.BUSINESS_ADMIN.value:
        return
    if _admin_count(session, business.id) <= 1:
        raise Conflict(
            f"this is the last business-admin of '{business.name}'; make someone else "
            "business-admin first"
        )


@router.put("/businesses/{biz}/members/{username}", response_model=MemberOut)
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
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        raise NotFound(f"user '{username}' not found; a platform admin creates users")
    membership = session.scalars(
        select(Membership).where(
            Membership.business_id == business.id, Membership.user_id == user.id
        )
    ).one_or_none()
    if membership is None:
        membership = Membership(
            business_id=business.id, user_id=user.id, role=body.role, created_at=utcnow()
        )
        session.add(membership)
        ctx.summary = f"added {username} as {body.role}"
    else:
        if body.role != Role.BUSINESS_ADMIN.value:
            _guard_last_admin(session, principal, business, membership, ctx)
        ctx.summary = f"changed {username} from {membership.role} to {body.role}"
        membership.role = body.role
    session.flush()
    return MemberOut(
        username=user.username,
        display_name=user.display_name,
        role=Role(body.role),
        since=membership.created_at,
    )


@router.delete("/businesses/{biz}/members/{username}", status_code=204)
def delete_member(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    username: str = UserPath,
) -> Response:
    ctx = audit(request, action="member.delete", target=f"business/{biz}/member/{username}")
    business = business_for(session, principal, biz, Permission.MEMBER_MANAGE, ctx=ctx)
    membership = session.scalars(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.business_id == business.id, User.username == username)
    ).one_or_none()
    if membership is None:
        raise NotFound(f"'{username}' is not a member of business '{biz}'")
    _guard_last_admin(session, principal, business, membership, ctx)
    session.delete(membership)
    ctx.summary = f"removed {username} ({membership.role})"
    return Response(status_code=204)
