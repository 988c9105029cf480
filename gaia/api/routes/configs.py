"""ConfigMaps and Secrets of a business: ``/businesses/{biz}/configmaps`` and ``.../secrets``.

Both kinds have the same five routes (list, create, get, replace, delete) and the same rules
(``gaia.api.schemas.configs``); members read them, developers and above (``app.write``) write
them. They differ in what leaves the server:

- a ConfigMap is returned whole;
- a Secret is returned as key names and value sizes. Its values leave only on
  ``GET .../secrets/{name}?reveal=true``, which needs ``app.write`` (a viewer gets 403) and is
  itself written to the operation records, since reading a password is worth an audit trail
  even though it changes nothing.

Values never reach a record, an event or a log: summaries name keys only, and validation
messages name the failing key, never the value. Storage (Secrets encrypted at rest) is
``gaia.store.configs``'s business; each route here authorises, calls one of its operations and
shapes the answer (see docs/architecture.md, "api").

Deleting a config that an app still refers to is allowed for now: nothing checks references yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session

from gaia.api.deps import (
    AuditContext,
    CommittingRoute,
    Principal,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    inline_write,
    platform,
)
from gaia.api.errors import STATUS
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.configs import (
    CONFIG_NAME_MAX,
    CONFIG_NAME_PATTERN,
    ConfigCreate,
    ConfigMapOut,
    ConfigReplace,
    SecretKeyOut,
    SecretOut,
)
from gaia.domain.errors import GaiaError
from gaia.domain.rbac import Permission
from gaia.security import SecretBox
from gaia.store import apps as store_apps
from gaia.store import configs
from gaia.store.models import Business, ConfigItem, OperationRecord
from gaia.store.records import append_record

router = APIRouter(tags=["configs"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
ConfigPath = Path(
    pattern=CONFIG_NAME_PATTERN, max_length=CONFIG_NAME_MAX, description="config name"
)
Reveal = Query(
    default=False,
    description="return the values too; needs app.write (developer or above) and is recorded",
)


@dataclass(frozen=True)
class Kind:
    """What differs between the two kinds in messages, records and paths."""

    secret: bool
    word: str  # "configmap" | "secret": record actions and targets
    title: str  # "ConfigMap" | "Secret": messages


CONFIGMAP = Kind(secret=False, word="configmap", title="ConfigMap")
SECRET = Kind(secret=True, word="secret", title="Secret")


# --- shared by both kinds ------------------------------------------------------------------


def _ctx(request: Request, kind: Kind, verb: str, biz: str, name: str) -> AuditContext:
    ctx = audit(request, action=f"{kind.word}.{verb}", target=f"business/{biz}/{kind.word}/{name}")
    return ctx


def _get(session: Session, business: Business, kind: Kind, name: str) -> ConfigItem:
    return configs.config_item(session, business=business, name=name, secret=kind.secret)


def _keys(keys: list[str]) -> str:
    return ", ".join(sorted(keys)) if keys else "none"


def _describe_change(before: dict[str, str], after: dict[str, str]) -> str:
    """Which keys were added, changed, removed: the shape of a change without its values."""
    parts = [
        (label, names)
        for label, names in (
            ("added", [k for k in after if k not in before]),
            ("changed", [k for k in after if k in before and before[k] != after[k]]),
            ("removed", [k for k in before if k not in after]),
        )
        if names
    ]
    return "; ".join(f"{label} {_keys(names)}" for label, names in parts) or "data unchanged"


def _create(
    session: Session,
    *,
    request: Request,
    principal: Principal,
    business: Business,
    kind: Kind,
    body: ConfigCreate,
    ctx: AuditContext,
) -> ConfigItem:
    item = configs.create_config_item(
        session,
        secrets=platform(request).secrets,
        business=business,
        secret=kind.secret,
        name=body.name,
        description=body.description,
        data=body.data,
        created_by=principal.username,
    )
    ctx.summary = f"created {kind.title} '{body.name}' with keys: {_keys(list(body.data))}"
    return item


def _replace(
    session: Session,
    *,
    request: Request,
    business: Business,
    kind: Kind,
    name: str,
    body: ConfigReplace,
    ctx: AuditContext,
) -> ConfigItem:
    done = configs.replace_config_item(
        session,
        secrets=platform(request).secrets,
        business=business,
        secret=kind.secret,
        name=name,
        description=body.description,
        data=body.data,
    )
    if done.before is None:
        # Encrypted under a key this installation no longer has: replacing it is the repair.
        changed = f"data replaced (old values unreadable), keys: {_keys(list(body.data))}"
    else:
        changed = _describe_change(done.before, body.data)
    if done.description_changed:
        changed += "; description changed"
    ctx.summary = f"replaced {kind.title} '{name}': {changed}"
    return done.item


def _delete(
    session: Session, *, business: Business, kind: Kind, name: str, ctx: AuditContext
) -> None:
    keys = configs.delete_config_item(session, business=business, name=name, secret=kind.secret)
    ctx.summary = f"deleted {kind.title} '{name}' (keys: {_keys(keys)})"


# --- ConfigMaps ----------------------------------------------------------------------------


def configmap_out(item: ConfigItem, business: Business) -> ConfigMapOut:
    return ConfigMapOut(
        name=item.name,
        business=business.name,
        description=item.description,
        data=dict(item.data),
        created_by=item.created_by,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


@router.get("/businesses/{biz}/configmaps", response_model=Page[ConfigMapOut])
def list_configmaps(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ConfigMapOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ, ctx=audit(request))
    rows, nxt = configs.page_config_items(
        session, business_id=business.id, secret=False, limit=limit, cursor=cursor
    )
    return Page[ConfigMapOut](items=[configmap_out(r, business) for r in rows], next_cursor=nxt)


@router.post("/businesses/{biz}/configmaps", response_model=ConfigMapOut, status_code=201)
@inline_write
def create_configmap(
    body: ConfigCreate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> ConfigMapOut:
    ctx = _ctx(request, CONFIGMAP, "create", biz, body.name)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    item = _create(
        session,
        request=request,
        principal=principal,
        business=business,
        kind=CONFIGMAP,
        body=body,
        ctx=ctx,
    )
    return configmap_out(item, business)


@router.get("/businesses/{biz}/configmaps/{name}", response_model=ConfigMapOut)
def get_configmap(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = ConfigPath,
) -> ConfigMapOut:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ, ctx=audit(request))
    return configmap_out(_get(session, business, CONFIGMAP, name), business)


@router.put("/businesses/{biz}/configmaps/{name}", response_model=ConfigMapOut)
@inline_write
def replace_configmap(
    body: ConfigReplace,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = ConfigPath,
) -> ConfigMapOut:
    """Replace the data and description as a whole: keys left out of ``data`` are removed."""
    ctx = _ctx(request, CONFIGMAP, "replace", biz, name)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    item = _replace(
        session,
        request=request,
        business=business,
        kind=CONFIGMAP,
        name=name,
        body=body,
        ctx=ctx,
    )
    return configmap_out(item, business)


@router.delete("/businesses/{biz}/configmaps/{name}", status_code=204)
@inline_write
def delete_configmap(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = ConfigPath,
) -> Response:
    ctx = _ctx(request, CONFIGMAP, "delete", biz, name)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    _delete(session, business=business, kind=CONFIGMAP, name=name, ctx=ctx)
    return Response(status_code=204)


# --- Secrets -------------------------------------------------------------------------------


def secret_out(
    item: ConfigItem, business: Business, *, secrets: SecretBox, reveal: bool = False
) -> SecretOut:
    # Sizes come from the decrypted data: storing them beside the key names would put the
    # length of every password in the clear.
    data = configs.read_data(item, secrets=secrets)
    return SecretOut(
        name=item.name,
        business=business.name,
        description=item.description,
        keys=[SecretKeyOut(key=k, size=len(v.encode("utf-8"))) for k, v in sorted(data.items())],
        data=data if reveal else None,
        revealed=reveal,
        created_by=item.created_by,
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


@router.get("/businesses/{biz}/secrets", response_model=Page[SecretOut])
def list_secrets(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SecretOut]:
    """Key names and sizes of each Secret; values are never listed."""
    business = business_for(session, principal, biz, Permission.BUSINESS_READ, ctx=audit(request))
    rows, nxt = configs.page_config_items(
        session, business_id=business.id, secret=True, limit=limit, cursor=cursor
    )
    secrets = platform(request).secrets
    return Page[SecretOut](
        items=[secret_out(r, business, secrets=secrets) for r in rows], next_cursor=nxt
    )


@router.post("/businesses/{biz}/secrets", response_model=SecretOut, status_code=201)
def create_secret(
    body: ConfigCreate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> SecretOut:
    """Create a Secret; the answer names its keys but does not echo the values."""
    ctx = _ctx(request, SECRET, "create", biz, body.name)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    item = _create(
        session,
        request=request,
        principal=principal,
        business=business,
        kind=SECRET,
        body=body,
        ctx=ctx,
    )
    return secret_out(item, business, secrets=platform(request).secrets)


@router.get("/businesses/{biz}/secrets/{name}", response_model=SecretOut)
def get_secret(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = ConfigPath,
    reveal: bool = Reveal,
) -> SecretOut:
    """Key names and sizes; with ``?reveal=true`` (app.write) the values too."""
    secrets = platform(request).secrets
    if not reveal:
        business = business_for(
            session, principal, biz, Permission.BUSINESS_READ, ctx=audit(request)
        )
        return secret_out(_get(session, business, SECRET, name), business, secrets=secrets)
    ctx = _ctx(request, SECRET, "reveal", biz, name)
    try:
        business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
        out = secret_out(
            _get(session, business, SECRET, name), business, secrets=secrets, reveal=True
        )
    except GaiaError as exc:
        ctx.error = exc.message
        _record_reveal(request, ctx, status=STATUS.get(type(exc), 400))
        raise
    ctx.summary = f"revealed the values of Secret '{name}' (keys: {_keys(list(out.data or {}))})"
    _record_reveal(request, ctx, status=200)
    response.headers["Cache-Control"] = "no-store"
    return out


def _record_reveal(request: Request, ctx: AuditContext, *, status: int) -> None:
    """Write the operation record of a reveal (the recorder middleware only sees writes).

    Written before the values leave: if the record cannot be written, the caller gets an
    error rather than values nobody knows were read.
    """
    client = request.client
    record = OperationRecord(
        actor=ctx.actor,
        business_id=ctx.business_id,
        business=ctx.business,
        action=ctx.action,
        method=request.method,
        path=request.url.path,
        target=ctx.target,
        summary=ctx.summary,
        result="success" if status < 400 else "failure",
        status_code=status,
        error=ctx.error,
        client=client.host if client else "",
        touches=store_apps.TOUCHES_NOTHING,  # a read
    )
    append_record(platform(request).db, record=record)


@router.put("/businesses/{biz}/secrets/{name}", response_model=SecretOut)
def replace_secret(
    body: ConfigReplace,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = ConfigPath,
) -> SecretOut:
    """Replace the data and description as a whole: keys left out of ``data`` are removed."""
    ctx = _ctx(request, SECRET, "replace", biz, name)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    item = _replace(
        session,
        request=request,
        business=business,
        kind=SECRET,
        name=name,
        body=body,
        ctx=ctx,
    )
    return secret_out(item, business, secrets=platform(request).secrets)


@router.delete("/businesses/{biz}/secrets/{name}", status_code=204)
@inline_write
def delete_secret(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    name: str = ConfigPath,
) -> Response:
    ctx = _ctx(request, SECRET, "delete", biz, name)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    _delete(session, business=business, kind=SECRET, name=name, ctx=ctx)
    return Response(status_code=204)
