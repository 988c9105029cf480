"""Users: platform admins create and manage accounts; everyone manages their own profile."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    inline_read,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.base import USERNAME_PATTERN, Page
from gaia.api.schemas.identity import UserCreate, UserOut, UserUpdate
from gaia.domain.errors import Forbidden, InvalidRequest, NotFound
from gaia.security import verify_password
from gaia.store import users
from gaia.store.models import User

router = APIRouter(tags=["users"], route_class=CommittingRoute)
UsernamePath = Path(pattern=USERNAME_PATTERN, max_length=63)


@router.get("/users", response_model=Page[UserOut])
def list_users(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[UserOut]:
    require_platform_admin(principal, "list users")
    rows, nxt = users.page_users(session, limit=limit, cursor=cursor)
    return Page[UserOut](items=[UserOut.of(u) for u in rows], next_cursor=nxt)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(
    body: UserCreate, request: Request, principal: PrincipalDep, session: SessionDep
) -> UserOut:
    ctx = audit(request, action="user.create", target=f"user/{body.username}")
    require_platform_admin(principal, "create users")
    user = users.create_user(
        session,
        username=body.username,
        display_name=body.display_name,
        password=body.password,
        platform_admin=body.platform_admin,
        language=body.language,
    )
    ctx.summary = f"created user '{body.username}'" + (
        " as platform-admin" if body.platform_admin else ""
    )
    return UserOut.of(user)


def _visible_user(session: SessionDep, principal: PrincipalDep, username: str) -> User:
    user = users.find_user(session, username)
    if user is None or (not principal.is_platform_admin and user.id != principal.user_id):
        raise NotFound(f"user '{username}' not found")
    return user


@router.get("/users/{username}", response_model=UserOut)
@inline_read
def get_user(principal: PrincipalDep, session: SessionDep, username: str = UsernamePath) -> UserOut:
    return UserOut.of(_visible_user(session, principal, username))


@router.patch("/users/{username}", response_model=UserOut)
def update_user(
    body: UserUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    username: str = UsernamePath,
) -> UserOut:
    ctx = audit(request, action="user.update", target=f"user/{username}")
    user = _visible_user(session, principal, username)
    is_self = user.id == principal.user_id
    if body.platform_admin is not None or body.disabled is not None:
        require_platform_admin(principal, "change roles or disable accounts")
        if is_self and (body.platform_admin is False or body.disabled):
            raise Forbidden("you cannot remove your own platform-admin role or disable yourself")
    if body.password is not None:
        if is_self:
            if body.current_password is None or not verify_password(
                user.password_hash, body.current_password
            ):
                raise InvalidRequest("current_password is missing or wrong")
        elif not principal.is_platform_admin:
            raise Forbidden("only a platform administrator may reset another user's password")
    changes = users.update_user(
        session,
        user=user,
        password=body.password,
        display_name=body.display_name,
        language=body.language,
        platform_admin=body.platform_admin,
        disabled=body.disabled,
        # A new password or a disabled account ends every session and token but the caller's.
        keep_token_id=principal.token_id if is_self else None,
    )
    ctx.summary = "updated " + (", ".join(changes) or "nothing")
    return UserOut.of(user)
