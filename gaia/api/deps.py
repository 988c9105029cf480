"""Dependencies every route uses: the platform state, a DB session, the caller, a business.

Authentication: ``Authorization: Bearer <token>`` (sessions from login and API tokens) or the
console's ``gaia_session`` cookie. The token's SHA-256 is looked up; a revoked, expired or
disabled-user token is refused with 401.

Tenancy: ``business_for`` resolves a business by name *for this caller*. A business the caller
is not a member of answers exactly like one that does not exist (404), so names do not leak; a
member whose role lacks the permission gets 403 with the role and permission named.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Forbidden, NotFound, Unauthenticated
from gaia.domain.rbac import Permission, Role, allows
from gaia.security import token_digest
from gaia.store.models import Business, Membership, Token, User, utcnow

if TYPE_CHECKING:
    from gaia.api.app import Platform

SESSION_COOKIE = "gaia_session"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Writing last_used_at on every request would serialise readers behind SQLite's write lock;
# a token's last use is shown to a precision of minutes.
LAST_USED_PRECISION = dt.timedelta(minutes=5)


@dataclass
class AuditContext:
    """What the operation record of this request will say; routes fill in the details."""

    actor: str = "anonymous"
    action: str = ""
    business: str = ""
    business_id: int | None = None
    cluster: str = ""
    target: str = ""
    summary: str = ""
    error: str = ""
    # A POST that only asks a question (an admission check) changes nothing: not recorded.
    read_only: bool = False


@dataclass
class Principal:
    user_id: int
    username: str
    is_platform_admin: bool
    token_id: int
    token_kind: str
    roles: dict[int, Role] = field(default_factory=dict)

    def business_ids(self) -> set[int]:
        return set(self.roles)


def platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def audit(request: Request) -> AuditContext:
    ctx = getattr(request.state, "audit", None)
    if ctx is None:
        ctx = AuditContext()
        request.state.audit = ctx
    return ctx


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed when the route returns without an error."""
    write = request.method in MUTATING_METHODS
    session = platform(request).db.new_session(write=write)
    try:
        yield session
        if write:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(db_session, scope="function")]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        return value.strip()
    return request.cookies.get(SESSION_COOKIE)


def authenticate(session: Session, token: str, *, now: dt.datetime | None = None) -> Principal:
    now = now or utcnow()
    row = session.execute(
        select(Token, User)
        .join(User, User.id == Token.user_id)
        .where(Token.digest == token_digest(token))
    ).one_or_none()
    if row is None:
        raise Unauthenticated("the token is not valid; log in again or create a new API token")
    tok, user = row
    if tok.revoked_at is not None:
        raise Unauthenticated("the token was revoked")
    if tok.expires_at is not None and tok.expires_at <= now:
        raise Unauthenticated("the session expired; log in again")
    if user.disabled:
        raise Unauthenticated("the account is disabled")
    roles = {
        business_id: Role(role)
        for business_id, role in session.execute(
            select(Membership.business_id, Membership.role).where(Membership.user_id == user.id)
        )
    }
    return Principal(
        user_id=user.id,
        username=user.username,
        is_platform_admin=user.is_platform_admin,
        token_id=tok.id,
        token_kind=tok.kind,
        roles=roles,
    )


def current_principal(request: Request, session: SessionDep) -> Principal:
    ctx = audit(request)
    token = _bearer(request)
    if not token:
        raise Unauthenticated("log in first: send 'Authorization: Bearer <token>'")
    principal = authenticate(session, token)
    ctx.actor = principal.username
    _touch(request, session, principal)
    return principal


def _touch(request: Request, session: Session, principal: Principal) -> None:
    """Record the token's last use, at most every few minutes.

    A mutating request already holds a write transaction, and on SQLite a second one would
    wait for it forever, so the update rides along; a read opens its own short write.
    """
    plat = platform(request)
    now = utcnow()
    last = plat.token_last_touch.get(principal.token_id)
    if last is not None and now - last < LAST_USED_PRECISION:
        return
    plat.token_last_touch[principal.token_id] = now
    if request.method in MUTATING_METHODS:
        tok = session.get(Token, principal.token_id)
        if tok is not None:
            tok.last_used_at = now
        return
    with plat.db.write_session() as own:
        tok = own.get(Token, principal.token_id)
        if tok is not None:
            tok.last_used_at = now


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_platform_admin(principal: Principal, what: str) -> None:
    if not principal.is_platform_admin:
        raise Forbidden(f"only a platform administrator may {what}")


def business_for(
    session: Session,
    principal: Principal,
    name: str,
    permission: Permission,
    *,
    ctx: AuditContext | None = None,
) -> Business:
    if ctx is not None:
        ctx.business = name
    business = session.scalars(select(Business).where(Business.name == name)).one_or_none()
    role = principal.roles.get(business.id) if business is not None else None
    if business is None or (role is None and not principal.is_platform_admin):
        raise NotFound(f"business '{name}' not found")
    if ctx is not None:
        ctx.business_id = business.id
    if principal.is_platform_admin or allows(role, permission):
        return business
    raise Forbidden(
        f"your role '{role}' in business '{name}' does not allow '{permission.value}'",
        details={"role": role, "permission": permission.value},
    )
