"""Issue 15, apps that fit no node: refused at the API edge with the scheduler's reason.

An app whose one instance fits no node of its cluster even when the node is empty (9 GPUs per
instance on 8-GPU nodes, more memory than any node has) used to be accepted and then hold its
quota forever while its instances waited. Now the API answers 422 with the scheduler's sentence,
unless the caller sets ``allow_pending``; then the app is accepted and its events say why its
instances wait. The check is capacity, not free space: an app that fits an empty node is
accepted on a full cluster. The sim cluster ``sim-1`` of the ``world`` fixture has four nodes of
32 cores, 128 GiB and 8 PCIe GPUs (two sockets).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.scheduler.capacity import fits_nowhere
from gaia.scheduler.port import NodeView, PlacementRequest
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

BIG_QUOTA = {
    "cpu": 1000,
    "memory": 10_000_000,
    "local_disk": 10_000,
    "bandwidth": 100_000,
    "gpu": 100,
    "gpu_memory": 10_000_000,
}


@pytest.fixture
def dev(world: World) -> dict[str, str]:
    r = world.client.put(f"{BIZ}/quotas/sim-1", json={"hard": BIG_QUOTA}, headers=world.admin)
    assert r.status_code == 200, r.text
    return world.as_("developer")


def create(client: TestClient, headers: dict[str, str], name: str, **kw: Any) -> Any:
    templates = [template("v1", "shop/big:1", **kw.pop("shape", {}))]
    body = {"name": name, "cluster": "sim-1", "templates": templates, "replicas": 1, **kw}
    return client.post(f"{BIZ}/apps", json=body, headers=headers)


def quota_used(world: World) -> dict[str, Any]:
    r = world.client.get(f"{BIZ}/quotas/sim-1", headers=world.admin)
    assert r.status_code == 200, r.text
    used: dict[str, Any] = r.json()["used"]
    return used


def test_nine_gpus_per_instance_on_eight_gpu_nodes_is_refused_with_the_reason(
    world: World, dev: dict[str, str]
) -> None:
    """The attack: ask for instances no node can ever hold; the quota used to be taken and kept
    while the instances waited forever."""
    before = quota_used(world)
    r = create(world.client, dev, "huge", shape={"gpu": 9, "cpu": 4})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_request"
    assert "needs 9 GPUs per instance; the largest node of cluster sim-1 has 8" in body["message"]
    assert body["details"]["template"] == "v1"
    assert world.client.get(f"{BIZ}/apps/huge", headers=dev).status_code == 404
    assert quota_used(world) == before


def test_more_memory_than_any_node_is_refused(world: World, dev: dict[str, str]) -> None:
    """A mistake of units (GiB typed as MiB the other way round) asks for more than any node."""
    r = create(world.client, dev, "fat", shape={"memory": 200_000})
    assert r.status_code == 422, r.text
    assert (
        "needs 200000 MiB of memory per instance; the largest node of cluster sim-1 has "
        "131072 MiB" in r.json()["message"]
    )


def test_allow_pending_accepts_it_and_the_app_events_say_it_waits(
    world: World, dev: dict[str, str]
) -> None:
    r = create(world.client, dev, "huge", shape={"gpu": 9, "cpu": 4}, allow_pending=True)
    assert r.status_code == 201, r.text
    r = world.client.get("/api/v1/events", params={"app": "huge"}, headers=dev)
    assert r.status_code == 200, r.text
    reasons = {e["reason"]: e["message"] for e in r.json()["items"]}
    assert "NoNodeFits" in reasons, reasons
    message = reasons["NoNodeFits"]
    assert "needs 9 GPUs per instance" in message
    assert "cannot be placed on any current node and will wait for one" in message


def test_an_app_that_fits_an_empty_node_is_accepted(world: World, dev: dict[str, str]) -> None:
    r = create(world.client, dev, "whole", shape={"gpu": 8, "cpu": 32, "memory": 131072})
    assert r.status_code == 201, r.text


def test_a_new_version_that_needs_more_than_any_node_is_refused(
    world: World, dev: dict[str, str]
) -> None:
    """The spec update path: an app that fits grows, by a new version, past every node."""
    assert create(world.client, dev, "grow", shape={"gpu": 2}).status_code == 201
    bigger = template("v2", "shop/big:2", gpu=16)
    path = f"{BIZ}/apps/grow/templates"
    r = world.client.post(path, json=bigger, headers=dev)
    assert r.status_code == 422, r.text
    assert "needs 16 GPUs per instance; the largest node of cluster sim-1 has 8" in r.text
    assert world.client.get(f"{path}/v2", headers=dev).status_code == 404
    r = world.client.post(path, json=bigger, headers=dev, params={"allow_pending": "true"})
    assert r.status_code == 201, r.text


def test_a_link_level_no_node_offers_is_refused(world: World, dev: dict[str, str]) -> None:
    """4 NVLinked GPUs on PCIe-only nodes: each dimension fits, the topology never does."""
    r = create(world.client, dev, "linked", shape={"gpu": 4, "gpu_link": "NV"})
    assert r.status_code == 422, r.text
    assert "needs 4 GPUs linked by NV or better" in r.json()["message"]


def test_capacity_not_free_space_decides() -> None:
    """A node with everything in use still counts: it may free up."""
    full = NodeView(
        name="n1",
        ready=False,
        schedulable=False,
        free=ResourceVector(),
        gpu_free={0: 0, 1: 0},
        gpu_memory_total={0: 16384, 1: 16384},
        gpu_memory_free={0: 0, 1: 0},
        gpu_model="T4",
        used_cpu=8000,
        used_memory=32768,
    )
    fits = PlacementRequest(name="a", resources=ResourceVector(cpu=8000, memory=32768, gpu=200))
    assert fits_nowhere(fits, [full], cluster="c") is None
    cpu = PlacementRequest(name="a", resources=ResourceVector(cpu=9000))
    assert fits_nowhere(cpu, [full], cluster="c") == (
        "needs 9 cores of CPU per instance; the largest node of cluster c has 8 cores"
    )
    card = PlacementRequest(name="a", resources=ResourceVector(gpu=50, gpu_memory=20000))
    assert fits_nowhere(card, [full], cluster="c") == (
        "needs 20000 MiB of GPU memory per card; the largest GPU of cluster c has 16384 MiB"
    )
    assert "has no nodes" in (fits_nowhere(fits, [], cluster="c") or "")


def test_the_reason_names_the_selector_zone_or_model_no_node_has() -> None:
    node = NodeView(
        name="n1",
        ready=True,
        schedulable=True,
        free=ResourceVector(cpu=8000, memory=32768, gpu=100, gpu_memory=16384),
        zone="z1",
        labels={"disk": "hdd"},
        gpu_free={0: 100},
        gpu_memory_total={0: 16384},
        gpu_memory_free={0: 16384},
        gpu_model="T4",
    )
    small = ResourceVector(cpu=1000, gpu=100)

    def why(**kw: Any) -> str | None:
        return fits_nowhere(PlacementRequest(name="a", resources=small, **kw), [node], cluster="c")

    assert why(node_selector={"disk": "ssd"}) == (
        "no node of cluster c has the label disk=ssd the node selector asks for"
    )
    assert why(zone="z2") == "no node of cluster c is in zone z2"
    assert why(gpu_model="H100") == "no node of cluster c has H100 GPUs"
    assert why(node_selector={"disk": "hdd"}, zone="z1", gpu_model="T4") is None


def test_a_recreating_upgrade_to_a_version_that_fits_no_node_is_refused(
    world: World, dev: dict[str, str]
) -> None:
    """A version accepted with allow_pending (or stored before the check) must not take the
    app's running instances down for good: the upgrade that would recreate them is refused."""
    assert create(world.client, dev, "grow", shape={"gpu": 2}).status_code == 201
    bigger = template("v2", "shop/big:2", gpu=16)
    r = world.client.post(
        f"{BIZ}/apps/grow/templates", json=bigger, headers=dev, params={"allow_pending": "true"}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = {"template": "v2", "all": True}
    r = world.client.post(f"{BIZ}/apps/grow/upgrades", json=body, headers=dev)
    assert r.status_code == 422, r.text
    assert "needs 16 GPUs per instance" in r.json()["message"]
    listed = world.client.get(f"{BIZ}/apps/grow/upgrades", headers=dev).json()
    assert (listed["items"], listed["total"], listed["active"]) == ([], 0, None)
    r = world.client.post(
        f"{BIZ}/apps/grow/upgrades", json={**body, "allow_pending": True}, headers=dev
    )
    assert r.status_code == 201, r.text


def test_an_unreachable_cluster_cannot_be_asked_and_the_app_says_so(
    world: World, dev: dict[str, str], platform: Platform
) -> None:
    """No silent pass: when the cluster does not answer, the app is accepted (the cluster may be
    back in a minute) and its events say the check was not made."""
    harness = AppsHarness(platform=platform, client=world.client, headers=dev)
    harness.sim("sim-1").reachable = False
    r = create(world.client, dev, "blind", shape={"gpu": 9})
    assert r.status_code == 201, r.text
    r = world.client.get("/api/v1/events", params={"app": "blind"}, headers=dev)
    reasons = {e["reason"]: e["message"] for e in r.json()["items"]}
    assert "was not checked" in reasons.get("FitUnchecked", ""), reasons
