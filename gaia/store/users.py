"""User accounts at rest: create, find, change, and what a change does to the user's tokens.

Routes decide *who* may do what (a platform admin changes roles, a user their own password);
this module does the writing and keeps the one rule that belongs to the data: a new password or
a disabled account ends every session and API token of the user, except the caller's own token
when users change their own password (they stay logged in). See docs/architecture.md, "store".
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict
from gaia.security import hash_password
from gaia.store.models import Business, Membership, Token, User, utcnow
from gaia.store.paging import page_of


def page_users(
    session: Session, *, limit: int, cursor: str | None
) -> tuple[list[User], str | None]:
    """Every account, by username."""
    return page_of(session, select(User), key=User.username, limit=limit, cursor=cursor)


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def count_users(session: Session) -> int:
    return session.scalar(select(func.count(User.id))) or 0


def create_user(
    session: Session,
    *,
    username: str,
    display_name: str,
    password: str,
    platform_admin: bool,
    language: str,
) -> User:
    """A new account; ``Conflict`` if the username is taken. Only the password's hash is kept."""
    if session.scalars(select(User.id).where(User.username == username)).first():
        raise Conflict(f"user '{username}' already exists")
    user = User(
        username=username,
        display_name=display_name,
        password_hash=hash_password(password),
        is_platform_admin=platform_admin,
        language=language,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    return user


def update_user(
    session: Session,
    *,
    user: User,
    password: str | None = None,
    display_name: str | None = None,
    language: str | None = None,
    platform_admin: bool | None = None,
    disabled: bool | None = None,
    keep_token_id: int | None = None,
) -> list[str]:
    """Apply the fields given (``None``: unchanged) and say what changed, for the record.

    A new password or disabling the account revokes every live token of the user but
    ``keep_token_id`` (the caller's own, when they change their own password).
    """
    changes = []
    if password is not None:
        user.password_hash = hash_password(password)
        changes.append("password changed")
    if display_name is not None:
        user.display_name = display_name
        changes.append("display name")
    if language is not None:
        user.language = language
        changes.append(f"language={language}")
    if platform_admin is not None:
        user.is_platform_admin = platform_admin
        changes.append(f"platform_admin={platform_admin}")
    if disabled is not None:
        user.disabled = disabled
        changes.append(f"disabled={disabled}")
    if password is not None or disabled:
        now = utcnow()
        for tok in session.scalars(
            select(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None))
        ):
            if tok.id != keep_token_id:
                tok.revoked_at = now
    return changes


def memberships_of(session: Session, *, user_id: int) -> list[tuple[str, str]]:
    """(business name, role) of each business the user belongs to, by business name."""
    rows = session.execute(
        select(Business.name, Membership.role)
        .join(Membership, Membership.business_id == Business.id)
        .where(Membership.user_id == user_id)
        .order_by(Business.name)
    )
    return [(name, role) for name, role in rows]
