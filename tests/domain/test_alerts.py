"""The pure alert rules (gaia.domain.alerts) and the evaluator's series selection."""

from __future__ import annotations

import math

from gaia.domain.alerts import (
    AlertRule,
    AlertStatus,
    Comparison,
    SeriesValue,
    Severity,
    TransitionKind,
    evaluate_rule,
    fingerprint,
    series_key,
    silence_matches,
)
from gaia.monitor.alerting.evaluator import MetricIndex


def rule(**kw: object) -> AlertRule:
    base: dict[str, object] = {
        "policy_id": 7,
        "name": "cpu high",
        "metric": "gaia_instance_cpu_usage_percent",
        "matchers": {"app": "web"},
        "comparison": Comparison.GT,
        "threshold": 80.0,
        "for_seconds": 60.0,
        "severity": Severity.WARNING,
        "repeat_seconds": 0.0,
    }
    base.update(kw)
    return AlertRule(**base)  # type: ignore[arg-type]


def sv(value: float, instance: str = "web-0") -> SeriesValue:
    labels = {"app": "web", "instance": instance}
    return SeriesValue(series_key(labels), labels, value)


def test_breach_is_pending_until_the_for_duration_then_fires_once() -> None:
    r = rule()
    out = evaluate_rule(r, [sv(95)], {}, now=1000)
    assert not out.transitions
    (state,) = out.states.values()
    assert state.status is AlertStatus.PENDING and state.active_since == 1000
    out = evaluate_rule(r, [sv(96)], out.states, now=1059)
    assert not out.transitions
    out = evaluate_rule(r, [sv(97)], out.states, now=1060)
    (tr,) = out.transitions
    assert tr.kind is TransitionKind.FIRE and tr.value == 97 and tr.active_since == 1000
    out = evaluate_rule(r, [sv(98)], out.states, now=1075)
    assert not out.transitions  # firing, no repeat interval: notified once


def test_a_pending_breach_that_recovers_is_forgotten_silently() -> None:
    r = rule()
    out = evaluate_rule(r, [sv(95)], {}, now=0)
    out = evaluate_rule(r, [sv(50)], out.states, now=30)
    assert not out.transitions and not out.states
    out = evaluate_rule(r, [sv(95)], out.states, now=45)
    assert next(iter(out.states.values())).active_since == 45  # the clock starts again


def test_firing_resolves_when_the_value_drops_with_the_last_value() -> None:
    r = rule(for_seconds=0)
    out = evaluate_rule(r, [sv(95)], {}, now=0)
    assert [t.kind for t in out.transitions] == [TransitionKind.FIRE]
    out = evaluate_rule(r, [sv(20)], out.states, now=15)
    (tr,) = out.transitions
    assert tr.kind is TransitionKind.RESOLVE and tr.value == 20
    assert not out.states


def test_firing_resolves_when_the_series_disappears_with_no_value() -> None:
    r = rule(for_seconds=0)
    out = evaluate_rule(r, [sv(95, "web-0"), sv(99, "web-1")], {}, now=0)
    assert len(out.transitions) == 2
    out = evaluate_rule(r, [sv(99, "web-1")], out.states, now=15)
    (tr,) = out.transitions
    assert tr.kind is TransitionKind.RESOLVE and tr.value is None
    assert tr.labels["instance"] == "web-0"


def test_repeat_interval_renotifies_a_long_firing_alert() -> None:
    r = rule(for_seconds=0, repeat_seconds=300)
    out = evaluate_rule(r, [sv(95)], {}, now=0)
    kinds = []
    for t in range(15, 700, 15):
        out = evaluate_rule(r, [sv(95)], out.states, now=t)
        kinds += [(t, x.kind) for x in out.transitions]
    assert kinds == [(300, TransitionKind.REPEAT), (600, TransitionKind.REPEAT)]


def test_editing_the_threshold_keeps_a_firing_alert_and_its_fingerprint() -> None:
    r = rule(for_seconds=0)
    out = evaluate_rule(r, [sv(95)], {}, now=0)
    (fp,) = out.states
    edited = rule(for_seconds=0, threshold=90.0)
    out = evaluate_rule(edited, [sv(95)], out.states, now=15)
    assert not out.transitions and list(out.states) == [fp]
    assert out.states[fp].status is AlertStatus.FIRING


def test_nan_never_breaches_and_comparisons_work() -> None:
    assert not Comparison.GT.holds(math.nan, 0)
    assert not Comparison.NE.holds(math.nan, 0)
    assert Comparison.EQ.holds(0.0, 0)
    assert Comparison.LE.holds(1, 1) and not Comparison.LT.holds(1, 1)
    assert Comparison.GE.holds(2, 1) and Comparison.NE.holds(2, 1)


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = fingerprint(3, {"app": "web", "instance": "web-0"})
    b = fingerprint(3, {"instance": "web-0", "app": "web"})
    assert a == b and a.startswith("3-")
    assert fingerprint(4, {"app": "web", "instance": "web-0"}) != a
    assert fingerprint(3, {"app": "web", "instance": "web-1"}) != a


def test_silence_matches_only_when_every_matcher_equals() -> None:
    labels = {"app": "web", "severity": "warning"}
    assert silence_matches({"app": "web"}, labels)
    assert not silence_matches({"app": "web", "severity": "critical"}, labels)
    assert not silence_matches({}, labels)


def test_metric_index_selects_by_every_matcher() -> None:
    values = [
        SeriesValue(str(i), {"app": f"app-{i % 3}", "node": f"n{i % 2}"}, float(i))
        for i in range(12)
    ]
    index = MetricIndex(values)
    assert len(index.select({})) == 12
    assert [v.value for v in index.select({"app": "app-1"})] == [1, 4, 7, 10]
    assert [v.value for v in index.select({"app": "app-1", "node": "n0"})] == [4, 10]
    assert index.select({"app": "nope"}) == []
    assert index.select({"missing": "x"}) == []


def test_a_series_whose_source_cannot_be_read_keeps_its_alert_firing() -> None:
    r = rule(for_seconds=0)
    out = evaluate_rule(r, [sv(95)], {}, now=0)
    held = evaluate_rule(r, [], out.states, now=15, unobserved=lambda labels: True)
    assert not held.transitions and held.states == out.states
    # the source answers again and the series is gone: now it resolves
    gone = evaluate_rule(r, [], held.states, now=30, unobserved=lambda labels: False)
    assert [t.kind for t in gone.transitions] == [TransitionKind.RESOLVE]
    # a series that is there and below the threshold resolves whatever the source's state
    low = evaluate_rule(r, [sv(10)], out.states, now=15, unobserved=lambda labels: True)
    assert [t.kind for t in low.transitions] == [TransitionKind.RESOLVE]
