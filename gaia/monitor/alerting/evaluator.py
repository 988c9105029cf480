"""The alert evaluator: every pass, every enabled policy against the latest metric values.

A pass reads the enabled policies and active silences from the platform store, then asks the
metric store for the latest value of every series **once per metric** (not once per policy: ten
thousand policies over a few dozen metrics cost a few dozen queries), indexes those series by
label, and hands each policy the series its matchers select to the pure rules of
``gaia.domain.alerts``. The transitions of the whole pass (fire, repeat, resolve) are written in one
transaction together with their outbox rows (``gaia.monitor.alerting.notify``); only after that
commit are the in-memory alert states replaced, so a failed write makes the next pass produce the
same transitions again instead of losing them.

States live in memory. Firing alerts are also records in the store, and the first pass after a
start reloads them, so a restart neither re-fires an alert nor forgets to resolve it. Pending
alerts (breaching, not yet for the for-duration) are not persisted: after a restart their
for-duration starts again, as in Prometheus.

A policy that is disabled resolves its firing alerts (with notices). Deleting a policy is handled
by the API, which resolves its firing records in the same transaction as the delete.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from gaia.clock import Clock
from gaia.domain.alerts import (
    AlertRule,
    AlertState,
    AlertStatus,
    Comparison,
    SeriesValue,
    Severity,
    Transition,
    TransitionKind,
    covering_silence,
    series_key,
)
from gaia.domain.alerts import evaluate_rule as evaluate
from gaia.loop import LoopService
from gaia.monitor.alerting.notify import load_targets, queue_notifications
from gaia.monitor.metrics.series import MetricStore
from gaia.store.database import Database
from gaia.store.models import AlertPolicy, AlertRecord, AlertSilence

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyRow:
    rule: AlertRule
    business_id: int | None
    summary: str


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: int
    business_id: int | None
    matchers: Mapping[str, str]


@dataclass(slots=True)
class PassStats:
    policies: int = 0
    series: int = 0
    transitions: int = 0
    notifications: int = 0
    seconds: float = 0.0  # the whole pass
    rule_seconds: float = 0.0  # store queries and rule evaluation (no platform-store I/O)
    firing: int = 0


class MetricIndex:
    """The latest values of one metric, indexed by (label, value) for matcher selection."""

    def __init__(self, values: Sequence[SeriesValue]) -> None:
        self.values = values
        self._postings: dict[str, dict[str, list[int]]] = {}

    def select(self, matchers: Mapping[str, str]) -> Sequence[SeriesValue]:
        if not matchers:
            return self.values
        lists = [self._posting(label).get(value, ()) for label, value in matchers.items()]
        shortest = min(lists, key=len)
        if len(lists) == 1:
            return [self.values[i] for i in shortest]
        return [
            sv
            for sv in (self.values[i] for i in shortest)
            if all(sv.labels.get(k) == v for k, v in matchers.items())
        ]

    def _posting(self, label: str) -> dict[str, list[int]]:
        posting = self._postings.get(label)
        if posting is None:
            posting = defaultdict(list)
            for i, sv in enumerate(self.values):
                value = sv.labels.get(label)
                if value is not None:
                    posting[value].append(i)
            self._postings[label] = posting
        return posting


def policy_rule(policy: AlertPolicy) -> AlertRule:
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


class AlertEvaluator(LoopService):
    name = "alert-evaluator"

    def __init__(
        self,
        *,
        db: Database,
        store: MetricStore,
        clock: Clock,
        interval: float,
        lookback: float = 60.0,
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.store = store
        self.clock = clock
        self.lookback = lookback
        self._states: dict[int, dict[str, AlertState]] = {}
        self._restored = False
        self.last_pass = PassStats()
        self.on_pass: Callable[[PassStats], None] | None = None  # the platform's metrics

    async def run_once(self) -> None:
        started = time.perf_counter()
        now = self.clock.now()
        t = now.timestamp()
        policies, silences, firing_fps = await asyncio.to_thread(self._load, now)
        if not self._restored:
            self._states = await asyncio.to_thread(self._restore)
            self._restored = True
        else:
            # An alert resolved outside this loop (its policy deleted, an Alertmanager resolve)
            # is firing here no more: forget it, so that a still-breaching series fires anew.
            for states in self._states.values():
                for fp in [
                    fp
                    for fp, s in states.items()
                    if s.status is AlertStatus.FIRING and fp not in firing_fps
                ]:
                    del states[fp]

        by_metric: dict[str, list[PolicyRow]] = defaultdict(list)
        for row in policies.values():
            by_metric[row.rule.metric].append(row)
        stats = PassStats(policies=len(policies))
        new_states: dict[int, dict[str, AlertState]] = {}
        transitions: list[tuple[PolicyRow | None, int, Transition]] = []
        rules_started = time.perf_counter()
        unreadable = await self._unreadable_clusters(t) if policies else set()

        def unobserved(labels: Mapping[str, str]) -> bool:
            return labels.get("cluster") in unreadable

        for metric, rows in by_metric.items():
            series = await self.store.latest(metric, None, at=t, lookback=self.lookback)
            stats.series += len(series)
            index = MetricIndex(
                [
                    SeriesValue(series_key(s.labels), s.labels, s.points[-1][1])
                    for s in series
                    if s.points
                ]
            )
            for row in rows:
                rule = row.rule
                outcome = evaluate(
                    rule,
                    index.select(rule.matchers),
                    self._states.get(rule.policy_id, {}),
                    now=t,
                    unobserved=unobserved,
                )
                new_states[rule.policy_id] = outcome.states
                transitions.extend((row, rule.policy_id, tr) for tr in outcome.transitions)
        stats.rule_seconds = time.perf_counter() - rules_started
        # policies disabled (or deleted) since the last pass: their firing alerts resolve
        for policy_id, states in self._states.items():
            if policy_id in policies:
                continue
            for state in states.values():
                if state.status is AlertStatus.FIRING:
                    transitions.append(
                        (
                            None,
                            policy_id,
                            Transition(
                                TransitionKind.RESOLVE,
                                state.fingerprint,
                                state.labels,
                                None,
                                state.active_since,
                                t,
                            ),
                        )
                    )
        if transitions:
            stats.notifications = await asyncio.to_thread(self._apply, transitions, silences, now)
        self._states = new_states
        stats.transitions = len(transitions)
        stats.firing = sum(
            1
            for states in new_states.values()
            for s in states.values()
            if s.status is AlertStatus.FIRING
        )
        stats.seconds = time.perf_counter() - started
        self.last_pass = stats
        if self.on_pass is not None:
            self.on_pass(stats)

    async def _unreadable_clusters(self, at: float) -> set[str]:
        """Clusters the collector could not read in its last pass."""
        series = await self.store.latest(
            "gaia_cluster_collect_success", None, at=at, lookback=self.lookback
        )
        return {
            s.labels["cluster"]
            for s in series
            if s.points and s.points[-1][1] == 0 and "cluster" in s.labels
        }

    # ---------------------------------------------------------------- store I/O (threads)

    def _load(self, now: dt.datetime) -> tuple[dict[int, PolicyRow], list[SilenceRow], set[str]]:
        with self.db.read_session() as session:
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
                for s in session.scalars(
                    select(AlertSilence).where(
                        AlertSilence.starts_at <= now, AlertSilence.ends_at > now
                    )
                )
            ]
            firing = set(
                session.scalars(
                    select(AlertRecord.fingerprint).where(AlertRecord.status == "firing")
                )
            )
        return policies, silences, firing

    def _restore(self) -> dict[int, dict[str, AlertState]]:
        states: dict[int, dict[str, AlertState]] = defaultdict(dict)
        with self.db.read_session() as session:
            for record in session.scalars(
                select(AlertRecord).where(
                    AlertRecord.status == "firing", AlertRecord.source == "platform"
                )
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

    def _apply(
        self,
        transitions: list[tuple[PolicyRow | None, int, Transition]],
        silences: list[SilenceRow],
        now: dt.datetime,
    ) -> int:
        with self.db.write_session() as session:
            policy_ids = {policy_id for _, policy_id, _ in transitions}
            policies = {
                p.id: p
                for p in session.scalars(select(AlertPolicy).where(AlertPolicy.id.in_(policy_ids)))
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
                    record = self._fire(row, tr, silences, now)
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
                if record.silenced_by is not None:
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

    def _fire(
        self,
        row: PolicyRow,
        tr: Transition,
        silences: list[SilenceRow],
        now: dt.datetime,
    ) -> AlertRecord:
        rule = row.rule
        labels = dict(tr.labels)
        match_labels = {
            **labels,
            "alertname": rule.name,
            "severity": rule.severity.value,
            "gaia_policy_id": str(rule.policy_id),
        }
        silenced_by = covering_silence(silences, business_id=row.business_id, labels=match_labels)
        return AlertRecord(
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
            silenced_by=silenced_by,
        )
