"""Who is calling: passwords checked against their argon2 hashes, sessions started, tokens resolved.

``check_credentials`` verifies a login (throttled per client address by ``gaia.store.throttle``
before any password is checked; an unknown user costs the same time as a wrong password),
``start_session`` issues a session token (only its SHA-256 is stored), and ``principal_for``
resolves a bearer token to the user and their roles, refusing revoked, expired and disabled
ones. The API's dependencies (``gaia.api.deps``) and the login route call these; nothing here
speaks HTTP.

A user's API tokens (long-lived, for automation) live here too: ``create_api_token`` returns the
token's value once, as the session token is, and ``revoke_api_token``/``end_session`` stamp
``revoked_at`` instead of deleting, so ``GET /tokens`` still lists a revoked token.
See docs/architecture.md, "store".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, NotFound, TooManyRequests, Unauthenticated
from gaia.domain.rbac import Role
from gaia.security import DUMMY_PASSWORD_HASH, new_token, token_digest, verify_password
from gaia.store.database import Database
from gaia.store.models import Membership, Token, User, utcnow
from gaia.store.throttle import LoginThrottle


@dataclass
class Principal:
    """The caller of one request: the user behind the token, and their role in each business."""

    user_id: int
    username: str
    is_platform_admin: bool
    token_id: int
    token_kind: str
    roles: dict[int, Role] = field(default_factory=dict)

    def business_ids(self) -> set[int]:
        return set(self.roles)

    def business_scope(self) -> set[int] | None:
        """The businesses whose objects the caller may see: ``None`` (all) for a platform
        admin, else those they are a member of. Store queries filter with it."""
        return None if self.is_platform_admin else self.business_ids()


def start_session(session: Session, user: User, ttl_seconds: int) -> tuple[str, Token]:
    token = new_token()
    now = utcnow()
    row = Token(
        user_id=user.id,
        kind="session",
        name="login",
        digest=token_digest(token),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=ttl_seconds),
    )
    session.add(row)
    session.flush()
    return token, row


def check_credentials(
    db: Database, username: str, password: str, *, client: str, throttle: LoginThrottle
) -> User:
    """The user whose password this is, or ``Unauthenticated``; ``TooManyRequests`` when
    ``client`` has failed too often (then no password is verified at all).

    Takes the database, not the request's transaction: the throttle commits its counts in
    transactions of its own (a failure must be counted although the request fails), and the
    user is read in a read transaction, so no write lock is held while argon2 runs.
    """
    attempt = throttle.admit(client=client, username=username)
    if not username.isprintable():
        # No account can have such a name (and PostgreSQL cannot even compare a NUL byte).
        raise Unauthenticated("wrong username or password")
    with db.read_session() as session:
        user = session.scalars(select(User).where(User.username == username)).one_or_none()
    # Verify against a dummy hash for unknown users so both failures take the same time.
    try:
        ok = verify_password(user.password_hash if user else DUMMY_PASSWORD_HASH, password)
    except TooManyRequests:
        throttle.not_checked(attempt)  # shed before argon2 ran: not a guess
        raise
    if user is None or not ok or user.disabled:
        raise Unauthenticated("wrong username or password")
    throttle.succeeded(attempt)
    return user


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


def end_session(session: Session, *, token_id: int) -> None:
    """Revoke the token of this request (logging out); a revoked one stays revoked."""
    tok = session.get(Token, token_id)
    if tok is not None and tok.revoked_at is None:
        tok.revoked_at = utcnow()


def api_tokens_of(session: Session, *, user_id: int) -> list[Token]:
    """The user's API tokens (not login sessions), newest first, revoked ones included."""
    return list(
        session.scalars(
            select(Token)
            .where(Token.user_id == user_id, Token.kind == "api")
            .order_by(Token.id.desc())
        )
    )


def create_api_token(
    session: Session, *, user_id: int, name: str, expires_in_days: int | None
) -> tuple[str, Token]:
    """A new API token and its value (shown once); ``Conflict`` if the user already has an
    active token of that name. Only the value's SHA-256 is stored."""
    clash = session.scalars(
        select(Token.id).where(
            Token.user_id == user_id,
            Token.kind == "api",
            Token.name == name,
            Token.revoked_at.is_(None),
        )
    ).first()
    if clash is not None:
        raise Conflict(f"you already have an active token named '{name}'")
    token = new_token()
    now = utcnow()
    row = Token(
        user_id=user_id,
        kind="api",
        name=name,
        digest=token_digest(token),
        created_at=now,
        expires_at=now + dt.timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(row)
    session.flush()
    return token, row


def revoke_api_token(session: Session, *, user_id: int, token_id: int) -> Token:
    """Revoke one of the user's API tokens; another user's token answers as a missing one."""
    tok = session.get(Token, token_id)
    if tok is None or tok.kind != "api" or tok.user_id != user_id:
        raise NotFound(f"token {token_id} not found")
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
    return tok
