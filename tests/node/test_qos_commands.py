"""gaia.node.qos without a kernel: the commands it would send, and the instances it reads."""

from __future__ import annotations

import pytest

from gaia.domain.qos import QosInstance, QosPlanError, plan_qos
from gaia.node.qos import Observed, ObservedClass, load_instances, plan_commands

MBIT = 125_000


def test_a_bare_device_gets_the_whole_tree_and_one_filter_per_instance() -> None:
    plan = plan_qos(link=40 * MBIT, instances=[QosInstance("a", "10.0.0.2", 10 * MBIT, 1)])
    lines = plan_commands("up0", plan, Observed(False, False, {}, {}))
    assert lines[0] == "qdisc add dev up0 root handle 1: htb default fff"
    minor = plan.by_name()["a"].minor
    assert (
        f"class replace dev up0 parent 1:1 classid 1:{minor:x} htb rate 10000000bit "
        f"ceil 40000000bit prio 1 quantum 65536"
    ) in lines
    assert any(f"handle 800::{minor:x} u32 match ip src 10.0.0.2/32" in line for line in lines)


def test_a_foreign_root_is_deleted_first() -> None:
    plan = plan_qos(link=40 * MBIT, instances=[])
    lines = plan_commands("up0", plan, Observed(False, True, {}, {}))
    assert lines[:2] == [
        "qdisc del dev up0 root",
        "qdisc add dev up0 root handle 1: htb default fff",
    ]


def test_what_tc_reports_as_equal_sends_nothing() -> None:
    plan = plan_qos(link=40 * MBIT, instances=[QosInstance("a", "10.0.0.2", 10 * MBIT, 1)])
    a = plan.by_name()["a"]
    classes = {
        1: ObservedClass(1, None, 0, 40_000_000, 40_000_000),
        a.minor: ObservedClass(a.minor, 1, 1, 10_000_000, 40_000_000),
        0xFFF: ObservedClass(0xFFF, 1, 7, 30_000_000, 40_000_000),
    }
    filters = {a.minor: f"1:{a.minor:x}/a000002"}
    assert plan_commands("up0", plan, Observed(True, False, classes, filters)) == []
    moved = {a.minor: f"1:{a.minor:x}/a000003"}  # the pod got another address
    lines = plan_commands("up0", plan, Observed(True, False, classes, moved))
    assert [line.split()[1] for line in lines] == ["del", "add"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{", "not JSON"),
        ('{"a": 1}', "JSON list"),
        ("[1]", "expected an object"),
        ('[{"name": "a"}]', "missing address, guarantee_mbit"),
        ('[{"name": "a", "address": "10.0.0.2", "guarantee_mbit": "ten"}]', "must be a number"),
        ('[{"name": "a", "address": "10.0.0.2", "guarantee_mbit": 1, "priority": "hi"}]', "0..7"),
    ],
)
def test_bad_instance_files_are_refused_with_the_reason(text: str, words: str) -> None:
    with pytest.raises(QosPlanError, match=words):
        load_instances(text)


def test_instances_are_read_in_mbit() -> None:
    [inst] = load_instances('[{"name": "a", "address": "10.0.0.2", "guarantee_mbit": 2.5}]')
    assert inst == QosInstance("a", "10.0.0.2", 312_500, 4)


def test_a_changed_quantum_is_sent_again() -> None:
    plan = plan_qos(link=40 * MBIT, instances=[QosInstance("a", "10.0.0.2", 10 * MBIT, 1)])
    a = plan.by_name()["a"]
    classes = {
        1: ObservedClass(1, None, 0, 40_000_000, 40_000_000),
        a.minor: ObservedClass(a.minor, 1, 1, 10_000_000, 40_000_000, quantum=1514),
        0xFFF: ObservedClass(0xFFF, 1, 7, 30_000_000, 40_000_000, quantum=65536),
    }
    filters = {a.minor: f"1:{a.minor:x}/a000002"}
    lines = plan_commands("up0", plan, Observed(True, False, classes, filters))
    assert lines == [f"class replace dev up0 parent 1:1 classid 1:{a.minor:x} htb rate "
                     f"10000000bit ceil 40000000bit prio 1 quantum 65536"]  # fmt: skip
