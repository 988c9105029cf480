"""The alert evaluator: every pass, every enabled policy against the latest metric values.

A pass reads the enabled policies and active silences from the platform store, then asks the
metric store for the latest value of every series **once per metric** (not once per policy: ten
thousand policies over a few dozen metrics cost a few dozen queries), indexes those series by
label, and hands each policy the series its matchers select to the pure rules of
``gaia.domain.alerts``. The transitions of the whole pass (fire, repeat, resolve) are written in
one transaction together with their outbox rows (``gaia.store.alerting.records``); only after that
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

from gaia.clock import Clock
from gaia.domain.alerts import (
    AlertState,
    AlertStatus,
    SeriesValue,
    Transition,
    TransitionKind,
    series_key,
)
from gaia.domain.alerts import evaluate_rule as evaluate
from gaia.loop import LoopService
from gaia.monitor.metrics.series import MetricStore
from gaia.store.alerting.records import (
    PassTransition,
    PolicyRow,
    SilenceRow,
    apply_transitions,
    firing_alert_states,
    load_evaluation_inputs,
)
from gaia.store.alerting.records import policy_rule as policy_rule  # bench/alerts.py uses it
from gaia.store.database import Database

log = logging.getLogger(__name__)


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
        transitions: list[PassTransition] = []
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
            return load_evaluation_inputs(session, now=now)

    def _restore(self) -> dict[int, dict[str, AlertState]]:
        with self.db.read_session() as session:
            return firing_alert_states(session)

    def _apply(
        self,
        transitions: list[PassTransition],
        silences: list[SilenceRow],
        now: dt.datetime,
    ) -> int:
        with self.db.write_session() as session:
            return apply_transitions(session, transitions, silences=silences, now=now)
