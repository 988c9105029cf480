"""The floating-IP filter (issue 19): an instance with a floating IP runs only on nodes whose
underlay subnet (label ``gaia.io/subnet``) can hold its address, and says why not."""

from __future__ import annotations

import pytest

from gaia.domain.resources import ResourceVector
from gaia.scheduler import ClusterView, NodeView, PlacementRequest, Unschedulable
from gaia.scheduler.placement import GaiaScheduler

FREE = ResourceVector(cpu=8_000, memory=16_384, local_disk=100, bandwidth=1_000)
ASK = ResourceVector(cpu=1_000, memory=512)


def node(name: str, subnet: str | None) -> NodeView:
    labels = {"gaia.io/subnet": subnet.replace("/", "_")} if subnet else {}
    return NodeView(name=name, ready=True, schedulable=True, free=FREE, labels=labels)


CLUSTER = [node("a1", "10.9.0.0/24"), node("a2", "10.9.0.0/24"), node("b1", "10.9.1.0/24")]


def test_a_kept_address_pins_the_instance_to_its_subnet() -> None:
    request = PlacementRequest(name="web-0", resources=ASK, subnets=frozenset({"10.9.1.0/24"}))
    for _ in range(5):  # the rotating start would try every node
        assert GaiaScheduler().place(request, ClusterView(CLUSTER)).node == "b1"


def test_no_subnets_means_any_node_and_an_empty_set_means_none() -> None:
    anywhere = PlacementRequest(name="web-0", resources=ASK)
    placed = {GaiaScheduler().place(anywhere, ClusterView([*CLUSTER, node("x", None)])).node}
    assert placed <= {"a1", "a2", "b1", "x"}
    full = PlacementRequest(name="web-0", resources=ASK, subnets=frozenset())
    with pytest.raises(Unschedulable) as caught:
        GaiaScheduler().place(full, ClusterView([*CLUSTER, node("x", None)]))
    assert caught.value.reasons == {
        "node(s) in subnets with no free floating IP (no pool, or its pool is full)": 3,
        "node(s) without a gaia.io/subnet label for floating IPs": 1,
    }


def test_the_refusal_names_the_subnet_the_address_needs() -> None:
    request = PlacementRequest(name="web-0", resources=ASK, subnets=frozenset({"10.9.1.0/24"}))
    busy = [*CLUSTER[:2], NodeView(name="b1", ready=True, schedulable=False, free=FREE,
                                   labels={"gaia.io/subnet": "10.9.1.0_24"})]  # fmt: skip
    with pytest.raises(Unschedulable, match=r"2 node\(s\) outside the floating IP's subnet\(s\) "
                       r"10\.9\.1\.0/24, 1 node\(s\) unschedulable"):  # fmt: skip
        GaiaScheduler().place(request, ClusterView(busy))
