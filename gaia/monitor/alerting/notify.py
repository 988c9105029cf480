"""Turning an outbox row back into a message: what a notification says, rendered at send time.

The outbox rows are written by ``gaia.store.alerting.outbox.queue_notifications`` in the
transaction that fires, repeats or resolves a record. ``build_message`` is the other end: the
delivery loop renders the message from the record and the policy's per-channel templates at send
time (the channel config may have been changed since the row was queued: channels are changeable
at any time, and the current one is used). Text is rendered only for the kinds that send it
(``TEXT_KINDS``: email, WeCom); a webhook's or an SMS's message carries the notice alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from gaia.monitor.alerting.channels import (
    TEXT_KINDS,
    AlertNotice,
    OutgoingMessage,
    render_message,
)
from gaia.store.alerting.outbox import ClaimedNotification, ClaimedRecord


def notice_of(record: ClaimedRecord, event: str, *, external_url: str = "") -> AlertNotice:
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
    row: ClaimedNotification,
    record: ClaimedRecord,
    templates: Mapping[str, Mapping[str, str]],
    *,
    external_url: str = "",
) -> OutgoingMessage:
    """``templates``: the policy's, per channel kind (a kind without one gets the default)."""
    notice = notice_of(record, row.event, external_url=external_url)
    subject = body = ""
    if row.channel_kind in TEXT_KINDS:  # the others build their request from the notice
        template = templates.get(row.channel_kind) or {}
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
