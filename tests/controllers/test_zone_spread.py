"""Zone spread (issue 21, multi-AZ): an app asks that no zone hold more than ``zone_max_skew``
instances above the emptiest one; the scheduler honours it, and when a whole zone's nodes are
lost (the sim's ``node_lost`` fault, node by node) its instances are placed again in the other
zones, within the business's quota. On the simulated cluster, through the API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.scheduler import ClusterView, NodeView, PlacementRequest, Unschedulable
from gaia.scheduler.fit import ResourceFitScheduler
from gaia.scheduler.placement import GaiaScheduler
from gaia.scheduler.port import eligible_zones
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

ZONES = ("zone-a", "zone-b", "zone-c")


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


def _zoned_cluster(world: World, *, cpu_quota: int = 64) -> None:
    """A sim cluster ``zoned`` of two 8-core nodes in each of three zones."""
    c, admin = world.client, world.admin
    r = c.post(
        "/api/v1/clusters",
        json={"name": "zoned", "kind": "sim", "sim": {"nodes": 0}},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    for zone in ZONES:
        for i in range(2):
            r = c.post(
                "/api/v1/clusters/zoned/nodes",
                json={"name": f"{zone}-{i}", "cpu": 8, "memory_mib": 32768, "zone": zone},
                headers=admin,
            )
            assert r.status_code == 201, r.text
    hard = {"cpu": cpu_quota, "memory": 1 << 20, "local_disk": 10_000}
    r = c.put(f"{BIZ}/quotas/zoned", json={"hard": hard}, headers=admin)
    assert r.status_code == 200, r.text


def _create(h: AppsHarness, replicas: int, **tmpl: Any) -> None:
    body = {
        "name": "web",
        "cluster": "zoned",
        "templates": [template("v1", "shop/web:1", cpu=1, memory=512, **tmpl)],
        "replicas": replicas,
    }
    h.post(f"{BIZ}/apps", body, status=201)


def _per_zone(h: AppsHarness) -> Counter[str]:
    return Counter(i["node"].rsplit("-", 1)[0] for i in h.instances("web").values())


def test_instances_spread_evenly_over_the_zones(h: AppsHarness, world: World) -> None:
    _zoned_cluster(world)
    _create(h, 7, zone_max_skew=1, placement="binpack")
    h.settle(h.ready("web", 7))
    counts = _per_zone(h)
    assert sorted(counts.values()) == [2, 2, 3], counts


def test_without_a_spread_binpacking_may_fill_one_zone(h: AppsHarness, world: World) -> None:
    """The control: the same app (binpack placement) without the spread leaves a zone empty,
    so the spread above is the zone spread's doing."""
    _zoned_cluster(world)
    _create(h, 7, placement="binpack")
    h.settle(h.ready("web", 7))
    assert len(_per_zone(h)) < 3


def test_losing_a_zone_moves_its_instances_to_the_others(h: AppsHarness, world: World) -> None:
    _zoned_cluster(world, cpu_quota=6)  # exactly the six instances: room for none more
    _create(h, 6, zone_max_skew=1, placement="binpack")
    h.settle(h.ready("web", 6))
    assert _per_zone(h) == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    for i in range(2):
        r = world.client.post(
            "/api/v1/clusters/zoned/sim/faults",
            json={"kind": "node_lost", "node": f"zone-c-{i}"},
            headers=world.admin,
        )
        assert r.status_code == 202, r.text
    h.settle(h.ready("web", 6))
    assert _per_zone(h) == {"zone-a": 3, "zone-b": 3}
    assert sorted(h.instances("web")) == list(range(6))  # the same ids, none added
    r = world.client.get(f"{BIZ}/quotas/zoned", headers=world.admin)
    assert r.json()["used"]["cpu"] == 6  # within the quota: the lost ones were given back


def test_a_spread_refuses_a_zone_already_too_far_ahead(world: World) -> None:
    """When the emptiest zone has no room, a strict spread places nothing rather than skew
    (kube-scheduler's DoNotSchedule), and says why; both schedulers honour it."""
    free = ResourceVector(cpu=1000, memory=1024)
    full = ResourceVector(cpu=0, memory=1024)
    nodes = [
        NodeView(name="a-0", ready=True, schedulable=True, free=free, zone="zone-a"),
        NodeView(name="b-0", ready=True, schedulable=True, free=full, zone="zone-b"),
    ]
    request = PlacementRequest(
        name="alpha/web-9",
        resources=ResourceVector(cpu=500, memory=128),
        max_zone_skew=1,
        zone_counts={"zone-a": 3, "zone-b": 2},
    )
    for scheduler in (GaiaScheduler(), ResourceFitScheduler()):
        with pytest.raises(Unschedulable) as refused:
            scheduler.place(request, ClusterView(nodes))
        assert "max skew 1" in str(refused.value)
    # a lost zone is no longer counted: the same counts without zone-b place in zone-a
    lost = [nodes[0], NodeView(name="b-0", ready=False, schedulable=True, free=free, zone="zone-b")]
    zones = eligible_zones(ClusterView(lost), node_selector={}, avoid_nodes=frozenset())
    assert zones == {"zone-a"}
    placed = GaiaScheduler().place(
        PlacementRequest(
            name="alpha/web-9",
            resources=ResourceVector(cpu=500, memory=128),
            max_zone_skew=1,
            zone_counts={"zone-a": 3},
        ),
        ClusterView(lost),
    )
    assert placed.node == "a-0"


def test_a_template_cannot_both_pin_a_zone_and_spread(h: AppsHarness, world: World) -> None:
    _zoned_cluster(world)
    r = world.client.post(
        f"{BIZ}/apps",
        json={
            "name": "web",
            "cluster": "zoned",
            "templates": [template("v1", "shop/web:1", zone="zone-a", zone_max_skew=1)],
            "replicas": 1,
        },
        headers=h.headers,
    )
    assert r.status_code == 422
    assert "cannot spread" in r.text
