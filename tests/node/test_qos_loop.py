"""The node agent's bandwidth pass (gaia.node.qos_loop) against a fake pod list and a fake tc.

The real-tc pass (the loop on a device in a network namespace) is in test_qos_netns.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from gaia.domain.qos import QosPlan
from gaia.node.qos_loop import NodeQos, instances_from_pods

MBIT = 125_000
LINK = 100 * MBIT


def pod(
    name: str,
    ip: str | None,
    mbit: str | None = "10M",
    *,
    priority: str | None = None,
    created: str = "2026-12-05T10:00:00Z",
    phase: str = "Running",
    host_network: bool = False,
) -> dict[str, Any]:
    annotations = {}
    if mbit is not None:
        annotations["kubernetes.io/egress-bandwidth"] = mbit
    if priority is not None:
        annotations["gaia.io/bandwidth-priority"] = priority
    status: dict[str, Any] = {"phase": phase}
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "metadata": {
            "namespace": "biz",
            "name": name,
            "annotations": annotations,
            "creationTimestamp": created,
        },
        "spec": {"hostNetwork": host_network},
        "status": status,
    }


class FakePods:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.fail: Exception | None = None

    async def pods_on_node(self) -> list[Mapping[str, Any]]:
        if self.fail is not None:
            raise self.fail
        return list(self.pods)


class FakeTc:
    """Applies a plan as reconcile_qos would, by name: a command per leaf that differs or left."""

    def __init__(self) -> None:
        self.programmed: dict[str, tuple[str | None, int, int]] = {}
        self.plans: list[QosPlan] = []

    def __call__(self, device: str, plan: QosPlan) -> list[str]:
        self.plans.append(plan)
        want = {c.name: (c.address, c.rate, c.priority) for c in plan.classes}
        sent = [f"del {n}" for n in sorted(set(self.programmed) - set(want))]
        sent += [f"set {n}" for n, v in sorted(want.items()) if self.programmed.get(n) != v]
        self.programmed = want
        return sent


def test_pods_become_instances_with_quota_address_and_priority() -> None:
    read = instances_from_pods(
        link=LINK,
        pods=[
            pod("web-0", "10.244.1.5", "100M", priority="1"),  # the whole link
            pod("no-quota", "10.244.1.6", None),  # not an instance with a quota: default leaf
            pod("done", "10.244.1.7", phase="Succeeded"),
            pod("starting", None),
            pod("host", "192.168.0.10", host_network=True),
        ],
    )
    [web] = read.instances
    assert (web.name, web.address, web.guarantee, web.priority) == (
        "biz/web-0",
        "10.244.1.5",
        100 * MBIT,
        1,
    )
    assert any("biz/starting: no IPv4 pod address yet" in s for s in read.skipped)
    assert any("biz/host: host network" in s for s in read.skipped)
    assert not any("no-quota" in s or "done" in s for s in read.skipped)


def test_a_bad_priority_is_reported_and_the_default_used() -> None:
    read = instances_from_pods(link=LINK, pods=[pod("a", "10.0.0.2", priority="urgent")])
    assert read.instances[0].priority == 4
    assert "must be 0..7" in read.skipped[0]


def test_over_subscription_admits_the_oldest_pods_and_reports_the_rest() -> None:
    read = instances_from_pods(
        link=LINK,
        pods=[
            pod("new", "10.0.0.4", "50M", created="2026-12-05T12:00:00Z"),
            pod("old", "10.0.0.2", "60M", created="2026-12-05T10:00:00Z"),
            pod("small", "10.0.0.3", "40M", created="2026-12-05T11:00:00Z"),
        ],
    )
    assert [i.name for i in read.instances] == ["biz/old", "biz/small"]
    assert read.skipped == (
        "biz/new: its 50 Mbit/s do not fit: the older pods' guarantees leave 0 of the link's 100",
    )


def test_each_pass_follows_the_pods_and_sends_only_differences() -> None:
    pods = FakePods([pod("a", "10.0.0.2", "10M"), pod("b", "10.0.0.3", "20M", priority="2")])
    tc = FakeTc()
    shaper = NodeQos(device="eth0", link=LINK, pods=pods, apply=tc)

    first = asyncio.run(shaper.run_once())
    assert first.sent == ("set biz/a", "set biz/b", "set default")
    assert {c.name: c.rate for c in first.plan.classes if c.address} == {
        "biz/a": 10 * MBIT,
        "biz/b": 20 * MBIT,
    }
    assert asyncio.run(shaper.run_once()).sent == ()  # level-triggered: nothing differs

    pods.pods[1] = pod("b", "10.0.0.3", "30M", priority="2")  # b's quota changed
    assert asyncio.run(shaper.run_once()).sent == ("set biz/b", "set default")

    del pods.pods[0]  # a left the node: its leaf goes
    gone = asyncio.run(shaper.run_once())
    assert gone.sent == ("del biz/a", "set default")
    assert [c.name for c in gone.plan.classes] == ["biz/b", "default"]
    assert shaper.passes == 4


def test_the_loop_logs_an_outage_once_keeps_going_and_stops_on_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pods = FakePods([pod("a", "10.0.0.2")])
    pods.fail = ConnectionError("API server away")
    tc = FakeTc()
    shaper = NodeQos(device="eth0", link=LINK, pods=pods, apply=tc, interval_s=0.01)

    async def scenario() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(shaper.run(stop))
        await asyncio.sleep(0.1)
        assert tc.plans == []  # a failed read shapes nothing (the last tree stays)
        pods.fail = None
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(loop, 1)

    with caplog.at_level(logging.INFO, logger="gaia.node.qos_loop"):
        asyncio.run(scenario())
    outages = [r for r in caplog.records if "could not shape" in r.getMessage()]
    assert len(outages) == 1 and "API server away" in outages[0].getMessage()
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert tc.programmed["biz/a"] == ("10.0.0.2", 10 * MBIT, 4)


def test_the_cli_wants_device_and_link_together() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "gaia", "node-agent", "--node-name", "n1", "--qos-device", "eth0"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "go together" in done.stderr
