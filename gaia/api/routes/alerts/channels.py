"""Notification channels: ``/alerts/channels``, and a test send through one.

Only a business's admins manage its channels and see their configuration, with credentials
masked even then: a credential is write-only, and an update that leaves it out (or sends the mask
back) keeps the stored one. A webhook URL is shown cut to its origin, since chat webhooks carry
their token in the path or the query. Configs are validated by ``gaia.monitor.alerting.channels``
and stored encrypted (``gaia.store.alerting.targets``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from gaia.api.deps import CommittingRoute, Principal, PrincipalDep, SessionDep, audit, platform
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.alerts._owned import BusinessQuery, Id, OwnedKind, owner_id, owner_name
from gaia.api.schemas.alerts import ChannelCreate, ChannelOut, ChannelTestOut, ChannelUpdate
from gaia.api.schemas.base import Page
from gaia.domain.rbac import Permission, allows
from gaia.monitor.alerting.channels import (
    SECRET_FIELDS,
    AlertNotice,
    DeliveryError,
    OutgoingMessage,
    channel_from_config,
    render_message,
    validate_channel_config,
)
from gaia.security import SecretBox
from gaia.store.alerting import targets
from gaia.store.models import AlertChannel, utcnow

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)
CHANNELS = OwnedKind(AlertChannel, "channel")
MASK = "********"
# which receiver field a test send addresses, per kind (a webhook addresses nobody)
TEST_RECIPIENT_FIELD = {"email": "email", "sms": "phone", "wecom": "phone"}


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
    c: AlertChannel, names: Mapping[int, str], principal: Principal, secrets: SecretBox
) -> ChannelOut:
    show = principal.is_platform_admin or (
        c.business_id is not None
        and allows(principal.roles.get(c.business_id), Permission.CHANNEL_MANAGE)
    )
    config = None
    if show:
        config = _masked(c.kind, json.loads(secrets.decrypt(c.config_encrypted)))
    return ChannelOut(
        id=c.id,
        business=owner_name(c.business_id, names),
        name=c.name,
        kind=c.kind,
        rate_limit_per_minute=c.rate_limit_per_minute,
        enabled=c.enabled,
        config=config,
        created_at=c.created_at,
        updated_at=c.updated_at,
    )


def _merged_config(kind: str, current: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """The stored config with the sent fields applied: a credential not re-sent (or sent back
    masked) keeps its value."""
    merged = {**current}
    for key, value in sent.items():
        if value is None or (key in current and value == _shown(kind, key, current[key])):
            continue
        merged[key] = value
    return merged


@router.get("/alerts/channels", response_model=Page[ChannelOut])
def list_channels(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[ChannelOut]:
    listing = CHANNELS.page(session, principal, business, limit=limit, cursor=cursor)
    secrets = platform(request).secrets
    return Page[ChannelOut](
        items=[_channel_out(r, listing.names, principal, secrets) for r in listing.rows],
        next_cursor=listing.next_cursor,
    )


@router.post("/alerts/channels", response_model=ChannelOut, status_code=201)
def create_channel(
    request: Request, body: ChannelCreate, principal: PrincipalDep, session: SessionDep
) -> ChannelOut:
    ctx = audit(request, action="alert_channel.create", target=f"alert-channel/{body.name}")
    owner = owner_id(session, principal, body.business, Permission.CHANNEL_MANAGE, ctx)
    config = validate_channel_config(body.kind, body.config)
    secrets = platform(request).secrets
    row = targets.create_channel(
        session,
        business_id=owner,
        name=body.name,
        kind=body.kind,
        config_encrypted=secrets.encrypt(json.dumps(config)),
        rate_limit_per_minute=body.rate_limit_per_minute,
        enabled=body.enabled,
        now=utcnow(),
    )
    ctx.summary = f"created {body.kind} channel '{body.name}'"
    return _channel_out(row, CHANNELS.names(session, row), principal, secrets)


@router.get("/alerts/channels/{channel_id}", response_model=ChannelOut)
def get_channel(
    request: Request, channel_id: Id, principal: PrincipalDep, session: SessionDep
) -> ChannelOut:
    row = CHANNELS.get(session, principal, channel_id, Permission.BUSINESS_READ)
    return _channel_out(row, CHANNELS.names(session, row), principal, platform(request).secrets)


@router.patch("/alerts/channels/{channel_id}", response_model=ChannelOut)
def update_channel(
    request: Request,
    channel_id: Id,
    body: ChannelUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> ChannelOut:
    ctx = audit(request, action="alert_channel.update", target=f"alert-channel/{channel_id}")
    row = CHANNELS.get(session, principal, channel_id, Permission.CHANNEL_MANAGE)
    secrets = platform(request).secrets
    changed = []
    config_encrypted = None
    if body.config is not None:
        current = json.loads(secrets.decrypt(row.config_encrypted))
        config = validate_channel_config(row.kind, _merged_config(row.kind, current, body.config))
        config_encrypted = secrets.encrypt(json.dumps(config))
        changed.append("config (" + ", ".join(sorted(body.config)) + ")")
    changed += targets.update_channel(
        session,
        row,
        config_encrypted=config_encrypted,
        name=body.name,
        rate_limit_per_minute=body.rate_limit_per_minute,
        enabled=body.enabled,
        now=utcnow(),
    )
    ctx.summary = f"updated channel '{row.name}': {', '.join(changed) or 'nothing'}"
    return _channel_out(row, CHANNELS.names(session, row), principal, secrets)


@router.delete("/alerts/channels/{channel_id}", status_code=204)
def delete_channel(
    request: Request, channel_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = audit(request, action="alert_channel.delete", target=f"alert-channel/{channel_id}")
    row = CHANNELS.get(session, principal, channel_id, Permission.CHANNEL_MANAGE)
    targets.delete_channel(session, row)
    ctx.summary = f"deleted channel '{row.name}'"
    return Response(status_code=204)


@router.post("/alerts/channels/{channel_id}/test", response_model=ChannelTestOut)
async def test_channel(
    request: Request, channel_id: Id, principal: PrincipalDep, session: SessionDep
) -> ChannelTestOut:
    """Send a test notification now (not through the outbox) and say what the server answered."""
    ctx = audit(request, action="alert_channel.test", target=f"alert-channel/{channel_id}")
    row = CHANNELS.get(session, principal, channel_id, Permission.CHANNEL_MANAGE)
    config = json.loads(platform(request).secrets.decrypt(row.config_encrypted))
    receivers = targets.receivers_of_owner(session, row.business_id)
    field = TEST_RECIPIENT_FIELD.get(row.kind)
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
