"""Dependencies every route uses: the platform state, a DB session, the caller, a business.

Authentication: ``Authorization: Bearer <token>`` (sessions from login and API tokens) or, for
reads only, the console's ``gaia_session`` cookie (a change by cookie is refused with 403: any
site's page can make a browser send it; see ``gaia.console.browser_guard``). The token's SHA-256
is looked up (through the platform's ``PrincipalCache``, ``gaia.store.identity``: seconds old at
most, cleared by any change to tokens, users or memberships on this replica); a revoked, expired
or disabled-user token is refused with 401.

Tenancy: ``business_for`` resolves a business by name *for this caller*. A business the caller
is not a member of answers exactly like one that does not exist (404), so names do not leak; a
member whose role lacks the permission gets 403 with the role and permission named.
``writable_app`` does the same for an app a route is about to change (``WritableApp``).

Transactions: ``db_session`` gives each request one transaction, a writing one (SQLite's queued
``BEGIN IMMEDIATE``, ``gaia.store.database``) for POST/PUT/PATCH/DELETE. A change that succeeds
has its operation record added to that same transaction, so the write lock is taken once per
call; a call that fails rolls back, and ``gaia.api.audit`` records the refusal afterwards in a
short transaction of its own.

Threads: every hop between the event loop and a worker thread is a wait for a thread to be
scheduled, and on SQLite a write transaction holds the writer turn through every hop it spans.
So a sync route's change commits in the route's own worker thread the moment it returns
(``commits_in_route_thread``, by the API's route class ``CommittingRoute``), the session is
made on the event loop (no I/O yet) and ended in one worker hop (none when nothing is left
open, nor for a read on SQLite), and a principal the cache holds is answered on the loop: a
sync read makes two hops (its route and the response's validation; three on PostgreSQL, with
the session's end) where it made five, a sync change one (its route, which commits; its
response, one object, is validated on the loop). A single-object read marked ``inline_read``
makes none on SQLite: it runs on the loop (its queries wait for no lock in WAL mode); nor does a
short change marked ``inline_write`` (it awaits its writer turn on the loop, then begins, writes
and commits there in one go).
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy import insert, select
from sqlalchemy.orm import Session
from starlette.types import Scope

from gaia.domain.errors import Forbidden, NotFound, Unauthenticated
from gaia.domain.rbac import Permission, allows
from gaia.monitor.metrics.platform import route_template
from gaia.store import apps as store_apps
from gaia.store.clusters import cluster_named
from gaia.store.identity import Principal as Principal  # the caller, as routes name it
from gaia.store.identity import authenticate as authenticate
from gaia.store.identity import cached_principal
from gaia.store.models import App, Business, Cluster, OperationRecord, Token, utcnow

if TYPE_CHECKING:
    from gaia.platform import Platform

SESSION_COOKIE = "gaia_session"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Writing last_used_at on every request would serialise readers behind SQLite's write lock;
# a token's last use is shown to a precision of minutes.
LAST_USED_PRECISION = dt.timedelta(minutes=5)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
    # The request only relayed one API call, which wrote its own record (the console's login
    # form): a second record of it, accepted or refused, would say the same thing twice.
    delegated: bool = False
    # A repeat of a refusal recorded moments ago (a login flood's 429s): not recorded again.
    repeat: bool = False
    # (record id, status it names) once the record was written in the request's own
    # transaction (``db_session``): the recorder then only checks the status that was sent.
    written: tuple[int, int] | None = None

    def wants_record(self, *, status: int) -> bool:
        """Whether a request that ended ``status`` leaves a record (see the flags above)."""
        return not (self.delegated or self.repeat or (self.read_only and status < 400))

    def to_record(self, *, scope: Scope, method: str, status: int) -> OperationRecord:
        """The operation record this context describes, for a request that ended ``status``.
        Summaries come from the routes' validated fields, never from the request body."""
        return OperationRecord(**self.record_values(scope=scope, method=method, status=status))

    def record_values(self, *, scope: Scope, method: str, status: int) -> dict[str, Any]:
        """The columns of ``to_record``'s record (``id`` and ``at``: filled in by the insert)."""
        route = scope.get("route")
        action = self.action or (getattr(route, "name", "") or "unknown")
        client = scope.get("client")
        return dict(
            actor=_clean(self.actor, 63),
            business_id=self.business_id,
            business=_clean(self.business, 63),
            cluster=_clean(self.cluster, 63),
            action=_clean(action, 100),
            method=method,
            path=_clean(scope["path"], 500),
            target=_clean(self.target or scope["path"], 500),
            summary=_clean(self.summary, 4000),
            result="success" if status < 400 else "failure",
            status_code=status,
            error=_clean(self.error, 4000),
            client=_clean(client[0] if client else "", 100),
            touches=touched_apps(scope) if status < 400 else store_apps.TOUCHES_NOTHING,
        )


def _clean(text: str, limit: int) -> str:
    """Printable text only: paths and usernames arrive URL-decoded and may hold NUL bytes."""
    return _CONTROL.sub("\ufffd", text)[:limit]


def platform(request: Request) -> Platform:
    return request.app.state.platform  # type: ignore[no-any-return]


def audit(
    request: Request,
    *,
    action: str | None = None,
    target: str | None = None,
    business: str | None = None,
    cluster: str | None = None,
    summary: str | None = None,
) -> AuditContext:
    """This request's operation record (``gaia.api.audit``), with the fields given set: a route
    names its action and target first thing, so a refusal further down is recorded with them."""
    ctx = getattr(request.state, "audit", None)
    if ctx is None:
        ctx = AuditContext()
        request.state.audit = ctx
    for name, value in (
        ("action", action),
        ("target", target),
        ("business", business),
        ("cluster", cluster),
        ("summary", summary),
    ):
        if value is not None:
            setattr(ctx, name, value)
    return ctx


async def db_session(request: Request) -> AsyncIterator[Session]:
    """One transaction per request, committed when the route returns without an error; a
    change commits its own operation record with it (one write transaction per call).

    Made on the event loop (a session does no I/O before its first query) and ended in one
    worker thread: a sync dependency would cost a hop to a worker and back to the loop at
    each end, and every hop is a wait for a thread to be scheduled."""
    write = request.method in MUTATING_METHODS
    session = platform(request).db.new_session(write=write)
    if write:
        session.info[_COMMIT_CHANGE] = lambda: _commit_change(request, session)
    # Ending a read transaction on SQLite releases a lock in this process and never waits:
    # the loop does it. PostgreSQL's is a round trip, a write's a commit: a worker does those.
    local_end = not write and platform(request).db.is_sqlite
    if local_end:
        session.info[_LOCAL_READ] = True  # an ``inline_read`` route may run on the loop
    elif write and platform(request).db.is_sqlite:
        session.info[_LOCAL_WRITE] = platform(request).db  # so may an ``inline_write`` one
    try:
        yield session
    except BaseException:
        # FastAPI shields a dependency's teardown from cancellation: the session is ended
        await _end_session(session, commit=False, local=local_end)
        raise
    await _end_session(session, commit=True, local=local_end)


async def _end_session(session: Session, *, commit: bool, local: bool) -> None:
    if not local and (session.in_transaction() or (commit and _COMMIT_CHANGE in session.info)):
        await anyio.to_thread.run_sync(_end_transaction, session, commit)
    else:
        # nothing begun, committed in the route's thread, or a SQLite read: no I/O to wait for
        session.close()


def _end_transaction(session: Session, commit: bool) -> None:
    try:
        if commit:
            commit_change(session)
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Where a write session keeps the commit of its request's change until it has run.
_COMMIT_CHANGE = "gaia.commit_change"
# Set on a SQLite read session: its queries never wait for a lock (WAL) nor for a network.
_LOCAL_READ = "gaia.local_read"
# On a SQLite write session, its database: an ``inline_write`` route runs on the loop, its
# writer turn awaited there (``Database.begin_write_on_loop``).
_LOCAL_WRITE = "gaia.local_write"


async def begin_change(request: Request, session: Session) -> None:
    """Begin the write transaction of an async route that takes no principal (for one that
    does, ``current_principal`` begins it): its first query runs on the event loop's thread,
    which must never *block* on SQLite's writer turn (the holder may need the loop to reach its
    commit). On SQLite the turn is awaited on the loop, and a worker thread begins the
    transaction when another process holds SQLite's lock; PostgreSQL's writers take no turn."""
    if not (request.method in MUTATING_METHODS and platform(request).db.is_sqlite):
        return
    if session.in_transaction() or await platform(request).db.begin_write_on_loop(session):
        return
    await anyio.to_thread.run_sync(session.connection)


def commit_change(session: Session) -> None:
    """Commit the change of the request ``session`` belongs to, with its operation record,
    once: a sync route's in its own worker thread as soon as it returns
    (``commits_in_route_thread``), any other at the end of the request (``db_session``); a
    read session has nothing to commit."""
    commit = session.info.pop(_COMMIT_CHANGE, None)
    if commit is not None:
        commit()


# a business's apps (a new app: no one app's), and the routes under one app (its instances,
# versions, upgrades...): a change there is that app's
_APPS_ROUTE = "/api/v1/businesses/{biz}/apps"
_APP_ROUTE = _APPS_ROUTE + "/{app}"
# routes whose writes change nothing the app controller reads: who may call, alerting, backups,
# the registry's own bookkeeping, pipelines' definitions (a pipeline's deploy writes app versions
# and upgrades, which the store's change mark sees by themselves), a new business (no app, no
# quota yet). By route template; a write route in neither list concerns the whole platform (a
# full pass), so a route added later is safe whatever it does.
_NO_APP_STATE = (
    "/api/v1/alerts/",
    "/api/v1/auth/",
    "/api/v1/backups",
    "/api/v1/hooks/",
    "/api/v1/registry/",
    "/api/v1/tokens",
    "/api/v1/users",
    "/api/v1/businesses/{biz}/members/",
    "/api/v1/businesses/{biz}/pipelines",
    "/api/v1/clusters/{cluster}/alert-rules",
)


def touched_apps(scope: Scope) -> str:
    """What a successful write changed of what the app controller reads, as its operation
    record says it (``OperationRecord.touches``): one app ("<business>/<app>"), nothing (""),
    or anything ("*")."""
    template = route_template(scope)
    if template == _APP_ROUTE or template.startswith(_APP_ROUTE + "/"):
        params = scope.get("path_params") or {}
        return store_apps.touches_app(str(params["biz"]), str(params["app"]))
    if template == "/api/v1/businesses" or template.startswith(_NO_APP_STATE):
        return store_apps.TOUCHES_NOTHING
    return store_apps.TOUCHES_ALL


_INSERT_RECORD = insert(OperationRecord)


def _commit_change(request: Request, session: Session) -> None:
    record = _record_of_success(request)
    if record is not None:
        # one prepared INSERT on the transaction's connection, not the unit of work: 0.1 ms
        # against 0.3 ms for a flush of the one object (docs/benchmarks.md, session 40)
        inserted = session.connection().execute(_INSERT_RECORD, record).inserted_primary_key
        assert inserted is not None  # an INSERT of one row always has its key
        record_id = int(inserted[0])
    session.commit()
    if record is not None:
        audit(request).written = (record_id, record["status_code"])
    if route_template(request.scope).startswith(_APPS_ROUTE):
        # a change to an app: the controller looks at it now, not at its next resync; one
        # app's (not a new app's) is looked at alone
        app = store_apps.app_touched(touched_apps(request.scope))
        platform(request).nudge("apps", None if app is None else store_apps.AppWritten(*app))


class CommittingRoute(APIRoute):
    """The API's route class (``APIRouter(route_class=CommittingRoute)`` in every router): a
    sync route that changes something commits in its own worker thread the moment it returns
    (``commits_in_route_thread``). Wrapped here, before FastAPI reads the endpoint's signature,
    so every router that includes the route serves the wrapped one."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {m.upper() for m in kwargs.get("methods") or ()}
        if not inspect.iscoroutinefunction(endpoint):
            if methods & MUTATING_METHODS and getattr(endpoint, _INLINE_WRITE, False):
                endpoint = _runs_on_the_loop_in_its_turn(commits_in_route_thread(endpoint))
            elif methods & MUTATING_METHODS:
                endpoint = _in_one_worker_hop(commits_in_route_thread(endpoint))
            elif getattr(endpoint, _INLINE_READ, False):
                endpoint = _runs_inline_on_local_reads(endpoint)
        super().__init__(path, endpoint, **kwargs)


_INLINE_READ = "__gaia_inline_read__"
_INLINE_WRITE = "__gaia_inline_write__"
# Set on the coroutine that runs a sync route in a worker thread: the route is still sync for
# what depends on where its queries run (``current_principal``'s writer turn).
_IN_WORKER = "__gaia_in_worker__"


def runs_on_event_loop(endpoint: Callable[..., Any] | None) -> bool:
    """Whether a route's own code (its queries) runs on the event loop's thread."""
    return inspect.iscoroutinefunction(endpoint) and not getattr(endpoint, _IN_WORKER, False)


def _in_one_worker_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A sync route that changes something, made a coroutine that runs it in a worker thread:
    one hop between the event loop and a worker per request instead of FastAPI's two (a sync
    route's response is validated in a second worker hop; a coroutine's on the loop, where it
    costs the same CPU under the interpreter lock without the wait for a thread to be
    scheduled): server CPU per create 5 % less, measured with ``bench/api_ab.py``
    (docs/benchmarks.md, "session 35"). A change answers one object; a read's page may be
    large, and validated on the loop it would hold every other request: reads keep FastAPI's
    second hop (a single-object read runs inline, ``inline_read``)."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(endpoint, *args, **kwargs))

    setattr(run, _IN_WORKER, True)
    return run


def inline_read(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a sync read route whose work is a few indexed queries of the request's session and
    nothing else (no provider, no network, no file, no page of unbounded size): on SQLite it
    runs on the event loop instead of in a worker thread.

    A sync route costs two hops between the loop and a worker (the route, then the response's
    validation), each a wait for a thread to be scheduled and for the interpreter lock: run on
    the loop, a single-object read on SQLite answered 0.8-1.1 ms sooner at p50 and twice as many
    per second under 4 clients (docs/benchmarks.md, "single reads on the event loop"). A SQLite
    read in WAL mode waits for no lock, so the loop is held only for the queries' own CPU, which
    a worker thread would have held the interpreter lock for anyway. On PostgreSQL a query is a
    round trip: the route still runs in a worker there. ``CommittingRoute`` applies it (GET
    routes only)."""
    setattr(endpoint, _INLINE_READ, True)
    return endpoint


def _runs_inline_on_local_reads(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        for value in kwargs.values():
            if isinstance(value, Session) and value.info.get(_LOCAL_READ):
                return endpoint(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(endpoint, *args, **kwargs))

    return run


def inline_write(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a sync route that changes something whose work is a few indexed queries and writes
    of the request's session and nothing else (no provider, no network, no file, no password
    hash, nothing of unbounded size): on SQLite it runs on the event loop, its change and
    commit in one go once its writer turn has come (awaited: the loop serves others while
    another writer holds it), and in a worker thread as before when another process holds
    SQLite's lock (the wait for that one is SQLite's busy handler, which blocks).

    Under concurrent writers every hop between the loop and a worker is a wait for a thread to
    be scheduled and for the interpreter lock, and the hops of four writers contend with each
    other and with the loop: run on the loop, the writers follow each other, each from its
    ``BEGIN`` to its ``COMMIT`` without a switch (docs/benchmarks.md, session 40). SQLite's
    ``COMMIT`` in WAL mode with ``synchronous=NORMAL`` does not wait for the disk, so the loop
    is held for the route's own CPU, which a worker would have held the interpreter lock for
    anyway. On PostgreSQL a query is a round trip: the route runs in a worker there.
    ``CommittingRoute`` applies it (POST, PUT, PATCH, DELETE routes only)."""
    setattr(endpoint, _INLINE_WRITE, True)
    return endpoint


def _runs_on_the_loop_in_its_turn(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        session = next((v for v in kwargs.values() if isinstance(v, Session)), None)
        db = None if session is None else session.info.get(_LOCAL_WRITE)
        # begun already: the token's last-use stamp took the turn in a worker (``_touch``)
        if (
            session is not None
            and db is not None
            and (session.in_transaction() or await db.begin_write_on_loop(session))
        ):
            try:
                return endpoint(*args, **kwargs)  # commits as it returns
            except BaseException:
                session.rollback()  # on the loop too: the turn goes to the next writer now
                raise
        return await anyio.to_thread.run_sync(functools.partial(endpoint, *args, **kwargs))

    # still a sync route for what depends on where its queries may wait (``current_principal``)
    setattr(run, _IN_WORKER, True)
    return run


def commits_in_route_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """A sync route that changes something, made to commit its request's transaction in its
    own worker thread the moment it returns.

    FastAPI would commit it in ``db_session``'s teardown, after the route's thread has handed
    back to the event loop, the response has been validated in another worker thread and the
    teardown has been given a third: on SQLite the writer turn was held through those hops,
    each a wait for a busy event loop, while the other writers queued behind it. A response
    that then fails to serialise answers 500 for a change that is done; the recorder corrects
    its record's status (``gaia.api.audit``)."""

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, Session):
                commit_change(value)
        return result

    return run


def _record_of_success(request: Request) -> dict[str, Any] | None:
    """The record of a route that returned (its columns): its status is the one the route
    declares (201 for a create, 204...); a route that answers another one makes the recorder
    correct it."""
    ctx = audit(request)
    status = getattr(request.scope.get("route"), "status_code", None) or 200
    if not ctx.wants_record(status=status):
        return None
    return ctx.record_values(scope=request.scope, method=request.method, status=status)


SessionDep = Annotated[Session, Depends(db_session, scope="function")]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        return value.strip()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method in MUTATING_METHODS:
        # A browser sends the cookie with any request, whichever site's page made it (CSRF).
        # The console never needs it for a change: its pages call the API server-side with
        # the session's bearer token; the browser itself only reads (the logs' EventSource).
        raise Forbidden(
            "the console's session cookie is accepted for reads only; "
            "send 'Authorization: Bearer <token>' to change anything"
        )
    return cookie


async def current_principal(request: Request, session: SessionDep) -> Principal:
    """The caller. A principal the cache holds is answered on the event loop; a lookup in the
    database and the token's last-use stamp go to a worker (with an async change's ``BEGIN``,
    which otherwise awaits its writer turn on the loop, ``begin_change``)."""
    ctx = audit(request)
    token = _bearer(request)
    if not token:
        raise Unauthenticated("log in first: send 'Authorization: Bearer <token>'")
    plat = platform(request)
    endpoint = getattr(request.scope.get("route"), "endpoint", None)
    # An async route's first query runs on the event loop's thread, which must never block
    # on SQLite's writer turn (the holder may need the loop to reach its commit): its write
    # transaction begins here, in the worker an uncached lookup goes to, or else on the loop
    # with the turn awaited. A sync route begins it at its own first query (on the loop, an
    # ``inline_write``; else in its worker), so the turn is not held from here to the route.
    begin_here = (
        request.method in MUTATING_METHODS and plat.db.is_sqlite and runs_on_event_loop(endpoint)
    )
    principal = cached_principal(token, cache=plat.principals)
    if principal is not None and begin_here and not _touch_due(plat, principal):
        await begin_change(request, session)
    elif principal is None or begin_here or _touch_due(plat, principal):
        principal = await anyio.to_thread.run_sync(
            functools.partial(
                _principal_from_store,
                request=request,
                session=session,
                token=token,
                begin_here=begin_here,
            )
        )
    ctx.actor = principal.username
    return principal


def _principal_from_store(
    *, request: Request, session: Session, token: str, begin_here: bool
) -> Principal:
    principal = authenticate(session, token, cache=platform(request).principals)
    if begin_here:
        session.connection()
    _touch(request, session, principal)
    return principal


def _touch_due(plat: Platform, principal: Principal) -> bool:
    last = plat.token_last_touch.get(principal.token_id)
    return last is None or utcnow() - last >= LAST_USED_PRECISION


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


def visible_cluster(session: Session, principal: Principal, name: str) -> Cluster:
    """The cluster ``name`` if the caller may see it: all for platform admins, else those where
    a business of theirs holds a quota (where they can deploy); 404 otherwise."""
    return cluster_named(session, name, business_ids=principal.business_scope())


@dataclass(frozen=True, slots=True)
class WritableApp:
    """An app the caller may change, with its business and this request's operation record."""

    business: Business
    app: App
    audit: AuditContext


def writable_app(
    request: Request,
    session: Session,
    principal: Principal,
    *,
    biz: str,
    app: str,
    action: str,
    target: str | None = None,
    permission: Permission = Permission.APP_WRITE,
    lock: bool = True,
    refuse_deleting: bool = True,
) -> WritableApp:
    """Resolve ``biz``/``app`` for a change: the record names ``app.<action>`` and its target
    (``business/<biz>/app/<target or app>``) before anything can refuse, the business answers
    404 to a non-member and 403 to a role without ``permission``, the app answers 404 when
    missing and 409 while it is being deleted (unless ``refuse_deleting`` is off). The app row is
    locked (``lock``) so that two changes of one app's map run one after the other.

    A plain function, not a FastAPI dependency: a dependency runs before the route's own path
    and body are validated, so a malformed request to a foreign business would answer 404
    instead of 422, and each path parameter would be validated (and reported) twice."""
    ctx = audit(request, action=f"app.{action}", target=f"business/{biz}/app/{target or app}")
    business = business_for(session, principal, biz, permission, ctx=ctx)
    row = store_apps.find_app(session, business=business, name=app, lock=lock)
    if refuse_deleting:
        store_apps.refuse_if_deleting(row)
    return WritableApp(business=business, app=row, audit=ctx)


def readable_app(
    session: Session, principal: Principal, *, biz: str, app: str
) -> tuple[Business, App]:
    """The business and app ``biz``/``app`` for a caller who may read the business (404 for a
    foreign business or a missing app)."""
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    return business, store_apps.find_app(session, business=business, name=app)
