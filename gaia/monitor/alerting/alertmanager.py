"""Alerts from a real Alertmanager, routed into the platform's records and channels.

When a real Prometheus evaluates the exported rule files (``gaia.monitor.alerting.rulefiles``) and
its Alertmanager posts to ``POST /api/v1/alerts/alertmanager``, each alert carries the
``gaia_policy_id`` label of the policy it came from. The alert's series labels (its labels
without ``alertname``, ``severity`` and ``gaia_policy_id``) give the same fingerprint the
platform's own evaluator computes, so:

- a firing alert already firing (reported again by Alertmanager's repeat, or fired by the platform
  too) is a duplicate and changes nothing;
- a new firing alert opens a record and queues the policy's notifications;
- a resolved alert closes the firing record and queues the resolved notices.

Alerts without a known policy are recorded (platform-owned, no notifications) so that nothing
Alertmanager sends disappears without trace; they count as ``unrouted``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy.orm import Session

from gaia.domain.alerts import covering_silence, fingerprint
from gaia.monitor.metrics import catalogue
from gaia.store.alerting.outbox import queue_notifications
from gaia.store.alerting.policies import policy_or_none
from gaia.store.alerting.records import active_silences, firing_record, open_record
from gaia.store.models import AlertRecord

RULE_LABELS = frozenset({"alertname", "severity", "gaia_policy_id"})
# added by Prometheus' scrape (target labels), not part of a Gaia series
TARGET_LABELS = frozenset({"job"})


def series_labels(labels: dict[str, str], metric: str) -> dict[str, str]:
    """The labels of the series an alert is about: those the catalogue gives the metric (so a
    scrape's ``job`` or ``instance`` target label does not change the fingerprint), or, for a
    metric the catalogue does not know, all but the rule's and the scrape's own labels."""
    definition = catalogue.lookup(metric)
    if definition is not None:
        return {k: v for k, v in labels.items() if k in definition.labels}
    return {k: v for k, v in labels.items() if k not in RULE_LABELS | TARGET_LABELS}


@dataclass(frozen=True, slots=True)
class IncomingAlert:
    status: str  # "firing" | "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime | None


@dataclass(slots=True)
class IngestResult:
    fired: int = 0
    resolved: int = 0
    duplicates: int = 0
    unrouted: int = 0


def _value(annotations: dict[str, str]) -> float | None:
    try:
        value = float(annotations.get("value", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def ingest(session: Session, alerts: list[IncomingAlert], *, now: dt.datetime) -> IngestResult:
    result = IngestResult()
    silences = active_silences(session, now=now)
    for alert in alerts:
        raw_id = alert.labels.get("gaia_policy_id", "")
        policy = policy_or_none(session, int(raw_id)) if raw_id.isdigit() else None
        if policy is None:
            series = {k: v for k, v in alert.labels.items() if k not in RULE_LABELS}
            result.unrouted += 1
            fp = "am-" + fingerprint(0, alert.labels)
        else:
            series = series_labels(alert.labels, policy.metric)
            fp = fingerprint(policy.id, series)
        firing = firing_record(session, fp)
        if alert.status == "resolved":
            if firing is None:
                result.duplicates += 1  # resolved already (or never seen): nothing to do
                continue
            firing.status = "resolved"
            firing.resolved_at = alert.ends_at or now
            firing.resolved_value = _value(alert.annotations)
            result.resolved += 1
            if policy is not None and firing.silenced_by is None:
                queue_notifications(
                    session, record=firing, policy=policy, event="resolved", now=now
                )
            continue
        if firing is not None:
            result.duplicates += 1
            continue
        business_id = policy.business_id if policy is not None else None
        silenced_by = covering_silence(silences, business_id=business_id, labels=alert.labels)
        record = open_record(
            session,
            AlertRecord(
                business_id=business_id,
                policy_id=policy.id if policy is not None else None,
                policy_name=policy.name
                if policy is not None
                else alert.labels.get("alertname", "?"),
                fingerprint=fp,
                severity=alert.labels.get("severity", policy.severity if policy else "warning"),
                labels=series,
                summary=alert.annotations.get("summary", ""),
                status="firing",
                value=_value(alert.annotations),
                threshold=policy.threshold if policy is not None else None,
                comparison=policy.comparison if policy is not None else "",
                metric=policy.metric if policy is not None else "",
                source="alertmanager",
                started_at=alert.starts_at,
                fired_at=now,
                last_notified_at=now,
                silenced_by=silenced_by,
            ),
        )
        result.fired += 1
        if policy is not None and silenced_by is None:
            queue_notifications(session, record=record, policy=policy, event="firing", now=now)
    return result
