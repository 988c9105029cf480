"""The notification outbox: rows written with the alert event that causes them, claimed with a
lease by the delivery loop, and closed with each send's result.

Writing (``queue_notifications``, inside the transaction that fires, repeats or resolves a record):
the policy's receivers and receiver groups are expanded, and one ``AlertNotification`` is written
per (receiver, channel) for person-addressed channels (email, SMS) and one per channel for group
channels (a WeCom robot posts to a group; a webhook has no persons), each with an idempotency key
that is the same on every retry. A receiver without the address a channel needs gets a row that is
``failed`` at once with that reason, so a gap in the contact list shows up in the record instead of
as a notification that silently never came. ``load_targets`` reads the receivers and channels of
many policies in three queries, for the evaluator's passes.

Claiming (``claim_due_notifications``, one transaction): rows left ``sending`` past their lease go
back to ``retrying``; due rows are read oldest first, each channel's rate limit is asked of the
caller (the delivery loop keeps the sliding window in memory), and one conditional UPDATE ...
RETURNING claims them all, so two platform replicas never send the same row at once. The claims
come back with their channel, record and policy templates for the caller to render, as plain
values of only the columns a message is made of (``ClaimedNotification``, ``ClaimedRecord``: a
claim of hundreds of rows spent most of its time building ORM objects and decoding JSON and
timestamps it never used), and the templates only for the kinds that render text with them
(``policy_kinds``).

Closing (``record_results``): one executemany per shape of result, and only for rows still
``sending`` (a row reclaimed meanwhile is left alone). The retry rule (back-off, when to give up) is
the delivery loop's, not the store's. See docs/architecture.md (the store; the outbox).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, fields
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

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


# ---------------------------------------------------------------- delivery

DUE_STATES = ("pending", "retrying")
INTERRUPTED = "interrupted: the platform stopped while sending; sending again"


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    """The columns of a claimed outbox row that its message and its send are made of."""

    id: int
    record_id: int
    channel_id: int | None
    channel_name: str
    channel_kind: str
    event: str
    recipients: list[str]
    attempts: int  # as read before the claim's UPDATE counted this attempt
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class ClaimedRecord:
    """The columns of an alert record that a notice (``gaia.monitor.alerting.notify``) says."""

    id: int
    policy_id: int | None
    policy_name: str
    fingerprint: str
    severity: str
    labels: dict[str, str]
    summary: str
    value: float | None
    resolved_value: float | None
    threshold: float | None
    comparison: str
    metric: str
    started_at: dt.datetime
    resolved_at: dt.datetime | None


def _columns(model: type[Any], shape: type[Any]) -> list[Any]:
    return [getattr(model, f.name) for f in fields(shape)]


_NOTIFICATION_COLUMNS = _columns(AlertNotification, ClaimedNotification)
_RECORD_COLUMNS = _columns(AlertRecord, ClaimedRecord)


@dataclass(frozen=True, slots=True)
class Claim:
    """A notification this process won, with what rendering and sending it needs: plain values,
    and the channel (an ORM row of the claiming session: use it before the session ends).
    ``templates`` is the policy's per-kind templates, for the kinds in ``policy_kinds`` (empty
    for the others, and where the record has no policy)."""

    notification: ClaimedNotification
    channel: AlertChannel
    record: ClaimedRecord
    templates: dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class NotificationResult:
    """What one send did to its row; a field left None is not written."""

    id: int
    state: str  # "sent" | "retrying" | "failed", or "pending" for a claim handed back unsent
    last_error: str
    attempts: int | None = None  # a claim handed back unsent uncounts its attempt
    receipt: str | None = None
    sent_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None


def anything_to_claim(session: Session, *, now: dt.datetime) -> bool:
    """Whether ``claim_due_notifications`` would find work: a row due, or a lease run out.

    A read (two probes of the due index): the delivery loop asks every second, and should take
    the writer's turn only when there is something to claim."""
    due = session.execute(
        select(AlertNotification.id)
        .where(AlertNotification.state.in_(DUE_STATES), AlertNotification.next_attempt_at <= now)
        .limit(1)
    ).first()
    if due is not None:
        return True
    lapsed = session.execute(
        select(AlertNotification.id)
        .where(AlertNotification.state == "sending", AlertNotification.lease_until < now)
        .limit(1)
    ).first()
    return lapsed is not None


def claim_due_notifications(
    session: Session,
    *,
    now: dt.datetime,
    lease: dt.timedelta,
    batch: int,
    next_slot: Callable[[AlertChannel], float],
    policy_kinds: Collection[str] = (),
) -> list[Claim]:
    """Reclaim expired leases, then claim up to ``batch`` due rows whose channel may send now.

    ``next_slot(channel)`` is the channel's rate limit: ``now``'s timestamp if a send may go now
    (and counts it), else when the next one may; a throttled row waits for that slot. A row whose
    channel was deleted or disabled fails with that said. ``policy_kinds``: the channel kinds
    whose claims come with their policy's templates.
    """
    session.execute(
        update(AlertNotification)
        .where(AlertNotification.state == "sending", AlertNotification.lease_until < now)
        .values(state="retrying", lease_until=None, next_attempt_at=now, last_error=INTERRUPTED)
    )
    rows = [
        ClaimedNotification(*row)
        for row in session.execute(
            select(*_NOTIFICATION_COLUMNS)
            .where(
                AlertNotification.state.in_(DUE_STATES),
                AlertNotification.next_attempt_at <= now,
            )
            .order_by(AlertNotification.next_attempt_at, AlertNotification.id)
            .limit(batch)
        )
    ]
    if not rows:
        return []
    channels = {
        c.id: c
        for c in session.scalars(
            select(AlertChannel).where(
                AlertChannel.id.in_({r.channel_id for r in rows if r.channel_id})
            )
        )
    }
    t = now.timestamp()
    candidates: list[tuple[ClaimedNotification, AlertChannel]] = []
    failed: list[dict[str, Any]] = []
    throttled: list[dict[str, Any]] = []
    for row in rows:
        channel = channels.get(row.channel_id) if row.channel_id else None
        if channel is None or not channel.enabled:
            why = "was deleted" if channel is None else "is disabled"
            failed.append({"b_id": row.id, "last_error": f"channel {row.channel_name} {why}"})
            continue
        slot = next_slot(channel)
        if slot > t:
            throttled.append(
                {
                    "b_id": row.id,
                    "next_attempt_at": dt.datetime.fromtimestamp(slot, dt.UTC),
                    "last_error": "waiting for the channel's rate limit "
                    f"({channel.rate_limit_per_minute}/min)",
                }
            )
            continue
        candidates.append((row, channel))
    table = cast(Table, AlertNotification.__table__)
    # only rows still due: one another replica claimed meanwhile is that replica's to close
    # (an IN would be expanded, which executemany cannot do)
    still_due = (table.c.id == bindparam("b_id"), or_(*(table.c.state == s for s in DUE_STATES)))
    if failed:
        session.execute(
            table.update()
            .where(*still_due)
            .values(state="failed", last_error=bindparam("last_error")),
            failed,
        )
    if throttled:
        session.execute(
            table.update()
            .where(*still_due)
            .values(
                next_attempt_at=bindparam("next_attempt_at"), last_error=bindparam("last_error")
            ),
            throttled,
        )
    if not candidates:
        return []
    # One conditional UPDATE claims them all; RETURNING says which this process won
    # (a row another replica claimed meanwhile is no longer pending or retrying).
    won = set(
        session.scalars(
            update(AlertNotification)
            .where(
                AlertNotification.id.in_([row.id for row, _ in candidates]),
                AlertNotification.state.in_(DUE_STATES),
            )
            .values(
                state="sending",
                lease_until=now + lease,
                attempts=AlertNotification.attempts + 1,
            )
            .returning(AlertNotification.id)
            .execution_options(synchronize_session=False)
        )
    )
    claimed = [(row, channel) for row, channel in candidates if row.id in won]
    if not claimed:
        return []
    records = {
        r.id: r
        for r in (
            ClaimedRecord(*values)
            for values in session.execute(
                select(*_RECORD_COLUMNS).where(
                    AlertRecord.id.in_({row.record_id for row, _ in claimed})
                )
            )
        )
    }
    policy_ids = {
        policy_id
        for row, _ in claimed
        if row.channel_kind in policy_kinds
        and (policy_id := records[row.record_id].policy_id) is not None
    }
    templates: dict[int, dict[str, dict[str, str]]] = (
        {
            policy_id: policy_templates
            for policy_id, policy_templates in session.execute(
                select(AlertPolicy.id, AlertPolicy.templates).where(AlertPolicy.id.in_(policy_ids))
            )
        }
        if policy_ids
        else {}
    )
    return [
        Claim(
            notification=row,
            channel=channel,
            record=(record := records[row.record_id]),
            templates=(
                templates.get(record.policy_id) or {}
                if row.channel_kind in policy_kinds and record.policy_id is not None
                else {}
            ),
        )
        for row, channel in claimed
    ]


# Rows per UPDATE of ``record_results``: far below SQLite's bound on bound parameters.
RESULTS_PER_STATEMENT = 500
_RESULT_VALUES = ("state", "last_error", "attempts", "receipt", "sent_at", "next_attempt_at")


def record_results(session: Session, results: Iterable[NotificationResult]) -> None:
    """Write results of sends still ``sending`` (a row reclaimed meanwhile is left alone).

    Results that write the same values (a batch's sends to one receiver: "sent", the same
    receipt and time) are one ``UPDATE ... WHERE id IN (...)`` instead of an executemany that
    runs the statement once per row."""
    table = cast(Table, AlertNotification.__table__)
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = defaultdict(list)
    for result in results:
        values = tuple(
            (name, value) for name in _RESULT_VALUES if (value := getattr(result, name)) is not None
        )
        groups[values].append(result.id)
    for values, ids in groups.items():
        for at in range(0, len(ids), RESULTS_PER_STATEMENT):
            session.execute(
                table.update()
                .where(
                    table.c.id.in_(ids[at : at + RESULTS_PER_STATEMENT]),
                    table.c.state == "sending",
                )
                .values(lease_until=None, **dict(values))
            )
