"""The QoS plan and the talk's algorithm (gaia.domain.qos), as specifications."""

from __future__ import annotations

import pytest

from gaia.domain.qos import (
    DEFAULT_MINOR,
    QosInstance,
    QosPlanError,
    jain_fairness,
    plan_qos,
    simulate,
)

MBIT = 125_000


def inst(name: str, mbit: float, priority: int = 4, last: int = 2) -> QosInstance:
    return QosInstance(name, f"10.0.0.{last}", round(mbit * MBIT), priority)


def test_plan_guarantees_rate_and_lets_every_leaf_borrow_up_to_the_link() -> None:
    plan = plan_qos(link=100 * MBIT, instances=[inst("a", 10, last=2), inst("b", 30, last=3)])
    a, b = plan.by_name()["a"], plan.by_name()["b"]
    assert (a.rate, b.rate) == (10 * MBIT, 30 * MBIT)
    assert a.ceil == b.ceil == 100 * MBIT
    assert b.quantum == 3 * a.quantum  # spare splits 1:3 within a priority class
    default = plan.by_name()["default"]
    assert default.minor == DEFAULT_MINOR and default.rate == 60 * MBIT and default.priority == 7


def test_class_ids_stay_when_a_neighbour_leaves() -> None:
    both = plan_qos(link=100 * MBIT, instances=[inst("a", 10, last=2), inst("b", 10, last=3)])
    alone = plan_qos(link=100 * MBIT, instances=[inst("b", 10, last=3)])
    assert both.by_name()["b"].minor == alone.by_name()["b"].minor
    assert both.by_name()["a"].minor != both.by_name()["b"].minor


@pytest.mark.parametrize(
    ("instances", "words"),
    [
        ([inst("a", 60, last=2), inst("b", 60, last=3)], "more than the link"),
        ([inst("a", 0)], "must be positive"),
        ([inst("a", 10, priority=9)], "priority must be 0..7"),
        ([QosInstance("a", "not-an-ip", MBIT)], "not an IPv4 address"),
        ([inst("a", 10, last=2), inst("a", 10, last=3)], "two instances are named"),
        ([inst("a", 10, last=2), inst("b", 10, last=2)], "already another's"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(instances: list[QosInstance], words: str) -> None:
    with pytest.raises(QosPlanError, match=words):
        plan_qos(link=100 * MBIT, instances=instances)


def _steady(result_rates: list[float], skip: int = 5) -> float:
    tail = result_rates[skip:]
    return sum(tail) / len(tail)


def test_simulator_holds_guarantees_and_splits_spare_by_guarantee_within_a_class() -> None:
    instances = [inst("a", 10, last=2), inst("b", 30, last=3)]
    greedy = {i.name: [100.0 * MBIT] * 50 for i in instances}
    rates = simulate(link=100 * MBIT, instances=instances, demand=greedy).rates
    # 60 Mbit/s spare split 1:3 on top of 10 and 30
    assert _steady(rates["a"]) == pytest.approx(25 * MBIT, rel=0.01)
    assert _steady(rates["b"]) == pytest.approx(75 * MBIT, rel=0.01)


def test_simulator_offers_spare_to_the_higher_priority_class_first() -> None:
    instances = [inst("gold", 10, priority=0, last=2), inst("bronze", 30, priority=5, last=3)]
    greedy = {i.name: [100.0 * MBIT] * 50 for i in instances}
    rates = simulate(link=100 * MBIT, instances=instances, demand=greedy).rates
    assert _steady(rates["gold"]) == pytest.approx(70 * MBIT, rel=0.01)
    assert _steady(rates["bronze"]) == pytest.approx(30 * MBIT, rel=0.01)  # its guarantee only


def test_simulator_lends_an_idle_guarantee_and_takes_it_back_when_the_owner_sends() -> None:
    instances = [inst("a", 50, last=2), inst("b", 20, last=3)]
    demand = {"a": [0.0] * 20 + [100.0 * MBIT] * 20, "b": [100.0 * MBIT] * 40}
    rates = simulate(link=100 * MBIT, instances=instances, demand=demand).rates
    assert rates["b"][10] == pytest.approx(100 * MBIT, rel=0.01)  # borrows all while a is idle
    assert rates["a"][25] >= 50 * MBIT  # its guarantee back at once
    assert rates["a"][25] + rates["b"][25] == pytest.approx(100 * MBIT, rel=0.01)


def test_simulator_never_sends_more_than_offered() -> None:
    instances = [inst("a", 50, last=2)]
    rates = simulate(link=100 * MBIT, instances=instances, demand={"a": [5.0 * MBIT] * 10}).rates
    assert max(rates["a"]) == pytest.approx(5 * MBIT)


def test_simulator_refuses_demand_for_an_unknown_instance() -> None:
    with pytest.raises(QosPlanError, match="not one of the instances"):
        simulate(link=MBIT, instances=[], demand={"ghost": [1.0]})


def test_jain_index() -> None:
    assert jain_fairness([1, 1, 1, 1]) == pytest.approx(1.0)
    assert jain_fairness([1, 0, 0, 0]) == pytest.approx(0.25)
