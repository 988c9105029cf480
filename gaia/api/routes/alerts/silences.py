"""Silences: ``/alerts/silences``. A silence mutes the notifications of the alerts its matchers
match (they are still recorded, marked ``silenced_by``); a business's silence only matches its
own alerts. Deleting a silence expires it: it stays listed, so the record of who silenced what
and when is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from fastapi import APIRouter, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    inline_write,
    platform,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.alerts._owned import BusinessQuery, Id, OwnedKind, owner_id, owner_name
from gaia.api.schemas.alerts import SilenceCreate, SilenceOut
from gaia.api.schemas.base import Page
from gaia.domain.rbac import Permission
from gaia.store.alerting import policies as stored
from gaia.store.models import AlertSilence

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)
SILENCES = OwnedKind(AlertSilence, "silence")


def _silence_out(s: AlertSilence, names: Mapping[int, str], now: dt.datetime) -> SilenceOut:
    return SilenceOut(
        id=s.id,
        business=owner_name(s.business_id, names),
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
    where = [AlertSilence.starts_at <= now, AlertSilence.ends_at > now] if active is True else []
    listing = SILENCES.page(
        session, principal, business, limit=limit, cursor=cursor, where=where, descending=True
    )
    return Page[SilenceOut](
        items=[_silence_out(r, listing.names, now) for r in listing.rows],
        next_cursor=listing.next_cursor,
    )


@router.post("/alerts/silences", response_model=SilenceOut, status_code=201)
@inline_write
def create_silence(
    request: Request, body: SilenceCreate, principal: PrincipalDep, session: SessionDep
) -> SilenceOut:
    ctx = audit(request, action="alert_silence.create", target="alert-silence")
    owner = owner_id(session, principal, body.business, Permission.ALERT_WRITE, ctx)
    now = platform(request).clock.now()
    row = stored.create_silence(
        session,
        business_id=owner,
        matchers=body.matchers,
        starts_at=body.starts_at or now,
        ends_at=body.ends_at,
        comment=body.comment,
        created_by=principal.username,
    )
    ctx.summary = f"silenced {row.matchers} until {body.ends_at.isoformat()}"
    return _silence_out(row, SILENCES.names(session, row), now)


@router.delete("/alerts/silences/{silence_id}", status_code=204)
@inline_write
def expire_silence(
    request: Request, silence_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    """End a silence now (it stays listed, expired)."""
    ctx = audit(request, action="alert_silence.expire", target=f"alert-silence/{silence_id}")
    row = SILENCES.get(session, principal, silence_id, Permission.ALERT_WRITE)
    stored.expire_silence(row, now=platform(request).clock.now())
    ctx.summary = f"expired silence {silence_id}"
    return Response(status_code=204)
