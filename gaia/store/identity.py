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

``PrincipalCache`` keeps resolved principals by token digest for a few seconds, because
resolving one costs two queries (the token with its user, then the memberships) on every request:
about 38 % of a single read. How long a change takes to reach it:

- on this replica, at once: every commit that touches a user, a membership, a business's
  removal or a token (other than its last-use stamp) clears the cache right after it commits
  (``PrincipalCache.watch``), so a revoked token, a disabled user, a new password or a changed
  role meets the next request. A lookup that read the old rows before such a commit cannot put
  its stale answer back: entries are only stored under the generation their lookup started in;
- on another replica (several share one PostgreSQL), within ``ttl_seconds`` (3 s by default,
  ``GAIA_PRINCIPAL_CACHE_SECONDS``; 0 turns the cache off): nothing tells that replica's cache, so
  an entry simply lives no longer than that. A generation counter in the store would make the
  change visible at once, but reading it is a query per request again, the cost the cache is there
  to remove; a bound of seconds is the same trade Kubernetes' API server makes (it caches a
  webhook's token reviews, ``--authentication-token-webhook-cache-ttl``, two minutes by default).

Every door that resolves a platform user's token shares the platform's one cache (``cache=
plat.principals``), so the bounds above hold at each: the API's bearer and session, the registry's
token and notification endpoints, the metrics scrape, Alertmanager's webhook, the CNI's IPAM calls
and the console's terminal socket. Tokens that are not a user's (the metrics and Alertmanager
tokens of the settings, a cluster's IPAM node token, the registry's own) are compared where they
are taken and never reach it.

A token's own expiry is checked on every hit. Failed lookups are not cached. The cache is
bounded (``max_entries``, least recently used first out). The caching itself (TTL, clearing on
commit, generations) is ``gaia.store.cache.CommitClearedCache``, shared with the P2P routes'
cluster lookup.
See docs/architecture.md, "store".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, NotFound, TooManyRequests, Unauthenticated
from gaia.domain.rbac import Role
from gaia.security import DUMMY_PASSWORD_HASH, new_token, token_digest, verify_password
from gaia.store.cache import CommitClearedCache
from gaia.store.database import Database
from gaia.store.models import Business, Membership, Token, User, utcnow
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


def authenticate(
    session: Session,
    token: str,
    *,
    now: dt.datetime | None = None,
    cache: PrincipalCache | None = None,
) -> Principal:
    """The principal behind ``token``, or ``Unauthenticated`` (unknown, revoked, expired, or a
    disabled user). With ``cache``, a principal resolved moments ago is answered from it."""
    now = now or utcnow()
    digest = token_digest(token)
    if cache is None:
        return _resolve(session, digest, now=now)[0]
    hit = cache.get(digest, now=now)
    if hit is not None:
        return hit
    generation = cache.generation
    principal, expires_at = _resolve(session, digest, now=now)
    cache.put(digest, principal, expires_at=expires_at, generation=generation)
    return principal


def cached_principal(
    token: str, *, cache: PrincipalCache, now: dt.datetime | None = None
) -> Principal | None:
    """The principal behind ``token`` if ``cache`` holds it (``Unauthenticated`` if it has
    expired since), ``None`` on a miss: no database, so an event loop may ask."""
    return cache.get(token_digest(token), now=now or utcnow())


def _resolve(
    session: Session, digest: str, *, now: dt.datetime
) -> tuple[Principal, dt.datetime | None]:
    """The principal of the token with SHA-256 ``digest`` and the token's expiry."""
    row = session.execute(
        select(Token, User).join(User, User.id == Token.user_id).where(Token.digest == digest)
    ).one_or_none()
    if row is None:
        raise Unauthenticated("the token is not valid; log in again or create a new API token")
    tok, user = row
    if tok.revoked_at is not None:
        raise Unauthenticated("the token was revoked")
    _refuse_expired(tok.expires_at, now=now)
    if user.disabled:
        raise Unauthenticated("the account is disabled")
    roles = {
        business_id: Role(role)
        for business_id, role in session.execute(
            select(Membership.business_id, Membership.role).where(Membership.user_id == user.id)
        )
    }
    principal = Principal(
        user_id=user.id,
        username=user.username,
        is_platform_admin=user.is_platform_admin,
        token_id=tok.id,
        token_kind=tok.kind,
        roles=roles,
    )
    return principal, tok.expires_at


def _refuse_expired(expires_at: dt.datetime | None, *, now: dt.datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise Unauthenticated("the session expired; log in again")


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    expires_at: dt.datetime | None  # the token's own expiry


class PrincipalCache:
    """Resolved principals by token digest, each for ``ttl_seconds`` at most (see the module's
    docstring for what reaches it how fast): a ``CommitClearedCache`` (``gaia.store.cache``)
    that hands out copies and checks the token's expiry on every hit."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 3.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: CommitClearedCache[str, _Cached] = CommitClearedCache(
            ttl_seconds=ttl_seconds, max_entries=max_entries, clock=clock
        )

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def generation(self) -> int:
        return self._cache.generation

    def get(self, digest: str, *, now: dt.datetime) -> Principal | None:
        """A copy of the cached principal (routes may not change the shared one), ``None`` on
        a miss; ``Unauthenticated`` when the token has expired since it was cached."""
        entry = self._cache.get(digest)
        if entry is None:
            return None
        _refuse_expired(entry.expires_at, now=now)
        return dataclasses.replace(entry.principal, roles=dict(entry.principal.roles))

    def put(
        self,
        digest: str,
        principal: Principal,
        *,
        expires_at: dt.datetime | None,
        generation: int,
    ) -> None:
        """Keep ``principal``, resolved by a lookup that began in ``generation``, unless the
        cache was cleared since (the lookup may have read rows that have changed)."""
        entry = _Cached(
            principal=dataclasses.replace(principal, roles=dict(principal.roles)),
            expires_at=expires_at,
        )
        self._cache.put(digest, entry, generation=generation)

    def clear(self) -> None:
        self._cache.clear()

    def watch(self, db: Database) -> None:
        """Clear the cache after each commit on ``db`` that changed who may do what."""
        self._cache.watch(db, changed=_identity_changed, bulk=(Membership, User, Token, Business))


def _identity_changed(session: Session) -> bool:
    """Whether a flush changed a principal: a membership added, changed or removed, a user
    changed or deleted, a token revoked or deleted, a business removed (SQLite may give its id
    to the next one). A new user or token changes no principal yet, a token's last-use stamp
    none. (A bulk UPDATE or DELETE on these tables counts too: ``watch``'s ``bulk``.)"""
    return (
        any(isinstance(obj, Membership) for obj in session.new)
        or any(isinstance(obj, (Membership, User, Token, Business)) for obj in session.deleted)
        or any(
            isinstance(obj, (Membership, User)) or (isinstance(obj, Token) and _token_changed(obj))
            for obj in session.dirty
        )
    )


def _token_changed(tok: Token) -> bool:
    return any(
        attr.history.has_changes() for attr in inspect(tok).attrs if attr.key != "last_used_at"
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
