"""Alert records: ``/alerts/records``, what fired, when, with which value, and (one record at a
time) every notification of it: per receiver and channel, sent, retrying or failed, with the
reason and the server's receipt. Records are written by the evaluator and the Alertmanager
receiver, never through this API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from sqlalchemy import false

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.alerts._owned import BusinessQuery, OwnedKind, authorise, owner_name
from gaia.api.schemas.alerts import AlertRecordOut, NotificationOut
from gaia.api.schemas.base import Page
from gaia.domain.rbac import Permission
from gaia.store.alerting.owned import business_names
from gaia.store.alerting.records import record_with_notifications
from gaia.store.models import ROW_ID_MAX, AlertNotification, AlertRecord

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)
RECORDS = OwnedKind(AlertRecord, "alert record")


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
    r: AlertRecord,
    names: Mapping[int, str],
    notifications: Sequence[AlertNotification] | None = None,
) -> AlertRecordOut:
    return AlertRecordOut(
        id=r.id,
        business=owner_name(r.business_id, names),
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
    where = []
    if status:
        where.append(AlertRecord.status == status)
    if severity:
        where.append(AlertRecord.severity == severity)
    if policy_id:
        # beyond a row id no policy can match (and PostgreSQL would refuse the comparison)
        where.append(AlertRecord.policy_id == policy_id if policy_id <= ROW_ID_MAX else false())
    if since:
        where.append(AlertRecord.fired_at >= since)
    listing = RECORDS.page(
        session, principal, business, limit=limit, cursor=cursor, where=where, descending=True
    )
    return Page[AlertRecordOut](items=listing.items(_record_out), next_cursor=listing.next_cursor)


@router.get("/alerts/records/{record_id}", response_model=AlertRecordOut)
def get_alert_record(
    principal: PrincipalDep,
    session: SessionDep,
    record_id: int = Path(ge=1, le=2**62),
) -> AlertRecordOut:
    """One alert with every notification of it: per receiver and channel, sent / retrying /
    failed, with the reason and the server's receipt."""
    row, notifications = record_with_notifications(session, record_id)
    authorise(principal, row.business_id, Permission.BUSINESS_READ, f"alert record {record_id}")
    return _record_out(row, business_names(session, [row.business_id]), notifications)
