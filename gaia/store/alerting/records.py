"""Alert records: what the evaluator reads before a pass and writes after it, and what the API
and the Alertmanager receiver read and write.

The evaluator (``gaia.monitor.alerting.evaluator``) runs the pure rules of ``gaia.domain.alerts``
between two store calls: ``load_evaluation_inputs`` (the enabled policies as ``AlertRule``\\ s, the
active silences, the fingerprints still firing) before the pass, and ``apply_transitions`` after
it, which writes the pass's fire / repeat / resolve transitions and their outbox rows
(``gaia.store.alerting.outbox``) in the caller's one transaction. ``firing_alert_states`` gives the
first pass after a start the states of the alerts that were firing, so a restart neither re-fires
nor forgets them.

A firing record is found by its fingerprint (``firing_record``): the evaluator and Alertmanager
compute the same one for the same alert, so neither opens a second record for it.
See docs/architecture.md (the store).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.alerts import (
    AlertRule,
    AlertState,
    AlertStatus,
    Comparison,
    Severity,
    Transition,
    TransitionKind,
    covering_silence,
)
from gaia.domain.errors import NotFound
from gaia.store.alerting.outbox import load_targets, queue_notifications
from gaia.store.models import AlertNotification, AlertPolicy, AlertRecord, AlertSilence

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """An enabled policy as one pass sees it."""

    rule: AlertRule
    business_id: int | None
    summary: str


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: int
    business_id: int | None
    matchers: Mapping[str, str]


# A transition of one pass: the policy that made it (None: the policy is gone or disabled, and
# its firing alert resolves), the policy id, and what happened.
PassTransition = tuple[PolicyRow | None, int, Transition]


def policy_rule(policy: AlertPolicy) -> AlertRule:
    """The rule of a stored policy (``ValueError`` if the row holds an unknown comparison)."""
    return AlertRule(
        policy_id=policy.id,
        name=policy.name,
        metric=policy.metric,
        matchers=dict(policy.matchers or {}),
        comparison=Comparison(policy.comparison),
        threshold=float(policy.threshold),
        for_seconds=float(policy.for_seconds),
        severity=Severity(policy.severity),
        repeat_seconds=float(policy.repeat_seconds),
    )


def default_summary(rule: AlertRule, labels: Mapping[str, str]) -> str:
    where = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{rule.name}: {rule.metric} {rule.comparison.value} {rule.threshold:g} ({where})"


def active_silences(session: Session, *, now: dt.datetime) -> list[AlertSilence]:
    return list(
        session.scalars(
            select(AlertSilence).where(AlertSilence.starts_at <= now, AlertSilence.ends_at > now)
        )
    )


def load_evaluation_inputs(
    session: Session, *, now: dt.datetime
) -> tuple[dict[int, PolicyRow], list[SilenceRow], set[str]]:
    """The enabled policies (a row with an invalid rule is skipped, and said), the active
    silences, and the fingerprints of every firing record."""
    policies: dict[int, PolicyRow] = {}
    for policy in session.scalars(select(AlertPolicy).where(AlertPolicy.enabled)):
        try:
            rule = policy_rule(policy)
        except ValueError:
            log.warning("alert policy %s has an invalid rule; skipped", policy.id)
            continue
        policies[policy.id] = PolicyRow(rule, policy.business_id, policy.summary)
    silences = [
        SilenceRow(s.id, s.business_id, dict(s.matchers or {}))
        for s in active_silences(session, now=now)
    ]
    firing = set(
        session.scalars(select(AlertRecord.fingerprint).where(AlertRecord.status == "firing"))
    )
    return policies, silences, firing


def firing_alert_states(session: Session) -> dict[int, dict[str, AlertState]]:
    """The states of the alerts the platform's evaluator had firing, per policy id."""
    states: dict[int, dict[str, AlertState]] = defaultdict(dict)
    for record in session.scalars(
        select(AlertRecord).where(AlertRecord.status == "firing", AlertRecord.source == "platform")
    ):
        if record.policy_id is None:
            continue
        last = record.last_notified_at or record.fired_at
        states[record.policy_id][record.fingerprint] = AlertState(
            fingerprint=record.fingerprint,
            labels=dict(record.labels or {}),
            status=AlertStatus.FIRING,
            active_since=record.started_at.timestamp(),
            value=record.value if record.value is not None else float("nan"),
            fired_at=record.fired_at.timestamp(),
            last_notified_at=last.timestamp(),
        )
    return dict(states)


def apply_transitions(
    session: Session,
    transitions: Sequence[PassTransition],
    *,
    silences: Sequence[SilenceRow],
    now: dt.datetime,
) -> int:
    """Write one pass's transitions and queue their notifications; returns how many were
    queued. A fire for a fingerprint already firing (e.g. reported by Alertmanager) and a
    repeat or resolve of one resolved meanwhile (by the API or Alertmanager) change nothing."""
    policy_ids = {policy_id for _, policy_id, _ in transitions}
    policies = {
        p.id: p for p in session.scalars(select(AlertPolicy).where(AlertPolicy.id.in_(policy_ids)))
    }
    fps = [tr.fingerprint for _, _, tr in transitions]
    firing = {
        r.fingerprint: r
        for r in session.scalars(
            select(AlertRecord).where(
                AlertRecord.status == "firing", AlertRecord.fingerprint.in_(fps)
            )
        )
    }
    events: list[tuple[AlertRecord, AlertPolicy, str]] = []
    for row, policy_id, tr in transitions:
        policy = policies.get(policy_id)
        if tr.kind is TransitionKind.FIRE:
            if tr.fingerprint in firing or row is None or policy is None:
                continue  # already firing (e.g. reported by Alertmanager)
            record = _fired_record(row, tr, silences, now)
            session.add(record)
            firing[tr.fingerprint] = record
            events.append((record, policy, "firing"))
            continue
        found = firing.get(tr.fingerprint)
        if found is None:
            continue  # resolved meanwhile (by the API or Alertmanager)
        record = found
        if tr.kind is TransitionKind.REPEAT:
            record.repeats += 1
            record.value = tr.value
            record.last_notified_at = now
            event = "repeat"
        else:
            record.status = "resolved"
            record.resolved_at = now
            record.resolved_value = tr.value
            event = "resolved"
        if policy is not None:
            events.append((record, policy, event))
    # one flush gives every new record its id (a multi-row INSERT), then the outbox rows
    session.flush()
    targets = load_targets(session, policies.values())
    queued = 0
    for record, policy, event in events:
        if event != "firing":
            # a silence made while the alert fires (the console's "silence" on a record) mutes
            # what follows, its repeats and its resolution, as Alertmanager's does; one that has
            # ended mutes nothing more. The record keeps the last silence that muted it.
            muting = covering_silence(
                silences, business_id=record.business_id, labels=_silence_labels(record)
            )
            if muting is not None:
                record.silenced_by = muting
                continue
            # a record never silenced had its firing queued; one that was may not have
            muted_before = record.silenced_by is not None
            if event == "resolved" and muted_before and not _was_notified(session, record):
                continue  # its firing was muted: the receivers have nothing to see resolved
        elif record.silenced_by is not None:
            continue
        receivers, channels = targets[policy.id]
        queued += len(
            queue_notifications(
                session,
                record=record,
                policy=policy,
                event=event,
                now=now,
                receivers=receivers,
                channels=channels,
            )
        )
    return queued


def _silence_labels(record: AlertRecord) -> dict[str, str]:
    """The labels a silence's matchers see: the alert's, and the names Alertmanager gives it."""
    return {
        **dict(record.labels or {}),
        "alertname": record.policy_name,
        "severity": record.severity,
        "gaia_policy_id": str(record.policy_id),
    }


def _was_notified(session: Session, record: AlertRecord) -> bool:
    """Whether a firing or repeat notice of ``record`` was ever queued."""
    return (
        session.scalars(
            select(AlertNotification.id)
            .where(
                AlertNotification.record_id == record.id,
                AlertNotification.event.in_(("firing", "repeat")),
            )
            .limit(1)
        ).first()
        is not None
    )


def _fired_record(
    row: PolicyRow, tr: Transition, silences: Sequence[SilenceRow], now: dt.datetime
) -> AlertRecord:
    rule = row.rule
    labels = dict(tr.labels)
    record = AlertRecord(
        business_id=row.business_id,
        policy_id=rule.policy_id,
        policy_name=rule.name,
        fingerprint=tr.fingerprint,
        severity=rule.severity.value,
        labels=labels,
        summary=row.summary or default_summary(rule, labels),
        status="firing",
        value=tr.value,
        threshold=rule.threshold,
        comparison=rule.comparison.value,
        metric=rule.metric,
        source="platform",
        started_at=dt.datetime.fromtimestamp(tr.active_since, dt.UTC),
        fired_at=now,
        last_notified_at=now,
    )
    record.silenced_by = covering_silence(
        silences, business_id=row.business_id, labels=_silence_labels(record)
    )
    return record


def firing_record(session: Session, fingerprint: str) -> AlertRecord | None:
    """The firing record of an alert, if it is firing."""
    return session.scalars(
        select(AlertRecord).where(
            AlertRecord.fingerprint == fingerprint, AlertRecord.status == "firing"
        )
    ).one_or_none()


def open_record(session: Session, record: AlertRecord) -> AlertRecord:
    """Insert a new firing record (its id assigned, for the outbox rows that name it)."""
    session.add(record)
    session.flush()
    return record


def record_with_notifications(
    session: Session, record_id: int
) -> tuple[AlertRecord, list[AlertNotification]]:
    """One record and every notification of it, oldest first; ``NotFound`` if there is none."""
    record = session.get(AlertRecord, record_id)
    if record is None:
        raise NotFound(f"alert record {record_id} not found")
    notifications = list(
        session.scalars(
            select(AlertNotification)
            .where(AlertNotification.record_id == record.id)
            .order_by(AlertNotification.id)
        )
    )
    return record, notifications
