"""Login, logout, the caller's own identity and API tokens.

``POST /auth/login`` verifies an argon2 hash and returns a session token (the console receives
the same token as an HttpOnly cookie). Failed logins are throttled per client address
(``gaia.api.client_address``: the socket peer, or what a trusted proxy forwarded) and username,
and per client address across usernames, in buckets kept in the database
(``gaia.store.throttle``): a full bucket answers 429 with ``Retry-After`` before any password is
checked. One address's failures never lock the user out from another address.

The route is a sync function, so FastAPI runs it in a worker thread: argon2's tens of
milliseconds of CPU never stall the event loop, and ``gaia.security`` bounds how many run at once.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from gaia.api.client_address import request_client_address
from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    inline_read,
    inline_write,
    platform,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import Page
from gaia.api.schemas.identity import (
    LoginRequest,
    LoginResponse,
    MembershipOut,
    MeOut,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserOut,
)
from gaia.domain.errors import TooManyRequests, Unauthenticated
from gaia.domain.rbac import Role
from gaia.store import identity, users
from gaia.store.models import Token
from gaia.store.throttle import REFUSAL_RECORD_SECONDS

router = APIRouter(tags=["auth"], route_class=CommittingRoute)


@router.post("/auth/login", response_model=LoginResponse)
def login(body: LoginRequest, request: Request, session: SessionDep) -> LoginResponse:
    ctx = audit(request)
    ctx.actor = body.username if len(body.username) <= 63 else "anonymous"
    ctx.action = "auth.login"
    ctx.target = f"user/{body.username}"
    plat = platform(request)
    client = request_client_address(request)
    # The request's own transaction is not touched before the password is checked: the
    # throttle writes in transactions of its own (on SQLite one writer at a time).
    try:
        user = identity.check_credentials(
            plat.db, body.username, body.password, client=client, throttle=plat.login_throttle
        )
    except TooManyRequests:
        # A flood's refusals are recorded once per address and minute, not one row each: the
        # record says the address was refused; ten thousand copies would say nothing more and
        # would cost every other login a share of the store's writes.
        if not plat.login_throttle.first_refusal(client):
            ctx.repeat = True
        else:
            ctx.summary = (
                "refused: too many failed logins from this address (further refusals "
                f"from it are recorded at most once every {REFUSAL_RECORD_SECONDS:g} s)"
            )
        raise
    token, row = identity.start_session(session, user, plat.settings.session_ttl_seconds)
    ctx.summary = "logged in"
    assert row.expires_at is not None
    return LoginResponse(token=token, expires_at=row.expires_at, user=UserOut.of(user))


@router.post("/auth/logout", status_code=204)
@inline_write
def logout(request: Request, principal: PrincipalDep, session: SessionDep) -> Response:
    ctx = audit(request, action="auth.logout", target=f"user/{principal.username}")
    identity.end_session(session, token_id=principal.token_id)
    ctx.summary = f"revoked {principal.token_kind} token"
    return Response(status_code=204)


@router.get("/users/me", response_model=MeOut, tags=["users"])
@inline_read
def me(principal: PrincipalDep, session: SessionDep) -> MeOut:
    user = users.user_by_id(session, principal.user_id)
    if user is None:
        raise Unauthenticated("the account no longer exists")
    return MeOut(
        **UserOut.of(user).model_dump(),
        memberships=[
            MembershipOut(business=n, role=Role(r))
            for n, r in users.memberships_of(session, user_id=user.id)
        ],
    )


def token_out(tok: Token) -> TokenOut:
    return TokenOut(
        id=tok.id,
        name=tok.name,
        kind=tok.kind,
        created_at=tok.created_at,
        expires_at=tok.expires_at,
        last_used_at=tok.last_used_at,
        revoked_at=tok.revoked_at,
    )


@router.get("/tokens", response_model=Page[TokenOut], tags=["tokens"])
def list_tokens(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[TokenOut]:
    """Your API tokens (not login sessions), newest first, revoked ones included. One user's
    tokens are few: they are paged in memory."""
    rows, nxt = page_in_memory(
        identity.api_tokens_of(session, user_id=principal.user_id),
        key=lambda t: t.id,
        kind=f"tokens@user:{principal.user_id}",
        limit=limit,
        cursor=cursor,
        descending=True,
        numeric=True,
    )
    return Page[TokenOut](items=[token_out(t) for t in rows], next_cursor=nxt)


@router.post("/tokens", response_model=TokenCreated, status_code=201, tags=["tokens"])
@inline_write
def create_token(
    body: TokenCreate, request: Request, principal: PrincipalDep, session: SessionDep
) -> TokenCreated:
    """A long-lived token for automation, acting as you. The value is shown only here."""
    ctx = audit(request, action="token.create", target=f"token/{body.name}")
    token, row = identity.create_api_token(
        session, user_id=principal.user_id, name=body.name, expires_in_days=body.expires_in_days
    )
    ctx.summary = f"created API token '{body.name}'" + (
        f" expiring in {body.expires_in_days} days" if body.expires_in_days else ""
    )
    return TokenCreated(**token_out(row).model_dump(), token=token)


@router.delete("/tokens/{token_id}", status_code=204, tags=["tokens"])
@inline_write
def revoke_token(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    token_id: int = Path(ge=1, le=2**31 - 1),
) -> Response:
    ctx = audit(request, action="token.revoke", target=f"token/{token_id}")
    tok = identity.revoke_api_token(session, user_id=principal.user_id, token_id=token_id)
    ctx.summary = f"revoked API token '{tok.name}'"
    return Response(status_code=204)
