"""Turning an alert record's event into outbox rows, and an outbox row back into a message.

``queue_notifications`` runs inside the transaction that fires, repeats or resolves a record: it
expands the policy's receivers and receiver groups, and writes one ``AlertNotification`` per
(receiver, channel) for person-addressed channels (email, SMS) and one per channel for group
channels (a WeCom robot posts to a group; a webhook has no persons), each with an idempotency
key that is the same on every retry. A receiver without the address a channel needs gets a row
that is ``failed`` at once with that reason, so a gap in the contact list shows up in the record
instead of as a notification that silently never came.

``build_message`` is the other end: the delivery loop renders the message from the record and
the policy's per-channel templates at send time (the channel config may have been changed since
the row was queued: channels are changeable at any time, and the current one is used).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.monitor.alerting.channels import AlertNotice, OutgoingMessage, render_message
from gaia.store.models import (
    AlertChannel,
    AlertNotification,
    AlertPolicy,
    AlertReceiver,
    AlertReceiverGroup,
    AlertRecord,
)

PERSON_CHANNELS = {"email": "email", "sms": "phone"}  # kind -> receiver field
GROUP_CHANNELS = {"wecom", "webhook"}


def policy_receivers(session: Session, policy: AlertPolicy) -> list[AlertReceiver]:
    ids = set(policy.receiver_ids or [])
    if policy.group_ids:
        for group in session.scalars(
            select(AlertReceiverGroup).where(AlertReceiverGroup.id.in_(policy.group_ids))
        ):
            ids.update(group.receiver_ids or [])
    if not ids:
        return []
    return list(
        session.scalars(
            select(AlertReceiver).where(AlertReceiver.id.in_(ids)).order_by(AlertReceiver.id)
        )
    )


def load_targets(
    session: Session, policies: Iterable[AlertPolicy]
) -> dict[int, tuple[list[AlertReceiver], list[AlertChannel]]]:
    """The receivers and channels of many policies in three queries (the evaluator queues
    thousands of notifications in one pass; a query per notification would dominate it)."""
    policies = list(policies)
    group_ids = {g for p in policies for g in (p.group_ids or [])}
    groups = {
        g.id: g
        for g in (
            session.scalars(select(AlertReceiverGroup).where(AlertReceiverGroup.id.in_(group_ids)))
            if group_ids
            else []
        )
    }
    wanted: dict[int, set[int]] = {}
    for p in policies:
        ids = set(p.receiver_ids or [])
        for g in p.group_ids or []:
            if g in groups:
                ids.update(groups[g].receiver_ids or [])
        wanted[p.id] = ids
    receiver_ids = set().union(*wanted.values()) if wanted else set()
    receivers = {
        r.id: r
        for r in (
            session.scalars(select(AlertReceiver).where(AlertReceiver.id.in_(receiver_ids)))
            if receiver_ids
            else []
        )
    }
    channel_ids = {c for p in policies for c in (p.channel_ids or [])}
    channels = {
        c.id: c
        for c in (
            session.scalars(select(AlertChannel).where(AlertChannel.id.in_(channel_ids)))
            if channel_ids
            else []
        )
    }
    return {
        p.id: (
            [receivers[i] for i in sorted(wanted[p.id]) if i in receivers],
            [channels[i] for i in (p.channel_ids or []) if i in channels],
        )
        for p in policies
    }


def queue_notifications(
    session: Session,
    *,
    record: AlertRecord,
    policy: AlertPolicy,
    event: str,
    now: dt.datetime,
    receivers: list[AlertReceiver] | None = None,
    channels: Iterable[AlertChannel] | None = None,
) -> list[AlertNotification]:
    """Queue the notifications of one record event; ``record`` must have its id (flushed)."""
    if receivers is None:
        receivers = policy_receivers(session, policy)
    if channels is None:
        ids = list(policy.channel_ids or [])
        channels = (
            session.scalars(select(AlertChannel).where(AlertChannel.id.in_(ids))) if ids else []
        )
    seq = record.repeats if event == "repeat" else 0
    rows: list[AlertNotification] = []

    def add(channel: AlertChannel, receiver: str, recipients: list[str], error: str = "") -> None:
        rows.append(
            AlertNotification(
                record_id=record.id,
                business_id=record.business_id,
                event=event,
                channel_id=channel.id,
                channel_name=channel.name,
                channel_kind=channel.kind,
                receiver=receiver,
                recipients=recipients,
                state="failed" if error else "pending",
                last_error=error,
                next_attempt_at=now,
                idempotency_key=f"gaia-{record.id}-{event}-{seq}-{channel.id}-{receiver}",
                created_at=now,
            )
        )

    for channel in channels:
        if not channel.enabled:
            continue
        field = PERSON_CHANNELS.get(channel.kind)
        if field is not None:
            if not receivers:
                add(channel, "", [], f"the policy has no receivers to {channel.kind}")
            for receiver in receivers:
                address = getattr(receiver, field)
                if address:
                    add(channel, receiver.name, [address])
                else:
                    add(channel, receiver.name, [], f"receiver {receiver.name} has no {field}")
        else:
            mentions = [r.phone for r in receivers if r.phone] if channel.kind == "wecom" else []
            add(channel, "", mentions)
    session.add_all(rows)
    return rows


def notice_of(record: AlertRecord, event: str, *, external_url: str = "") -> AlertNotice:
    resolved = event == "resolved"
    labels = dict(record.labels or {})
    labels.setdefault("alertname", record.policy_name)
    labels.setdefault("severity", record.severity)
    annotations = {"summary": record.summary} if record.summary else {}
    if record.metric:
        annotations.setdefault(
            "description",
            f"{record.metric} {record.comparison} {record.threshold:g}"
            if record.threshold is not None
            else record.metric,
        )
    return AlertNotice(
        status="resolved" if resolved else "firing",
        alert_name=record.policy_name,
        severity=record.severity,
        labels=labels,
        annotations=annotations,
        value=record.resolved_value if resolved else record.value,
        threshold=record.threshold,
        starts_at=record.started_at,
        ends_at=record.resolved_at if resolved else None,
        fingerprint=record.fingerprint,
        record_id=record.id,
        url=f"{external_url.rstrip('/')}/console/alerts/records/{record.id}"
        if external_url
        else "",
    )


def build_message(
    row: AlertNotification,
    record: AlertRecord,
    policy: AlertPolicy | None,
    *,
    external_url: str = "",
) -> OutgoingMessage:
    notice = notice_of(record, row.event, external_url=external_url)
    template = (policy.templates or {}).get(row.channel_kind, {}) if policy is not None else {}
    subject, body = render_message(
        row.channel_kind,
        notice,
        subject_template=template.get("subject") or None,
        body_template=template.get("body") or None,
    )
    return OutgoingMessage(
        notice=notice,
        subject=subject,
        body=body,
        recipients=tuple(row.recipients or ()),
        idempotency_key=row.idempotency_key,
    )
