"""Who is calling: passwords checked against their argon2 hashes, sessions started, tokens resolved.

``check_credentials`` verifies a login (slowed by ``gaia.security.LoginThrottle``; an unknown
user costs the same time as a wrong password), ``start_session`` issues a session token (only its
SHA-256 is stored), and ``principal_for`` resolves a bearer token to the user and their roles,
refusing revoked, expired and disabled ones. The API's dependencies (``gaia.api.deps``) and the
login route call these; nothing here speaks HTTP.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Unauthenticated
from gaia.domain.rbac import Role
from gaia.security import (
    DUMMY_PASSWORD_HASH,
    LoginThrottle,
    new_token,
    token_digest,
    verify_password,
)
from gaia.store.models import Membership, Token, User, utcnow


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
    session: Session, username: str, password: str, *, throttle: LoginThrottle
) -> User:
    now = utcnow()
    throttle.check(username, now)
    if not username.isprintable():
        # No account can have such a name (and PostgreSQL cannot even compare a NUL byte).
        throttle.failed(username, now)
        raise Unauthenticated("wrong username or password")
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    # Verify against a dummy hash for unknown users so both failures take the same time.
    ok = verify_password(user.password_hash if user else DUMMY_PASSWORD_HASH, password)
    if user is None or not ok or user.disabled:
        throttle.failed(username, now)
        raise Unauthenticated("wrong username or password")
    throttle.succeeded(username)
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
