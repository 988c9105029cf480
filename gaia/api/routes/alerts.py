"""The alerting API: channels, receivers and groups, policies, silences, records, built-in rules,
the Prometheus rule-file export and the Alertmanager webhook receiver.

Ownership: every object belongs to a business (``business``) or to the platform (``business``
omitted: cluster and node policies, built-in rules, the platform's own channels). Members of a
business read its objects (non-members get *not found*, as everywhere); developers and above
write its policies, receivers and silences; only its business admins manage its channels and see
their configuration — with credentials masked even then: a credential is write-only, and an update
that leaves it out (or sends the mask back) keeps the stored one. Platform objects are the
platform admins'.

A policy is validated against the metric catalogue: the metric must exist and carry the labels the
scope pins (an app policy needs a metric with ``business`` and ``app`` labels). Deleting a policy
resolves its firing alerts, with notices, in the same transaction, so no alert stays firing
forever for a rule that is gone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session

from gaia.api.deps import (
    AuditContext,
    Principal,
    PrincipalDep,
    SessionDep,
    audit,
    authenticate,
    business_for,
    platform,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit, encode_cursor, page_of
from gaia.api.schemas.alerts import (
    AlertmanagerPayload,
    AlertmanagerResult,
    AlertRecordOut,
    BuiltinEnable,
    BuiltinEnableOut,
    BuiltinRuleOut,
    ChannelCreate,
    ChannelOut,
    ChannelTestOut,
    ChannelUpdate,
    GroupCreate,
    GroupOut,
    GroupUpdate,
    NotificationOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
    ReceiverCreate,
    ReceiverOut,
    ReceiverUpdate,
    SeriesOut,
    SilenceCreate,
    SilenceOut,
)
from gaia.api.schemas.base import Page
from gaia.domain.alerts import SCOPE_LABELS, ScopeKind, check_matchers
from gaia.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from gaia.domain.rbac import Permission, allows
from gaia.monitor.alerting.alertmanager import IncomingAlert, ingest
from gaia.monitor.alerting.builtin_rules import BUILTIN_RULES, BY_KEY, cluster_policy
from gaia.monitor.alerting.channels import (
    SECRET_FIELDS,
    AlertNotice,
    DeliveryError,
    OutgoingMessage,
    channel_from_config,
    check_template,
    render_message,
    validate_channel_config,
)
from gaia.monitor.alerting.notify import queue_notifications
from gaia.monitor.alerting.rulefiles import policy_rule, rule_file
from gaia.monitor.metrics import catalogue
from gaia.store.models import (
    AlertChannel,
    AlertNotification,
    AlertPolicy,
    AlertReceiver,
    AlertReceiverGroup,
    AlertRecord,
    AlertSilence,
    App,
    Business,
    Cluster,
    utcnow,
)

router = APIRouter(tags=["alerts"])
MASK = "********"
Id = Annotated[int, Path(ge=1, le=2**31)]
BusinessQuery = Annotated[
    str | None,
    Query(max_length=63, description="only this business's (\"-\": only the platform's)"),
]
Owned = TypeVar("Owned", AlertChannel, AlertReceiver, AlertReceiverGroup, AlertPolicy, AlertSilence)


# ---------------------------------------------------------------- ownership


def _owner_id(
    session: Session,
    principal: Principal,
    business: str | None,
    permission: Permission,
    ctx: AuditContext | None,
) -> int | None:
    """The owning business id of a new object (None: the platform's), checked."""
    if business is None:
        require_platform_admin(principal, "manage the platform's alerting")
        return None
    return business_for(session, principal, business, permission, ctx=ctx).id


def _check(
    principal: Principal, business_id: int | None, permission: Permission, what: str
) -> None:
    """Visible (else NotFound) and allowed (else Forbidden)."""
    if principal.is_platform_admin:
        return
    if business_id is None:
        raise NotFound(f"{what} not found")
    role = principal.roles.get(business_id)
    if role is None:
        raise NotFound(f"{what} not found")
    if not allows(role, permission):
        raise Forbidden(f"your role '{role}' does not allow '{permission.value}'")


def _get(
    session: Session,
    model: type[Owned],
    obj_id: int,
    principal: Principal,
    permission: Permission,
    what: str,
) -> Owned:
    obj = session.get(model, obj_id)
    label = f"{what} {obj_id}"
    if obj is None:
        raise NotFound(f"{label} not found")
    _check(principal, obj.business_id, permission, label)
    return obj


def _visible(
    stmt: Select[Any], model: Any, session: Session, principal: Principal, business: str | None
) -> Select[Any]:
    if business == "-":
        if not principal.is_platform_admin:
            return stmt.where(false())
        return stmt.where(model.business_id.is_(None))
    if business:
        biz = business_for(session, principal, business, Permission.BUSINESS_READ)
        return stmt.where(model.business_id == biz.id)
    if principal.is_platform_admin:
        return stmt
    return stmt.where(model.business_id.in_(principal.business_ids()))


def _owned_by(model: Any, business_id: int | None) -> Any:
    """The WHERE clause of objects of one owner (NULL: the platform's)."""
    if business_id is None:
        return model.business_id.is_(None)
    return model.business_id == business_id


def _naming(session: Session, model: Any, field: str, obj: Any) -> list[str]:
    """Names of ``model`` objects (policies, groups) of ``obj``'s owner whose id list ``field``
    names ``obj``."""
    return sorted(
        row.name
        for row in session.scalars(select(model).where(_owned_by(model, obj.business_id)))
        if obj.id in (getattr(row, field) or [])
    )


def _page(
    session: Session,
    principal: Principal,
    model: Any,
    business: str | None,
    *,
    limit: int,
    cursor: str | None,
    stmt: Select[Any] | None = None,
    descending: bool = False,
) -> tuple[list[Any], str | None, dict[int, str]]:
    """One page of the ``model`` objects the principal sees, and their businesses' names."""
    stmt = _visible(
        stmt if stmt is not None else select(model), model, session, principal, business
    )
    rows, nxt = page_of(
        session,
        stmt,
        key=model.id,
        limit=limit,
        cursor=cursor,
        descending=descending,
        numeric=True,
    )
    return rows, nxt, _names(session, (r.business_id for r in rows))


def _names(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = session.execute(select(Business.id, Business.name).where(Business.id.in_(wanted)))
    return {row[0]: row[1] for row in rows}


def _same_owner(
    session: Session, model: type[Owned], ids: Sequence[int], business_id: int | None, what: str
) -> None:
    if not ids:
        return
    found = {
        row.id: row.business_id for row in session.scalars(select(model).where(model.id.in_(ids)))
    }
    for obj_id in ids:
        if obj_id not in found or found[obj_id] != business_id:
            owner = "the platform" if business_id is None else "the policy's business"
            raise InvalidRequest(f"{what} {obj_id} does not exist or does not belong to {owner}")


def _ctx(request: Request, action: str, target: str) -> AuditContext:
    ctx = audit(request, action=action, target=target)
    return ctx


# ---------------------------------------------------------------- channels


def _shown(kind: str, key: str, value: Any) -> Any:
    """A config value as the API shows it: credentials masked; a webhook URL cut to its origin,
    since chat webhooks carry their token in the path or the query."""
    if key in SECRET_FIELDS.get(kind, frozenset()) and value:
        return MASK
    if kind == "webhook" and key == "url" and isinstance(value, str):
        parts = urlsplit(value)
        if (parts.path not in ("", "/")) or parts.query:
            return f"{parts.scheme}://{parts.netloc}/{MASK}"
    return value


def _masked(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    return {k: _shown(kind, k, v) for k, v in config.items()}


def _channel_out(
    c: AlertChannel, names: dict[int, str], principal: Principal, plat_secrets: Any
) -> ChannelOut:
    show = principal.is_platform_admin or (
        c.business_id is not None
        and allows(principal.roles.get(c.business_id), Permission.CHANNEL_MANAGE)
    )
    config = None
    if show:
        config = _masked(c.kind, json.loads(plat_secrets.decrypt(c.config_encrypted)))
    return ChannelOut(
        id=c.id,
        business=names.get(c.business_id) if c.business_id is not None else None,
        name=c.name,
        kind=c.kind,
        rate_limit_per_minute=c.rate_limit_per_minute,
        enabled=c.enabled,
        config=config,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def _unique_name(
    session: Session, model: Any, business_id: int | None, name: str, what: str, skip: int = 0
) -> None:
    clash = session.scalars(
        select(model.id).where(
            _owned_by(model, business_id),
            model.name == name,
            model.id != skip,
        )
    ).first()
    if clash is not None:
        raise Conflict(f"a {what} named '{name}' already exists here")


@router.get("/alerts/channels", response_model=Page[ChannelOut])
def list_channels(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ChannelOut]:
    rows, nxt, names = _page(session, principal, AlertChannel, business, limit=limit, cursor=cursor)
    secrets = platform(request).secrets
    return Page[ChannelOut](
        items=[_channel_out(r, names, principal, secrets) for r in rows], next_cursor=nxt
    )


@router.post("/alerts/channels", response_model=ChannelOut, status_code=201)
def create_channel(
    request: Request, body: ChannelCreate, principal: PrincipalDep, session: SessionDep
) -> ChannelOut:
    ctx = _ctx(request, "alert_channel.create", f"alert-channel/{body.name}")
    owner = _owner_id(session, principal, body.business, Permission.CHANNEL_MANAGE, ctx)
    config = validate_channel_config(body.kind, body.config)
    _unique_name(session, AlertChannel, owner, body.name, "channel")
    now = utcnow()
    secrets = platform(request).secrets
    row = AlertChannel(
        business_id=owner,
        name=body.name,
        kind=body.kind,
        config_encrypted=secrets.encrypt(json.dumps(config)),
        rate_limit_per_minute=body.rate_limit_per_minute,
        enabled=body.enabled,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    ctx.summary = f"created {body.kind} channel '{body.name}'"
    return _channel_out(row, _names(session, [owner]), principal, secrets)


@router.get("/alerts/channels/{channel_id}", response_model=ChannelOut)
def get_channel(
    request: Request, channel_id: Id, principal: PrincipalDep, session: SessionDep
) -> ChannelOut:
    row = _get(session, AlertChannel, channel_id, principal, Permission.BUSINESS_READ, "channel")
    return _channel_out(
        row, _names(session, [row.business_id]), principal, platform(request).secrets
    )


@router.patch("/alerts/channels/{channel_id}", response_model=ChannelOut)
def update_channel(
    request: Request,
    channel_id: Id,
    body: ChannelUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> ChannelOut:
    ctx = _ctx(request, "alert_channel.update", f"alert-channel/{channel_id}")
    row = _get(session, AlertChannel, channel_id, principal, Permission.CHANNEL_MANAGE, "channel")
    secrets = platform(request).secrets
    changed = []
    if body.config is not None:
        current = json.loads(secrets.decrypt(row.config_encrypted))
        merged = {**current}
        for key, value in body.config.items():
            if value is None or (key in current and value == _shown(row.kind, key, current[key])):
                continue  # a credential not re-sent (or sent back masked) keeps its value
            merged[key] = value
        config = validate_channel_config(row.kind, merged)
        row.config_encrypted = secrets.encrypt(json.dumps(config))
        changed.append("config (" + ", ".join(sorted(body.config)) + ")")
    if body.name is not None and body.name != row.name:
        _unique_name(session, AlertChannel, row.business_id, body.name, "channel", skip=row.id)
        row.name = body.name
        changed.append("name")
    if body.rate_limit_per_minute is not None:
        row.rate_limit_per_minute = body.rate_limit_per_minute
        changed.append("rate limit")
    if body.enabled is not None:
        row.enabled = body.enabled
        changed.append("enabled" if body.enabled else "disabled")
    row.updated_at = utcnow()
    ctx.summary = f"updated channel '{row.name}': {', '.join(changed) or 'nothing'}"
    return _channel_out(row, _names(session, [row.business_id]), principal, secrets)


@router.delete("/alerts/channels/{channel_id}", status_code=204)
def delete_channel(
    request: Request, channel_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = _ctx(request, "alert_channel.delete", f"alert-channel/{channel_id}")
    row = _get(session, AlertChannel, channel_id, principal, Permission.CHANNEL_MANAGE, "channel")
    users = _naming(session, AlertPolicy, "channel_ids", row)
    if users:
        raise Conflict(
            f"channel '{row.name}' is used by the policies {', '.join(users[:10])}; "
            "remove it from them first"
        )
    session.delete(row)
    ctx.summary = f"deleted channel '{row.name}'"
    return Response(status_code=204)


@router.post("/alerts/channels/{channel_id}/test", response_model=ChannelTestOut)
async def test_channel(
    request: Request, channel_id: Id, principal: PrincipalDep, session: SessionDep
) -> ChannelTestOut:
    """Send a test notification now (not through the outbox) and say what the server answered."""
    ctx = _ctx(request, "alert_channel.test", f"alert-channel/{channel_id}")
    row = _get(session, AlertChannel, channel_id, principal, Permission.CHANNEL_MANAGE, "channel")
    config = json.loads(platform(request).secrets.decrypt(row.config_encrypted))
    receivers = session.scalars(
        select(AlertReceiver).where(
            AlertReceiver.business_id.is_(None)
            if row.business_id is None
            else AlertReceiver.business_id == row.business_id
        )
    ).all()
    field = {"email": "email", "sms": "phone", "wecom": "phone"}.get(row.kind)
    recipients = tuple(getattr(r, field) for r in receivers if field and getattr(r, field))[:5]
    now = utcnow()
    notice = AlertNotice(
        status="firing",
        alert_name="Gaia test notification",
        severity="info",
        labels={"alertname": "GaiaTest", "channel": row.name},
        annotations={"summary": f"A test of channel '{row.name}' sent by {principal.username}"},
        value=None,
        threshold=None,
        starts_at=now,
        ends_at=None,
        fingerprint="test",
        record_id=0,
    )
    subject, text = render_message(row.kind, notice, subject_template=None, body_template=None)
    message = OutgoingMessage(
        notice=notice,
        subject=subject,
        body=text,
        recipients=recipients,
        idempotency_key=f"gaia-test-{row.id}-{int(now.timestamp())}",
    )
    ctx.summary = f"sent a test notification through channel '{row.name}'"
    try:
        channel = channel_from_config(row.kind, config)
        receipt = await asyncio.wait_for(channel.send(message), timeout=30)
    except DeliveryError as exc:
        return ChannelTestOut(ok=False, error=exc.reason, retryable=exc.retryable)
    except TimeoutError:
        return ChannelTestOut(ok=False, error="no answer within 30 s", retryable=True)
    return ChannelTestOut(ok=True, receipt=receipt)


# ---------------------------------------------------------------- receivers and groups


def _receiver_out(r: AlertReceiver, names: dict[int, str]) -> ReceiverOut:
    return ReceiverOut(
        id=r.id,
        business=names.get(r.business_id) if r.business_id is not None else None,
        name=r.name,
        email=r.email,
        phone=r.phone,
    )


@router.get("/alerts/receivers", response_model=Page[ReceiverOut])
def list_receivers(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ReceiverOut]:
    rows, nxt, names = _page(
        session, principal, AlertReceiver, business, limit=limit, cursor=cursor
    )
    return Page[ReceiverOut](items=[_receiver_out(r, names) for r in rows], next_cursor=nxt)


@router.post("/alerts/receivers", response_model=ReceiverOut, status_code=201)
def create_receiver(
    request: Request, body: ReceiverCreate, principal: PrincipalDep, session: SessionDep
) -> ReceiverOut:
    ctx = _ctx(request, "alert_receiver.create", f"alert-receiver/{body.name}")
    owner = _owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    _unique_name(session, AlertReceiver, owner, body.name, "receiver")
    row = AlertReceiver(business_id=owner, name=body.name, email=body.email, phone=body.phone)
    session.add(row)
    session.flush()
    ctx.summary = f"created receiver '{body.name}'"
    return _receiver_out(row, _names(session, [owner]))


@router.patch("/alerts/receivers/{receiver_id}", response_model=ReceiverOut)
def update_receiver(
    request: Request,
    receiver_id: Id,
    body: ReceiverUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> ReceiverOut:
    ctx = _ctx(request, "alert_receiver.update", f"alert-receiver/{receiver_id}")
    row = _get(session, AlertReceiver, receiver_id, principal, Permission.ALERT_WRITE, "receiver")
    if body.name is not None and body.name != row.name:
        _unique_name(session, AlertReceiver, row.business_id, body.name, "receiver", skip=row.id)
        row.name = body.name
    if body.email is not None:
        row.email = body.email
    if body.phone is not None:
        row.phone = body.phone
    ctx.summary = f"updated receiver '{row.name}'"
    return _receiver_out(row, _names(session, [row.business_id]))


@router.delete("/alerts/receivers/{receiver_id}", status_code=204)
def delete_receiver(
    request: Request, receiver_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = _ctx(request, "alert_receiver.delete", f"alert-receiver/{receiver_id}")
    row = _get(session, AlertReceiver, receiver_id, principal, Permission.ALERT_WRITE, "receiver")
    users = _naming(session, AlertPolicy, "receiver_ids", row)
    groups = _naming(session, AlertReceiverGroup, "receiver_ids", row)
    if users or groups:
        raise Conflict(
            f"receiver '{row.name}' is named by policies {users[:10]} and groups "
            f"{groups[:10]}; remove it there first"
        )
    session.delete(row)
    ctx.summary = f"deleted receiver '{row.name}'"
    return Response(status_code=204)


def _group_out(g: AlertReceiverGroup, names: dict[int, str]) -> GroupOut:
    return GroupOut(
        id=g.id,
        business=names.get(g.business_id) if g.business_id is not None else None,
        name=g.name,
        receiver_ids=list(g.receiver_ids or []),
    )


@router.get("/alerts/receiver-groups", response_model=Page[GroupOut])
def list_groups(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[GroupOut]:
    rows, nxt, names = _page(
        session, principal, AlertReceiverGroup, business, limit=limit, cursor=cursor
    )
    return Page[GroupOut](items=[_group_out(r, names) for r in rows], next_cursor=nxt)


@router.post("/alerts/receiver-groups", response_model=GroupOut, status_code=201)
def create_group(
    request: Request, body: GroupCreate, principal: PrincipalDep, session: SessionDep
) -> GroupOut:
    ctx = _ctx(request, "alert_group.create", f"alert-group/{body.name}")
    owner = _owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    _unique_name(session, AlertReceiverGroup, owner, body.name, "receiver group")
    _same_owner(session, AlertReceiver, body.receiver_ids, owner, "receiver")
    row = AlertReceiverGroup(
        business_id=owner, name=body.name, receiver_ids=sorted(set(body.receiver_ids))
    )
    session.add(row)
    session.flush()
    ctx.summary = f"created receiver group '{body.name}' with {len(row.receiver_ids)} receivers"
    return _group_out(row, _names(session, [owner]))


@router.patch("/alerts/receiver-groups/{group_id}", response_model=GroupOut)
def update_group(
    request: Request, group_id: Id, body: GroupUpdate, principal: PrincipalDep, session: SessionDep
) -> GroupOut:
    ctx = _ctx(request, "alert_group.update", f"alert-group/{group_id}")
    row = _get(session, AlertReceiverGroup, group_id, principal, Permission.ALERT_WRITE, "group")
    if body.name is not None and body.name != row.name:
        _unique_name(
            session, AlertReceiverGroup, row.business_id, body.name, "receiver group", skip=row.id
        )
        row.name = body.name
    if body.receiver_ids is not None:
        _same_owner(session, AlertReceiver, body.receiver_ids, row.business_id, "receiver")
        row.receiver_ids = sorted(set(body.receiver_ids))
    ctx.summary = f"updated receiver group '{row.name}'"
    return _group_out(row, _names(session, [row.business_id]))


@router.delete("/alerts/receiver-groups/{group_id}", status_code=204)
def delete_group(
    request: Request, group_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = _ctx(request, "alert_group.delete", f"alert-group/{group_id}")
    row = _get(session, AlertReceiverGroup, group_id, principal, Permission.ALERT_WRITE, "group")
    users = _naming(session, AlertPolicy, "group_ids", row)
    if users:
        raise Conflict(f"group '{row.name}' is used by the policies {users[:10]}")
    session.delete(row)
    ctx.summary = f"deleted receiver group '{row.name}'"
    return Response(status_code=204)


# ---------------------------------------------------------------- policies


def _policy_out(p: AlertPolicy, names: dict[int, str]) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        business=names.get(p.business_id) if p.business_id is not None else None,
        name=p.name,
        scope=p.scope,
        matchers=dict(p.matchers or {}),
        metric=p.metric,
        comparison=p.comparison,
        threshold=p.threshold,
        for_seconds=p.for_seconds,
        severity=p.severity,
        repeat_seconds=p.repeat_seconds,
        enabled=p.enabled,
        receiver_ids=list(p.receiver_ids or []),
        group_ids=list(p.group_ids or []),
        channel_ids=list(p.channel_ids or []),
        templates=dict(p.templates or {}),
        summary=p.summary,
        description=p.description,
        builtin_key=p.builtin_key,
        created_by=p.created_by,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


def _scope_matchers(
    session: Session, body: PolicyCreate, business: Business | None
) -> dict[str, str]:
    """The labels a policy's scope pins, checked against what exists."""
    kind = ScopeKind(body.scope.kind)
    scope = body.scope
    if kind in (ScopeKind.CLUSTER, ScopeKind.NODE):
        if business is not None:
            raise InvalidRequest(
                f"a {kind.value} policy is the platform's: omit 'business' (platform admins)"
            )
        if not scope.cluster:
            raise InvalidRequest(f"scope.cluster is required for a {kind.value} policy")
        if session.scalars(select(Cluster.id).where(Cluster.name == scope.cluster)).first() is None:
            raise InvalidRequest(f"cluster '{scope.cluster}' is not registered")
        if kind is ScopeKind.NODE and not scope.node:
            raise InvalidRequest("scope.node is required for a node policy")
        pinned = {"cluster": scope.cluster}
        if kind is ScopeKind.NODE:
            pinned["node"] = scope.node or ""
        return pinned
    if business is None:
        raise InvalidRequest(f"a {kind.value} policy needs 'business'")
    pinned = {"business": business.name}
    if scope.cluster:
        pinned["cluster"] = scope.cluster
    if kind is ScopeKind.APP:
        if not scope.app:
            raise InvalidRequest("scope.app is required for an app policy")
        exists = session.scalars(
            select(App.id).where(App.business_id == business.id, App.name == scope.app)
        ).first()
        if exists is None:
            raise InvalidRequest(f"app '{scope.app}' not found in business '{business.name}'")
        pinned["app"] = scope.app
    return pinned


def _check_metric(metric: str, scope: ScopeKind, matchers: dict[str, str]) -> None:
    definition = catalogue.lookup(metric)
    if definition is None:
        close = [
            m.name for m in catalogue.METRICS if metric.split("_")[1:2] == m.name.split("_")[1:2]
        ]
        hint = f"; metrics of that area: {', '.join(close[:8])}" if close else ""
        raise InvalidRequest(f"metric '{metric}' is not in the catalogue (docs/metrics.md){hint}")
    missing = [label for label in SCOPE_LABELS[scope] if label not in definition.labels]
    if missing:
        raise InvalidRequest(
            f"metric '{metric}' has no label {', '.join(missing)}, so it cannot be scoped to "
            f"a {scope.value}; pick a metric with labels {', '.join(SCOPE_LABELS[scope])}"
        )
    unknown = [label for label in matchers if label not in definition.labels]
    if unknown:
        raise InvalidRequest(
            f"metric '{metric}' has no label {', '.join(unknown)} "
            f"(its labels: {', '.join(definition.labels)})"
        )


def _check_targets(
    session: Session,
    owner: int | None,
    *,
    receiver_ids: Sequence[int],
    group_ids: Sequence[int],
    channel_ids: Sequence[int],
) -> None:
    _same_owner(session, AlertReceiver, receiver_ids, owner, "receiver")
    _same_owner(session, AlertReceiverGroup, group_ids, owner, "receiver group")
    _same_owner(session, AlertChannel, channel_ids, owner, "channel")


def _check_templates(templates: dict[str, Any]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for kind, template in templates.items():
        for part in ("subject", "body"):
            text = getattr(template, part)
            if text:
                try:
                    check_template(text)
                except InvalidRequest as exc:
                    raise InvalidRequest(f"templates.{kind}.{part}: {exc.message}") from None
        out[str(kind)] = {"subject": template.subject, "body": template.body}
    return out


@router.get("/alerts/policies", response_model=Page[PolicyOut])
def list_policies(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    app: Annotated[str | None, Query(max_length=63)] = None,
    enabled: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[PolicyOut]:
    stmt = select(AlertPolicy)
    if enabled is not None:
        stmt = stmt.where(AlertPolicy.enabled == enabled)
    rows, nxt, names = _page(
        session, principal, AlertPolicy, business, limit=limit, cursor=cursor, stmt=stmt
    )
    if app:
        # the app is inside the JSON matchers: filter here, reading on until the page is full
        kept = [r for r in rows if (r.matchers or {}).get("app") == app]
        while nxt is not None and len(kept) < limit:
            more, nxt, more_names = _page(
                session, principal, AlertPolicy, business, limit=limit, cursor=nxt, stmt=stmt
            )
            kept += [r for r in more if (r.matchers or {}).get("app") == app]
            names.update(more_names)
        if len(kept) > limit:
            kept = kept[:limit]
            nxt = encode_cursor(kept[-1].id)
        rows = kept
    return Page[PolicyOut](items=[_policy_out(r, names) for r in rows], next_cursor=nxt)


@router.post("/alerts/policies", response_model=PolicyOut, status_code=201)
def create_policy(
    request: Request, body: PolicyCreate, principal: PrincipalDep, session: SessionDep
) -> PolicyOut:
    ctx = _ctx(request, "alert_policy.create", f"alert-policy/{body.name}")
    owner = _owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    business = session.get(Business, owner) if owner is not None else None
    pinned = _scope_matchers(session, body, business)
    extra = check_matchers(body.matchers)
    clash = [k for k in extra if k in pinned and extra[k] != pinned[k]]
    if clash:
        raise InvalidRequest(f"matchers {', '.join(clash)} contradict the policy's scope")
    matchers = {**extra, **pinned}
    _check_metric(body.metric, ScopeKind(body.scope.kind), matchers)
    _check_targets(
        session,
        owner,
        receiver_ids=body.receiver_ids,
        group_ids=body.group_ids,
        channel_ids=body.channel_ids,
    )
    if body.repeat_seconds and body.repeat_seconds < 60:
        raise InvalidRequest("repeat_seconds must be 0 (notify once) or at least 60")
    _unique_name(session, AlertPolicy, owner, body.name, "policy")
    now = utcnow()
    row = AlertPolicy(
        business_id=owner,
        name=body.name,
        scope=body.scope.kind,
        matchers=matchers,
        metric=body.metric,
        comparison=body.comparison,
        threshold=body.threshold,
        for_seconds=body.for_seconds,
        severity=body.severity,
        repeat_seconds=body.repeat_seconds,
        enabled=body.enabled,
        receiver_ids=list(dict.fromkeys(body.receiver_ids)),
        group_ids=list(dict.fromkeys(body.group_ids)),
        channel_ids=list(dict.fromkeys(body.channel_ids)),
        templates=_check_templates({str(k): v for k, v in body.templates.items()}),
        summary=body.summary,
        description=body.description,
        created_by=principal.username,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    ctx.summary = (
        f"created policy '{body.name}': {body.metric} {body.comparison} {body.threshold:g} "
        f"for {body.for_seconds}s on {matchers}"
    )
    return _policy_out(row, _names(session, [owner]))


@router.get("/alerts/policies/{policy_id}", response_model=PolicyOut)
def get_policy(policy_id: Id, principal: PrincipalDep, session: SessionDep) -> PolicyOut:
    row = _get(session, AlertPolicy, policy_id, principal, Permission.BUSINESS_READ, "policy")
    return _policy_out(row, _names(session, [row.business_id]))


@router.patch("/alerts/policies/{policy_id}", response_model=PolicyOut)
def update_policy(
    request: Request,
    policy_id: Id,
    body: PolicyUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> PolicyOut:
    """Change a policy. Its firing alerts stay firing (and keep their records) unless the new
    rule no longer holds for them, in which case the next evaluation resolves them."""
    ctx = _ctx(request, "alert_policy.update", f"alert-policy/{policy_id}")
    row = _get(session, AlertPolicy, policy_id, principal, Permission.ALERT_WRITE, "policy")
    fields = body.model_dump(exclude_unset=True)
    if body.name is not None and body.name != row.name:
        _unique_name(session, AlertPolicy, row.business_id, body.name, "policy", skip=row.id)
    if body.matchers is not None:
        extra = check_matchers(body.matchers)
        pinned = {
            k: v for k, v in (row.matchers or {}).items() if k in SCOPE_LABELS[ScopeKind(row.scope)]
        }
        if any(k in pinned and extra[k] != pinned[k] for k in extra):
            raise InvalidRequest("matchers contradict the policy's scope")
        matchers = {**extra, **pinned}
        _check_metric(row.metric, ScopeKind(row.scope), matchers)
        fields["matchers"] = matchers
    _check_targets(
        session,
        row.business_id,
        receiver_ids=body.receiver_ids or [],
        group_ids=body.group_ids or [],
        channel_ids=body.channel_ids or [],
    )
    if body.templates is not None:
        fields["templates"] = _check_templates({str(k): v for k, v in body.templates.items()})
    repeat = body.repeat_seconds
    if repeat is not None and repeat and repeat < 60:
        raise InvalidRequest("repeat_seconds must be 0 (notify once) or at least 60")
    for key, value in fields.items():
        if value is None and key != "threshold":
            continue
        if value is None:
            raise InvalidRequest("threshold cannot be null")
        setattr(row, key, value)
    row.updated_at = utcnow()
    ctx.summary = f"updated policy '{row.name}': {', '.join(sorted(fields)) or 'nothing'}"
    return _policy_out(row, _names(session, [row.business_id]))


def resolve_policy_records(
    session: Session, policy: AlertPolicy, *, why: str, now: dt.datetime
) -> int:
    records = list(
        session.scalars(
            select(AlertRecord).where(
                AlertRecord.policy_id == policy.id, AlertRecord.status == "firing"
            )
        )
    )
    for record in records:
        record.status = "resolved"
        record.resolved_at = now
        record.summary = f"{record.summary} ({why})".strip()
        if record.silenced_by is None:
            queue_notifications(session, record=record, policy=policy, event="resolved", now=now)
    return len(records)


@router.delete("/alerts/policies/{policy_id}", status_code=204)
def delete_policy(
    request: Request, policy_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = _ctx(request, "alert_policy.delete", f"alert-policy/{policy_id}")
    row = _get(session, AlertPolicy, policy_id, principal, Permission.ALERT_WRITE, "policy")
    resolved = resolve_policy_records(
        session, row, why="policy deleted", now=platform(request).clock.now()
    )
    session.flush()
    session.delete(row)
    ctx.summary = f"deleted policy '{row.name}' (resolved {resolved} firing alerts)"
    return Response(status_code=204)


# ---------------------------------------------------------------- built-in rules


@router.get("/alerts/builtin-rules", response_model=list[BuiltinRuleOut])
def list_builtin_rules(principal: PrincipalDep) -> list[BuiltinRuleOut]:
    return [
        BuiltinRuleOut(
            key=r.key,
            area=r.area,
            name=r.name,
            metric=r.metric,
            comparison=r.comparison.value,
            threshold=r.threshold,
            for_seconds=r.for_seconds,
            severity=r.severity.value,
            summary=r.summary,
        )
        for r in BUILTIN_RULES
    ]


@router.post("/clusters/{cluster}/alert-rules", response_model=BuiltinEnableOut, status_code=201)
def enable_builtin_rules(
    request: Request,
    body: BuiltinEnable,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = Path(max_length=63),
) -> BuiltinEnableOut:
    """Enable built-in rules on a cluster: one platform policy per rule, scoped to the cluster."""
    ctx = _ctx(request, "alert_rules.enable", f"cluster/{cluster}")
    ctx.cluster = cluster
    require_platform_admin(principal, "enable built-in alert rules")
    if session.scalars(select(Cluster.id).where(Cluster.name == cluster)).first() is None:
        raise NotFound(f"cluster '{cluster}' not found")
    keys = body.rules if body.rules is not None else [r.key for r in BUILTIN_RULES]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise InvalidRequest(
            f"unknown built-in rules {', '.join(unknown)}; GET /api/v1/alerts/builtin-rules"
        )
    _check_targets(
        session,
        None,
        receiver_ids=body.receiver_ids,
        group_ids=body.group_ids,
        channel_ids=body.channel_ids,
    )
    existing = {
        p.builtin_key
        for p in session.scalars(
            select(AlertPolicy).where(
                AlertPolicy.business_id.is_(None), AlertPolicy.builtin_key != ""
            )
        )
        if (p.matchers or {}).get("cluster") == cluster
    }
    created: list[AlertPolicy] = []
    now = utcnow()
    for key in dict.fromkeys(keys):
        if key in existing:
            continue
        row = cluster_policy(
            BY_KEY[key],
            cluster,
            created_by=principal.username,
            now=now,
            receiver_ids=body.receiver_ids,
            group_ids=body.group_ids,
            channel_ids=body.channel_ids,
        )
        _unique_name(session, AlertPolicy, None, row.name, "policy")
        session.add(row)
        created.append(row)
    session.flush()
    ctx.summary = f"enabled {len(created)} built-in alert rules on cluster '{cluster}'"
    return BuiltinEnableOut(
        created=[_policy_out(p, {}) for p in created],
        already_enabled=sorted(k for k in keys if k in existing),
    )


# ---------------------------------------------------------------- Prometheus rule files


@router.get("/alerts/rules.yaml", response_class=Response)
def export_rules(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
) -> Response:
    """The enabled policies you can see as a Prometheus rule file (``promtool check rules``)."""
    stmt = _visible(
        select(AlertPolicy).where(AlertPolicy.enabled), AlertPolicy, session, principal, business
    )
    policies = list(session.scalars(stmt.order_by(AlertPolicy.id)))
    names = _names(session, (p.business_id for p in policies))
    groups: dict[str, list[dict[str, object]]] = {}
    for p in policies:
        group = (
            "gaia-platform" if p.business_id is None else f"gaia-business-{names[p.business_id]}"
        )
        groups.setdefault(group, []).append(
            policy_rule(
                policy_id=p.id,
                name=p.name,
                metric=p.metric,
                matchers=p.matchers or {},
                comparison=p.comparison,
                threshold=p.threshold,
                for_seconds=p.for_seconds,
                severity=p.severity,
                summary=p.summary,
            )
        )
    interval = platform(request).settings.alert_eval_interval_seconds
    return Response(rule_file(groups, interval=interval), media_type="application/yaml")


# ---------------------------------------------------------------- silences


def _silence_out(s: AlertSilence, names: dict[int, str], now: dt.datetime) -> SilenceOut:
    return SilenceOut(
        id=s.id,
        business=names.get(s.business_id) if s.business_id is not None else None,
        matchers=dict(s.matchers or {}),
        starts_at=s.starts_at,
        ends_at=s.ends_at,
        comment=s.comment,
        created_by=s.created_by,
        active=s.starts_at <= now < s.ends_at,
    )


@router.get("/alerts/silences", response_model=Page[SilenceOut])
def list_silences(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    active: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[SilenceOut]:
    now = platform(request).clock.now()
    stmt = select(AlertSilence)
    if active is True:
        stmt = stmt.where(AlertSilence.starts_at <= now, AlertSilence.ends_at > now)
    rows, nxt, names = _page(
        session,
        principal,
        AlertSilence,
        business,
        limit=limit,
        cursor=cursor,
        stmt=stmt,
        descending=True,
    )
    return Page[SilenceOut](items=[_silence_out(r, names, now) for r in rows], next_cursor=nxt)


@router.post("/alerts/silences", response_model=SilenceOut, status_code=201)
def create_silence(
    request: Request, body: SilenceCreate, principal: PrincipalDep, session: SessionDep
) -> SilenceOut:
    ctx = _ctx(request, "alert_silence.create", "alert-silence")
    owner = _owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    now = platform(request).clock.now()
    starts = body.starts_at or now
    if starts.tzinfo is None or body.ends_at.tzinfo is None:
        raise InvalidRequest("starts_at and ends_at need a time zone (e.g. 2026-11-27T10:00:00Z)")
    if body.ends_at <= starts:
        raise InvalidRequest("ends_at must be after starts_at")
    if body.ends_at - starts > dt.timedelta(days=90):
        raise InvalidRequest("a silence lasts at most 90 days")
    matchers = check_matchers(body.matchers)
    if owner is not None:
        business = session.get(Business, owner)
        assert business is not None
        if matchers.get("business", business.name) != business.name:
            raise InvalidRequest("a business's silence can only match its own alerts")
    row = AlertSilence(
        business_id=owner,
        matchers=matchers,
        starts_at=starts,
        ends_at=body.ends_at,
        comment=body.comment,
        created_by=principal.username,
    )
    session.add(row)
    session.flush()
    ctx.summary = f"silenced {matchers} until {body.ends_at.isoformat()}"
    return _silence_out(row, _names(session, [owner]), now)


@router.delete("/alerts/silences/{silence_id}", status_code=204)
def expire_silence(
    request: Request, silence_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    """End a silence now (it stays listed, expired)."""
    ctx = _ctx(request, "alert_silence.expire", f"alert-silence/{silence_id}")
    row = _get(session, AlertSilence, silence_id, principal, Permission.ALERT_WRITE, "silence")
    now = platform(request).clock.now()
    if row.ends_at > now:
        row.ends_at = max(now, row.starts_at)
    ctx.summary = f"expired silence {silence_id}"
    return Response(status_code=204)


# ---------------------------------------------------------------- records


def _notification_out(n: AlertNotification) -> NotificationOut:
    return NotificationOut(
        id=n.id,
        event=n.event,
        channel=n.channel_name,
        channel_kind=n.channel_kind,
        receiver=n.receiver,
        recipients=list(n.recipients or []),
        state=n.state,
        attempts=n.attempts,
        next_attempt_at=n.next_attempt_at if n.state in ("pending", "retrying") else None,
        last_error=n.last_error,
        receipt=n.receipt,
        created_at=n.created_at,
        sent_at=n.sent_at,
    )


def _record_out(
    r: AlertRecord, names: dict[int, str], notifications: list[AlertNotification] | None = None
) -> AlertRecordOut:
    return AlertRecordOut(
        id=r.id,
        business=names.get(r.business_id) if r.business_id is not None else None,
        policy_id=r.policy_id,
        policy_name=r.policy_name,
        severity=r.severity,
        status=r.status,
        labels=dict(r.labels or {}),
        summary=r.summary,
        metric=r.metric,
        comparison=r.comparison,
        threshold=r.threshold,
        value=r.value,
        resolved_value=r.resolved_value,
        source=r.source,
        started_at=r.started_at,
        fired_at=r.fired_at,
        resolved_at=r.resolved_at,
        repeats=r.repeats,
        silenced_by=r.silenced_by,
        notifications=None
        if notifications is None
        else [_notification_out(n) for n in notifications],
    )


@router.get("/alerts/records", response_model=Page[AlertRecordOut])
def list_alert_records(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    status: Literal["firing", "resolved"] | None = None,
    severity: Literal["critical", "warning", "info"] | None = None,
    policy_id: Annotated[int | None, Query(ge=1, le=2**31)] = None,
    since: dt.datetime | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AlertRecordOut]:
    stmt = select(AlertRecord)
    if status:
        stmt = stmt.where(AlertRecord.status == status)
    if severity:
        stmt = stmt.where(AlertRecord.severity == severity)
    if policy_id:
        stmt = stmt.where(AlertRecord.policy_id == policy_id)
    if since:
        stmt = stmt.where(AlertRecord.fired_at >= since)
    rows, nxt, names = _page(
        session,
        principal,
        AlertRecord,
        business,
        limit=limit,
        cursor=cursor,
        stmt=stmt,
        descending=True,
    )
    return Page[AlertRecordOut](items=[_record_out(r, names) for r in rows], next_cursor=nxt)


@router.get("/alerts/records/{record_id}", response_model=AlertRecordOut)
def get_alert_record(
    principal: PrincipalDep,
    session: SessionDep,
    record_id: int = Path(ge=1, le=2**62),
) -> AlertRecordOut:
    """One alert with every notification of it: per receiver and channel, sent / retrying /
    failed, with the reason and the server's receipt."""
    row = session.get(AlertRecord, record_id)
    if row is None:
        raise NotFound(f"alert record {record_id} not found")
    _check(principal, row.business_id, Permission.BUSINESS_READ, f"alert record {record_id}")
    notifications = list(
        session.scalars(
            select(AlertNotification)
            .where(AlertNotification.record_id == row.id)
            .order_by(AlertNotification.id)
        )
    )
    return _record_out(row, _names(session, [row.business_id]), notifications)


# ---------------------------------------------------------------- Alertmanager


@router.post("/alerts/alertmanager", response_model=AlertmanagerResult)
def alertmanager_webhook(
    request: Request, body: AlertmanagerPayload, session: SessionDep
) -> AlertmanagerResult:
    """Alertmanager's webhook receiver (``webhook_configs``, payload version 4). Authenticate with
    ``http_config.authorization.credentials``: a platform admin's API token, or
    ``GAIA_ALERTMANAGER_TOKEN``."""
    ctx = _ctx(request, "alerts.alertmanager", "alertmanager")
    plat = platform(request)
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    expected = plat.settings.alertmanager_token
    if not token:
        raise Unauthenticated("send 'Authorization: Bearer <token>' (see http_config)")
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        ctx.actor = "alertmanager"
    else:
        principal = authenticate(session, token)
        require_platform_admin(principal, "post Alertmanager alerts")
        ctx.actor = principal.username
    result = ingest(
        session,
        [
            IncomingAlert(
                status=a.status,
                labels=dict(a.labels),
                annotations=dict(a.annotations),
                starts_at=a.startsAt,
                ends_at=a.endsAt if a.endsAt and a.endsAt.year > 1 else None,
            )
            for a in body.alerts
        ],
        now=plat.clock.now(),
    )
    ctx.summary = (
        f"Alertmanager ({body.receiver}): {result.fired} fired, {result.resolved} resolved, "
        f"{result.duplicates} duplicates, {result.unrouted} unrouted"
    )
    return AlertmanagerResult(
        fired=result.fired,
        resolved=result.resolved,
        duplicates=result.duplicates,
        unrouted=result.unrouted,
    )


# ---------------------------------------------------------------- metric queries


@router.get("/monitoring/series", response_model=list[SeriesOut], tags=["monitoring"])
async def query_series(
    request: Request,
    principal: PrincipalDep,
    metric: Annotated[str, Query(min_length=1, max_length=200)],
    start: float | None = None,
    end: float | None = None,
    step: Annotated[float, Query(gt=0, le=86400)] = 60.0,
    business: Annotated[str | None, Query(max_length=63)] = None,
    app: Annotated[str | None, Query(max_length=63)] = None,
    instance: Annotated[str | None, Query(max_length=253)] = None,
    cluster: Annotated[str | None, Query(max_length=63)] = None,
    node: Annotated[str | None, Query(max_length=253)] = None,
) -> list[SeriesOut]:
    """A metric's series over a time range (default: the last hour). Members of a business see
    its series (``business`` required); cluster and node series are the platform admins'."""
    definition = catalogue.lookup(metric)
    if definition is None:
        raise InvalidRequest(f"metric '{metric}' is not in the catalogue (docs/metrics.md)")
    plat = platform(request)
    if not principal.is_platform_admin:
        if not business:
            raise InvalidRequest("business is required (you see your businesses' series)")
        if "business" not in definition.labels:
            raise Forbidden(f"'{metric}' is a platform metric: platform admins only")
        with plat.db.read_session() as session:
            business_for(session, principal, business, Permission.BUSINESS_READ)
    now = plat.clock.now().timestamp()
    end = end if end is not None else now
    start = start if start is not None else end - 3600
    if start > end:
        raise InvalidRequest("start must not be after end")
    if (end - start) / step > 11_000:
        raise InvalidRequest("too many points: widen step (at most 11,000 points per series)")
    matchers = {
        k: v
        for k, v in (
            ("business", business),
            ("app", app),
            ("instance", instance),
            ("cluster", cluster),
            ("node", node),
        )
        if v
    }
    series = await plat.metric_store.query_range(metric, matchers, start=start, end=end, step=step)
    return [
        SeriesOut(metric=s.metric, labels=dict(s.labels), points=list(s.points))
        for s in series[:500]
    ]
