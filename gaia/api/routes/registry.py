"""Gaia's image registry (issue 18; docs/registry.md): tokens, events, repositories and tags.

- ``GET /registry/token``: the distribution token specification's endpoint, which the registry
  names as its realm. Basic credentials are a user's name with an API token (or session token,
  or password), a business's pull account, or none (anonymous: public images only). The answer
  grants what ``gaia.domain.registry.grant`` allows, never more than asked; refusals use the
  registry's error body (``{"errors": [{"code", "message"}]}``), which docker, podman and skopeo
  print. A push into a namespace at or over its quota is refused here, with the figures.
- ``POST /registry/events``: the registry's notifications (its own bearer token, derived from the
  secret key): pushes and deletes of manifests become repositories and tags. A push that takes
  its namespace over the quota is deleted again at once (the registry cannot refuse it while it
  streams) and the log says so.
- ``GET /registry``, ``/registry/namespaces``, ``/registry/repositories``, ``.../tags``; ``DELETE
  .../tags/{tag}`` for those who may push there (a recorded operation; refused with 409 when
  other tags name the same manifest, since the registry deletes manifests, not tags);
  ``PUT /registry/namespaces/{business}/quota`` for platform admins.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from gaia.api.client_address import request_client_address
from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    platform,
    require_platform_admin,
)
from gaia.api.node_access import node_businesses
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.registry import (
    NamespaceOut,
    RegistryGcOut,
    RegistryInfoOut,
    RegistryQuotaIn,
    RepositoryOut,
    TagDeletedOut,
    TagOut,
)
from gaia.delivery.registry import MANIFEST_ACCEPT, RegistryService, RegistryUnavailable
from gaia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from gaia.domain.rbac import Role
from gaia.domain.registry import (
    MAX_SCOPES,
    PUBLIC,
    TAG,
    NamespaceKind,
    RegistryCaller,
    RepositoryName,
    allowed,
    grant,
    parse_repository,
    parse_scope,
)
from gaia.platform import Platform
from gaia.security import TOKEN_PREFIX
from gaia.store import identity
from gaia.store import registry as store
from gaia.store.identity import Principal
from gaia.store.models import utcnow as _utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["registry"], route_class=CommittingRoute)
MANIFEST_TYPES = frozenset(MANIFEST_ACCEPT.split(", "))
MAX_EVENTS = 1000
RepositoryPath = Path(max_length=255, description="repository name, e.g. shop/web")
TagPath = Path(max_length=128, description="tag")
BusinessPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")


def _registry(request: Request) -> RegistryService:
    return platform(request).registry


def _distribution_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"code": code, "message": message, "detail": None}]},
        status_code=status,
        headers=headers,
    )


# ------------------------------------------------------------------------------ the caller


def _caller_of(session: Session, principal: Principal) -> RegistryCaller:
    names = store.business_names(session, principal.roles)
    return RegistryCaller(
        username=principal.username,
        is_platform_admin=principal.is_platform_admin,
        roles={names[i]: role for i, role in principal.roles.items() if i in names},
    )


def _visible_namespaces(caller: RegistryCaller) -> set[str] | None:
    if caller.is_platform_admin:
        return None
    return {PUBLIC, f"u/{caller.username}", *caller.roles}


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("the Basic credentials are not base64 of 'name:secret'") from None
    username, sep, secret = decoded.partition(":")
    if not sep or not username or len(username) > 255 or len(secret) > 1024:
        raise Unauthenticated("the Basic credentials are not 'name:secret'")
    return username, secret


def _businesses_named(scope: list[str]) -> frozenset[str]:
    """The businesses whose repositories the token request names (a node account's listing is
    checked again for them when they are missing; a scope that does not parse is refused later)."""
    named: set[str] = set()
    for text in [s for item in scope for s in item.split(" ") if s][:MAX_SCOPES]:
        try:
            wanted = parse_scope(text)
            repo = parse_repository(wanted.name) if wanted.type == "repository" else None
        except InvalidRequest:
            continue
        if repo is not None and repo.kind is NamespaceKind.BUSINESS:
            named.add(repo.owner)
    return frozenset(named)


def _token_caller(
    request: Request, plat: Platform, *, wanted: frozenset[str] = frozenset()
) -> RegistryCaller:
    """Who asks for a registry token: anonymous, a business's pull account or a user.
    ``wanted``: the businesses whose repositories the request names (for a node account)."""
    header = request.headers.get("authorization", "")
    if not header:
        return RegistryCaller()
    credentials = _basic(header)
    if credentials is None:
        raise Unauthenticated("send Basic credentials: your user name and an API token")
    username, secret = credentials
    business = plat.registry.pull_account(username, secret)
    if business is not None:
        return RegistryCaller(pull_account_of=business)
    node = plat.registry.node_account(username, secret)
    if node is not None:
        hosted = anyio.from_thread.run(partial(node_businesses, plat, *node, wanted=wanted))
        return RegistryCaller(node_businesses=hosted)
    built = plat.registry.build_account(username, secret)
    if built is not None:
        return RegistryCaller(build_account_of=parse_repository(built))
    if secret.startswith(TOKEN_PREFIX):
        with plat.db.read_session() as session:
            principal = identity.authenticate(session, secret, cache=plat.principals)
            if principal.username != username:
                raise Unauthenticated("this token is not the named user's")
            return _caller_of(session, principal)
    user = identity.check_credentials(
        plat.db,
        username,
        secret,
        client=request_client_address(request),
        throttle=plat.login_throttle,
    )
    with plat.db.read_session() as session:
        principal = Principal(
            user_id=user.id,
            username=user.username,
            is_platform_admin=user.is_platform_admin,
            token_id=0,
            token_kind="password",  # noqa: S106 (the kind of credential, not one)
            roles={
                business_id: Role(role)
                for business_id, role in store.roles_of(session, user.id).items()
            },
        )
        return _caller_of(session, principal)


def _quota_refusal(plat: Platform, repo: RepositoryName) -> str | None:
    """Why a push into ``repo``'s namespace is refused now (at or over its quota), or None."""
    if repo.kind is NamespaceKind.PUBLIC:
        return None
    default = plat.settings.registry_quota_bytes
    with plat.db.read_session() as session:
        used = store.namespace_usage(session, repo.namespace)
        quota = (
            store.business_quota(session, repo.owner, default)
            if repo.kind is NamespaceKind.BUSINESS
            else default
        )
    if used < quota:
        return None
    return (
        f"namespace '{repo.namespace}' holds {used} bytes of its {quota}-byte registry quota: "
        "delete tags you no longer need, or ask a platform administrator for a larger quota"
    )


@router.get("/registry/token")
def registry_token(
    request: Request,
    service: Annotated[str, Query(max_length=200)] = "",
    scope: Annotated[list[str], Query(max_length=MAX_SCOPES)] = [],  # noqa: B006
    account: Annotated[str, Query(max_length=255)] = "",
) -> Response:
    """A registry bearer token (the distribution token specification). Basic credentials: your
    user name and an API token; none for public images."""
    plat = platform(request)
    registry = plat.registry
    if service and service != registry.signer.service:
        return _distribution_error(
            400,
            "UNSUPPORTED",
            f"unknown service '{service[:100]}': this is {registry.signer.service}",
        )
    try:
        caller = _token_caller(request, plat, wanted=_businesses_named(scope))
    except Unauthenticated as exc:
        return _distribution_error(
            401, "UNAUTHORIZED", exc.message, {"WWW-Authenticate": 'Basic realm="Gaia registry"'}
        )
    except TooManyRequests as exc:
        return _distribution_error(429, "TOOMANYREQUESTS", exc.message)
    scopes = [s for item in scope for s in item.split(" ") if s]
    if len(scopes) > MAX_SCOPES:
        return _distribution_error(400, "UNSUPPORTED", f"at most {MAX_SCOPES} scopes at once")
    access: list[dict[str, Any]] = []
    for text in scopes:
        try:
            wanted = parse_scope(text)
        except InvalidRequest as exc:
            return _distribution_error(400, "UNSUPPORTED", exc.message)
        actions = grant(caller, wanted)
        if wanted.type == "repository" and "pull" in wanted.actions and "pull" not in actions:
            who = caller.username or caller.pull_account_of or request_client_address(request)
            _count_refused_pull(plat, wanted.name, who=f"{who}")
        if "push" in actions:
            refusal = _quota_refusal(plat, parse_repository(wanted.name))
            if refusal is not None:
                return _distribution_error(403, "DENIED", refusal)
        if actions:
            access.append({"type": wanted.type, "name": wanted.name, "actions": list(actions)})
    subject = caller.username or (
        f"pull+{caller.pull_account_of}" if caller.pull_account_of else ""
    )
    if caller.build_account_of is not None:
        subject = f"build+{caller.build_account_of.name}"
    issued = registry.signer.issue(subject=subject, access=access)
    return JSONResponse(
        {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at,
        }
    )


def _count_refused_pull(plat: Platform, name: str, *, who: str) -> None:
    """A pull Gaia refused counts as a failed pull of its namespace, when the namespace
    exists (a made-up one must not grow the metric's label set)."""
    try:
        repo = parse_repository(name)
    except InvalidRequest:
        return
    if repo.namespace not in plat.registry.pull_errors:
        with plat.db.read_session() as session:
            if not store.namespace_exists(session, repo):
                return
    plat.registry.count_refused_pull(repo.namespace, who=who, repository=repo.name)


# ------------------------------------------------------------------------------ events


def _parse_time(value: object) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return _utcnow()
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return _utcnow()


def _record_events(plat: Platform, events: Sequence[dict[str, Any]]) -> list[RepositoryName]:
    """Record pushes and deletes; the namespaces a push grew (for the quota check)."""
    grown: list[RepositoryName] = []
    with plat.db.write_session() as session:
        for event in events:
            target = event.get("target") or {}
            if not isinstance(target, dict):
                continue
            try:
                repo = parse_repository(str(target.get("repository", "")))
            except InvalidRequest:
                continue
            action = event.get("action")
            media_type = str(target.get("mediaType", ""))
            digest = str(target.get("digest", ""))
            if action == "push" and media_type in MANIFEST_TYPES and target.get("tag"):
                references = target.get("references") or []
                blobs = [
                    (str(r.get("digest", "")), int(r.get("size", 0)))
                    for r in references
                    if isinstance(r, dict) and r.get("mediaType") not in MANIFEST_TYPES
                ]
                actor = event.get("actor") or {}
                store.record_push(
                    session,
                    repo=repo,
                    tag=str(target["tag"])[:128],
                    digest=digest,
                    media_type=media_type,
                    manifest_size=int(target.get("size") or target.get("length") or 0),
                    blobs=blobs,
                    pushed_by=str(actor.get("name", "") if isinstance(actor, dict) else "")[:255],
                    pushed_at=_parse_time(event.get("timestamp")),
                )
                grown.append(repo)
            elif action == "delete" and digest:
                store.record_manifest_delete(session, repo=repo, digest=digest)
    return grown


def _record_manifest_delete(plat: Platform, repo: RepositoryName, digest: str) -> None:
    with plat.db.write_session() as session:
        store.record_manifest_delete(session, repo=repo, digest=digest)


async def _enforce_quota(
    plat: Platform, repo: RepositoryName, events: list[dict[str, Any]]
) -> None:
    """A push that took its namespace over the quota is deleted again (its tags with it)."""
    if _quota_refusal(plat, repo) is None:
        return
    with plat.db.read_session() as session:
        used = store.namespace_usage(session, repo.namespace)
    for event in events:
        target = event.get("target") or {}
        if target.get("repository") != repo.name or event.get("action") != "push":
            continue
        digest = str(target.get("digest", ""))
        if not digest or str(target.get("mediaType", "")) not in MANIFEST_TYPES:
            continue
        try:
            await plat.registry.delete_manifest(repo.name, digest)
        except RegistryUnavailable as exc:
            log.warning("registry: could not remove %s@%s over quota: %s", repo.name, digest, exc)
            continue
        # a worker thread's write: the event loop's thread never waits for SQLite's writer turn
        await asyncio.to_thread(_record_manifest_delete, plat, repo, digest)
        log.warning(
            "registry: %s@%s (pushed by %s) took namespace %s to %d bytes, over its quota: deleted",
            repo.name,
            digest,
            (event.get("actor") or {}).get("name", "?"),
            repo.namespace,
            used,
        )


def _count(registry: RegistryService, events: Sequence[dict[str, Any]]) -> None:
    """Images pushed (manifests by tag) and pulled (manifests served), per namespace."""
    for event in events:
        target = event.get("target")
        if not isinstance(target, dict) or target.get("mediaType") not in MANIFEST_TYPES:
            continue
        try:
            namespace = parse_repository(str(target.get("repository", ""))).namespace
        except InvalidRequest:
            continue
        if event.get("action") == "pull":
            registry.pulls[namespace] = registry.pulls.get(namespace, 0) + 1
        elif event.get("action") == "push" and target.get("tag"):
            registry.pushes[namespace] = registry.pushes.get(namespace, 0) + 1


@router.post("/registry/events")
async def registry_events(request: Request) -> dict[str, int]:
    """The registry's notifications (its own token only)."""
    ctx = audit(request)
    ctx.read_only = True  # machine traffic, recorded only when refused
    plat = platform(request)
    header = request.headers.get("authorization", "")
    if not plat.registry.signer.notification_ok(header):
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            with plat.db.read_session() as session:
                try:
                    identity.authenticate(session, token.strip(), cache=plat.principals)
                except Unauthenticated:
                    pass
                else:
                    raise Forbidden("only the registry posts its events here")
        raise Unauthenticated("send the registry's notification token")
    try:
        envelope = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body is not a JSON event envelope") from None
    events = envelope.get("events") if isinstance(envelope, dict) else None
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise InvalidRequest(f"the body must be {{'events': [...]}} with at most {MAX_EVENTS}")
    events = [e for e in events if isinstance(e, dict)]
    _count(plat.registry, events)
    kept = [e for e in events if e.get("action") in ("push", "delete")]
    grown = await asyncio.to_thread(_record_events, plat, kept) if kept else []
    for repo in {r.name: r for r in grown}.values():
        await _enforce_quota(plat, repo, events)
    return {"recorded": len(events)}


# ------------------------------------------------------------------------------ the views


@router.get("/registry", response_model=RegistryInfoOut)
def registry_info(request: Request, principal: PrincipalDep) -> RegistryInfoOut:
    """Where the registry is and how to log in to it."""
    registry = _registry(request)
    return RegistryInfoOut(
        enabled=registry.enabled,
        address=registry.address,
        realm=registry.realm,
        service=registry.signer.service,
        login=(
            f"podman login {registry.address} -u {principal.username} "
            "(password: an API token from your profile)"
            if registry.enabled
            else "this platform runs no registry (set GAIA_REGISTRY_LISTEN)"
        ),
    )


@router.get("/registry/namespaces", response_model=Page[NamespaceOut])
def registry_namespaces(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[NamespaceOut]:
    """The namespaces you may see: yours, public and your businesses' (all for admins), with
    their usage and quota."""
    caller = _caller_of(session, principal)
    default = platform(request).settings.registry_quota_bytes
    names = {PUBLIC, f"u/{principal.username}"}
    if principal.is_platform_admin:
        names |= set(store.business_names(session, None).values())
        names |= {r.namespace for r in store.repositories(session, namespaces=None)}
    else:
        names |= set(caller.roles)
    out = []
    for name in sorted(names):
        repo = parse_repository(f"{name}/x")
        quota: int | None
        if repo.kind is NamespaceKind.PUBLIC:
            quota = None
        elif repo.kind is NamespaceKind.BUSINESS:
            quota = store.business_quota(session, name, default)
        else:
            quota = default
        out.append(
            NamespaceOut(
                namespace=name,
                kind=repo.kind.value,
                repositories=store.namespace_repository_count(session, name),
                used_bytes=store.namespace_usage(session, name),
                quota_bytes=quota,
                can_push="push" in allowed(caller, repo),
            )
        )
    page, nxt = page_in_memory(
        out, key=lambda n: n.namespace, kind="registry-namespaces", limit=limit, cursor=cursor
    )
    return Page[NamespaceOut](items=page, next_cursor=nxt)


@router.put("/registry/namespaces/{biz}/quota", response_model=NamespaceOut)
def set_registry_quota(
    request: Request,
    body: RegistryQuotaIn,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BusinessPath,
) -> NamespaceOut:
    """Set a business's registry quota (platform admins)."""
    business = biz
    audit(request, action="registry.quota.set", target=f"registry/{business}", business=business)
    require_platform_admin(principal, "set registry quotas")
    store.set_business_quota(session, business, body.quota_bytes)
    default = platform(request).settings.registry_quota_bytes
    return NamespaceOut(
        namespace=business,
        kind=NamespaceKind.BUSINESS.value,
        repositories=store.namespace_repository_count(session, business),
        used_bytes=store.namespace_usage(session, business),
        quota_bytes=default if body.quota_bytes is None else body.quota_bytes,
        can_push=True,
    )


@router.get("/registry/repositories", response_model=Page[RepositoryOut])
def registry_repositories(
    principal: PrincipalDep,
    session: SessionDep,
    namespace: Annotated[str | None, Query(max_length=127)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[RepositoryOut]:
    """Repositories you may see, by name; ``namespace`` narrows to one."""
    visible = _visible_namespaces(_caller_of(session, principal))
    wanted = visible
    if namespace is not None:
        wanted = {namespace} if visible is None or namespace in visible else set()
    rows = store.repositories(session, namespaces=wanted)
    page, nxt = page_in_memory(
        rows, key=lambda r: r.name, kind="registry-repositories", limit=limit, cursor=cursor
    )
    return Page[RepositoryOut](
        items=[_repository_out(r) for r in page],
        next_cursor=nxt,
    )


def _repository_out(r: store.RepositorySummary) -> RepositoryOut:
    return RepositoryOut(
        name=r.name,
        namespace=r.namespace,
        kind=r.kind,
        tags=r.tags,
        size=r.size,
        last_pushed_at=r.last_pushed_at,
        created_at=r.created_at,
    )


def _visible_repository(session: Session, principal: Principal, name: str) -> RepositoryName:
    try:
        repo = parse_repository(name)
    except InvalidRequest:
        raise NotFound(f"repository '{name[:255]}' not found") from None
    visible = _visible_namespaces(_caller_of(session, principal))
    if visible is not None and repo.namespace not in visible:
        raise NotFound(f"repository '{name}' not found")
    return repo


@router.get("/registry/repositories/{repository:path}/tags", response_model=Page[TagOut])
def registry_tags(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    repository: str = RepositoryPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[TagOut]:
    """The tags of a repository, newest push first."""
    repo = _visible_repository(session, principal, repository)
    address = _registry(request).address
    rows = store.tags_of(session, repo.name)
    order = {t.tag: i for i, t in enumerate(rows)}
    page, nxt = page_in_memory(
        rows,
        key=lambda t: f"{order[t.tag]:08d}",
        kind=f"registry-tags:{repo.name}",
        limit=limit,
        cursor=cursor,
    )
    return Page[TagOut](
        items=[
            TagOut(
                repository=repo.name,
                tag=t.tag,
                digest=t.digest,
                media_type=t.media_type,
                size=t.size,
                pushed_by=t.pushed_by,
                pushed_at=t.pushed_at,
                reference=f"{address}/{repo.name}@{t.digest}",
            )
            for t in page
        ],
        next_cursor=nxt,
    )


@router.delete("/registry/repositories/{repository:path}/tags/{tag}", response_model=TagDeletedOut)
async def delete_registry_tag(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    repository: str = RepositoryPath,
    tag: str = TagPath,
) -> TagDeletedOut:
    """Delete a tag (whoever may push to the repository). Refused with 409 while other tags
    name the same image: the registry deletes images, not names.

    The request's own transaction records the deletion (on SQLite a second writer would wait
    for it); the registry's own delete event, arriving meanwhile, waits and finds it done."""
    audit(request, action="registry.tag.delete", target=f"registry/{repository}:{tag}")
    plat = platform(request)
    if not TAG.fullmatch(tag):
        raise InvalidRequest(f"'{tag[:128]}' is not a tag")
    repo = _visible_repository(session, principal, repository)
    caller = _caller_of(session, principal)
    if repo.kind is NamespaceKind.BUSINESS:
        audit(request, business=repo.owner)
    row = store.tag_named(session, repo.name, tag)
    if "push" not in allowed(caller, repo):
        raise Forbidden(f"you may not push to '{repo.name}', so you may not delete its tags")
    digest = row.digest
    others = sorted(
        t.tag for t in store.tags_of(session, repo.name) if t.digest == digest and t.tag != tag
    )
    if others:
        raise Conflict(
            f"tags {', '.join(others)} name the same image ({digest}); the registry deletes "
            f"images, not names: delete those tags too, or push another image to '{tag}'",
            details={"tags": others, "digest": digest},
        )
    try:
        current = await plat.registry.manifest_digest(repo.name, tag)
        if current is not None:
            await plat.registry.delete_manifest(repo.name, current)
    except RegistryUnavailable as exc:
        raise Conflict(f"the registry did not delete it: {exc}") from None
    store.record_manifest_delete(session, repo=repo, digest=digest)
    if current is not None and current != digest:
        store.record_manifest_delete(session, repo=repo, digest=current)
    return TagDeletedOut(repository=repo.name, tag=tag, digest=current or digest)


@router.post("/registry/gc", response_model=RegistryGcOut)
async def registry_gc(request: Request, principal: PrincipalDep) -> RegistryGcOut:
    """Collect the registry's garbage now (platform admins): blobs no tag references. The
    registry Gaia runs stops for the collection and starts again."""
    audit(request, action="registry.gc", target="registry")
    require_platform_admin(principal, "collect the registry's garbage")
    try:
        result = await asyncio.to_thread(platform(request).registry.garbage_collect)
    except RegistryUnavailable as exc:
        raise Conflict(str(exc)) from None
    audit(request, summary=f"freed {result.freed_bytes} bytes ({result.blobs_deleted} blobs)")
    return RegistryGcOut(
        freed_bytes=result.freed_bytes,
        bytes_after=result.bytes_after,
        seconds=round(result.seconds, 3),
        blobs_deleted=result.blobs_deleted,
    )
