"""Alert rules, kept pure: which series breach a policy, and how each alert moves through its
states.

One ``AlertRule`` is a policy as the evaluator sees it: a metric, label matchers that scope it (a
cluster, a node, a business, an app), a comparison against a threshold, a for-duration, a
severity and a repeat interval. ``evaluate_rule`` takes the rule, the latest value of every
series the rule selects, and the rule's alert states from the last pass; it returns the new
states and the transitions to act on (fire, repeat, resolve). The evaluator loop
(``gaia.monitor.alerting.evaluator``) does the I/O: it reads the store, writes records and queues
notifications for each transition, in one transaction.

An alert is identified by its *fingerprint*: the policy's id and the series' labels (not the
policy's content), so editing a threshold or a message neither re-fires nor loses an alert that is
already firing, and the Alertmanager path (a real Prometheus evaluating the exported rules) lands
on the same fingerprint for the same alert.

States follow Prometheus: a breaching series is *pending* until it has breached for the
for-duration, then *firing*; a firing alert whose series no longer breaches (or has no data) is
*resolved*. A pending series that stops breaching is forgotten silently.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from gaia.domain.errors import InvalidRequest


class Comparison(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="

    def holds(self, value: float, threshold: float) -> bool:
        if math.isnan(value):
            return False
        if self is Comparison.GT:
            return value > threshold
        if self is Comparison.GE:
            return value >= threshold
        if self is Comparison.LT:
            return value < threshold
        if self is Comparison.LE:
            return value <= threshold
        if self is Comparison.EQ:
            return value == threshold
        return value != threshold


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertStatus(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class ScopeKind(StrEnum):
    """What a policy watches. Cluster and node policies belong to the platform; business and
    app policies to a business (and always carry its ``business`` matcher)."""

    CLUSTER = "cluster"
    NODE = "node"
    BUSINESS = "business"
    APP = "app"


# The labels a scope pins. A policy's matchers are exactly these (plus any extra the user adds).
SCOPE_LABELS: dict[ScopeKind, tuple[str, ...]] = {
    ScopeKind.CLUSTER: ("cluster",),
    ScopeKind.NODE: ("cluster", "node"),
    ScopeKind.BUSINESS: ("business",),
    ScopeKind.APP: ("business", "app"),
}

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

MAX_FOR_SECONDS = 7 * 86400
MIN_REPEAT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class AlertRule:
    policy_id: int
    name: str
    metric: str
    matchers: Mapping[str, str]
    comparison: Comparison
    threshold: float
    for_seconds: float
    severity: Severity
    repeat_seconds: float  # 0: notify once per firing


@dataclass(frozen=True, slots=True)
class AlertState:
    fingerprint: str
    labels: Mapping[str, str]
    status: AlertStatus  # PENDING or FIRING (resolved alerts are dropped from the state)
    active_since: float  # when the series first breached (Unix seconds)
    value: float
    fired_at: float | None = None
    last_notified_at: float | None = None


class TransitionKind(StrEnum):
    FIRE = "firing"
    REPEAT = "repeat"
    RESOLVE = "resolved"


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    fingerprint: str
    labels: Mapping[str, str]
    value: float | None  # None: resolved because the series has no data any more
    active_since: float
    at: float


@dataclass(slots=True)
class RuleOutcome:
    states: dict[str, AlertState] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)


def series_key(labels: Mapping[str, str]) -> str:
    """A stable, order-independent id of a label set (computed once per series per pass and
    shared by every policy that selects the series)."""
    h = hashlib.sha256()
    for key in sorted(labels):
        h.update(key.encode() + b"\x01" + labels[key].encode() + b"\x00")
    return h.hexdigest()[:20]


def fingerprint(policy_id: int, labels: Mapping[str, str]) -> str:
    """A stable id of one alert: the policy and the series' labels."""
    return f"{policy_id}-{series_key(labels)}"


@dataclass(frozen=True, slots=True)
class SeriesValue:
    key: str  # series_key(labels)
    labels: Mapping[str, str]
    value: float


def evaluate_rule(
    rule: AlertRule,
    values: Sequence[SeriesValue],
    states: Mapping[str, AlertState],
    *,
    now: float,
    unobserved: Callable[[Mapping[str, str]], bool] | None = None,
) -> RuleOutcome:
    """One evaluation of ``rule`` at ``now`` over the latest ``values`` of the series it selects.

    ``states`` are this rule's alerts from the previous pass, by fingerprint. Returns the states
    to keep and the transitions (at most one per alert) to notify about.

    ``unobserved(labels)`` says that a series' source could not be read (its cluster did not
    answer the collector): a firing alert whose series has no data then stays firing instead of
    resolving, so a cluster outage does not send a wave of false "resolved" notices.
    """
    out = RuleOutcome()
    holds = rule.comparison.holds
    threshold = rule.threshold
    prefix = f"{rule.policy_id}-"
    for sv in values:
        if not holds(sv.value, threshold):
            continue
        fp = prefix + sv.key
        prev = states.get(fp)
        if prev is None:
            prev = AlertState(
                fingerprint=fp,
                labels=sv.labels,
                status=AlertStatus.PENDING,
                active_since=now,
                value=sv.value,
            )
        if prev.status is AlertStatus.PENDING:
            if now - prev.active_since >= rule.for_seconds:
                state = replace(
                    prev,
                    status=AlertStatus.FIRING,
                    value=sv.value,
                    fired_at=now,
                    last_notified_at=now,
                )
                out.transitions.append(
                    Transition(
                        TransitionKind.FIRE, fp, state.labels, sv.value, prev.active_since, now
                    )
                )
            else:
                state = replace(prev, value=sv.value)
        else:
            state = replace(prev, value=sv.value)
            last = prev.last_notified_at if prev.last_notified_at is not None else now
            if rule.repeat_seconds > 0 and now - last >= rule.repeat_seconds:
                state = replace(state, last_notified_at=now)
                out.transitions.append(
                    Transition(
                        TransitionKind.REPEAT, fp, state.labels, sv.value, prev.active_since, now
                    )
                )
        out.states[fp] = state
    gone = [
        prev
        for fp, prev in states.items()
        if prev.status is AlertStatus.FIRING and fp not in out.states
    ]
    if gone:
        # firing, and the series no longer breaches (or has no data): resolved, with the last
        # value where the series is still there
        current = {prefix + sv.key: sv.value for sv in values}
        for prev in gone:
            if prev.fingerprint not in current and unobserved and unobserved(prev.labels):
                out.states[prev.fingerprint] = prev  # no data because no one could look
                continue
            out.transitions.append(
                Transition(
                    TransitionKind.RESOLVE,
                    prev.fingerprint,
                    prev.labels,
                    current.get(prev.fingerprint),
                    prev.active_since,
                    now,
                )
            )
    return out


# ---------------------------------------------------------------- validation


def check_metric_name(metric: str) -> str:
    if not isinstance(metric, str) or not _METRIC_NAME.match(metric) or len(metric) > 200:
        raise InvalidRequest(
            f"metric {metric!r} is not a metric name (letters, digits, '_' and ':'; see "
            "docs/metrics.md for the catalogue)"
        )
    return metric


def check_matchers(matchers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in matchers.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            raise InvalidRequest(f"matcher label {key!r} is not a label name")
        if not isinstance(value, str) or len(value) > 253:
            raise InvalidRequest(f"matcher {key} must be a string of at most 253 characters")
        out[key] = value
    return out


def check_timing(*, for_seconds: float, repeat_seconds: float) -> None:
    if not 0 <= for_seconds <= MAX_FOR_SECONDS:
        raise InvalidRequest(f"for_seconds must be from 0 to {MAX_FOR_SECONDS} (7 days)")
    if repeat_seconds != 0 and repeat_seconds < MIN_REPEAT_SECONDS:
        raise InvalidRequest(
            f"repeat_seconds must be 0 (notify once) or at least {MIN_REPEAT_SECONDS}"
        )


def silence_matches(silence: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A silence's matchers all equal the alert's labels (an empty silence matches nothing)."""
    return bool(silence) and all(labels.get(k) == v for k, v in silence.items())


class SilenceLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def business_id(self) -> int | None: ...
    @property
    def matchers(self) -> Mapping[str, str]: ...


def covering_silence(
    silences: Iterable[SilenceLike], *, business_id: int | None, labels: Mapping[str, str]
) -> int | None:
    """The id of the first active silence that covers an alert of ``business_id`` with
    ``labels``: the platform's silences cover every alert, a business's only its own."""
    return next(
        (
            s.id
            for s in silences
            if (s.business_id is None or s.business_id == business_id)
            and silence_matches(s.matchers, labels)
        ),
        None,
    )
