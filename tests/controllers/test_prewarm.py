"""Pre-pull during gray upgrades (issue 22): while one batch restarts, the app controller has the
target image pulled onto the nodes of the next batches, so their instances find it "already
present on machine" when their turn comes; a paused or rolled back upgrade stops pre-pulling.
An app with ``prepull: templates`` has its newest declared version pulled before any upgrade
(the first batch is warm too), and one with ``prepull: off`` nothing ahead of time.
On the simulated cluster (4 nodes), through the API and the real controller."""

from __future__ import annotations

from typing import Any

import pytest

from gaia.platform import Platform
from gaia.providers.sim import SimCluster
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

MB = 1_000_000
NS = "alpha"


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    harness = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    harness.step_s = 0.25
    return harness


def web_app(
    h: AppsHarness, *, top_layer_mb: int, replicas: int = 8, prepull: str | None = None
) -> SimCluster:
    """An app on v1 whose v2 differs in its image only: its top layer."""
    sim = h.sim("sim-1")
    sim.register_image("shop/web:1", [200 * MB, 20 * MB])
    sim.register_image("shop/web:2", [200 * MB, top_layer_mb * MB + 1])
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "shop/web:1"), template("v2", "shop/web:2")],
        "replicas": replicas,
    }
    if prepull is not None:
        body["prepull"] = prepull
    h.post(f"{BIZ}/apps", body, status=201)
    h.settle(h.ready("web", replicas))
    return sim


def one_per_node(h: AppsHarness) -> list[int]:
    """An instance id per node, so that no batch's node was warmed by an earlier batch."""
    first: dict[str, int] = {}
    for iid, inst in sorted(h.instances("web").items()):
        first.setdefault(inst["node"], iid)
    ids = sorted(first.values())
    assert len(ids) >= 3, "the scenario needs instances on three nodes at least"
    return ids


def upgrade(h: AppsHarness, ids: list[int]) -> str:
    body = {"template": "v2", "instance_ids": ids, "max_unavailable": 1}
    made = h.post(f"{BIZ}/apps/web/upgrades", body, status=201)
    return f"{BIZ}/apps/web/upgrades/{made['id']}"


def pulls_after(sim: SimCluster, seq: int) -> dict[str, list[str]]:
    """Per instance, the reasons of its pull events since ``seq``."""
    out: dict[str, list[str]] = {}
    for e in sh(sim.events(since=seq, limit=100_000)):
        if e.reason in ("Pulling", "Pulled"):
            out.setdefault(e.object_name, []).append(e.reason)
    return out


def upgrade_to_the_end(
    h: AppsHarness, sim: SimCluster, ids: list[int], *, looking: bool = False
) -> dict[str, list[str]]:
    """Upgrade ``ids`` to v2 one at a time until Succeeded; the pull events of each. With
    ``looking``, assert after the first batch moved that nothing is pre-pulled."""
    seq = sh(sim.events(limit=100_000))[-1].seq
    path = upgrade(h, ids)
    if looking:
        h.tick()
        assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    h.settle(lambda: h.get(path)["state"] == "Succeeded")
    return pulls_after(sim, seq)


def sh(coro: Any) -> Any:
    return AppsHarness.run_async(coro)


def test_later_batches_find_the_image_already_on_their_nodes(h: AppsHarness) -> None:
    sim = web_app(h, top_layer_mb=50)
    ids = one_per_node(h)
    node_of = {iid: h.instances("web")[iid]["node"] for iid in ids}
    seq = sh(sim.events(limit=100_000))[-1].seq
    path = upgrade(h, ids)
    h.tick()  # the first batch moves; the next two batches' nodes start pulling
    later = ids[1:3]
    # (and the first batch's own: a pull called off there would stop layers its instance needs)
    wished = {node_of[i] for i in ids[:3]}
    assert set(sim.prewarms_in_flight(namespace=NS, owner="web")) == wished
    h.tick()
    for iid in later:
        assert h.instances("web")[iid]["template"] == "v1"  # before its turn...
        assert sim.image_present(node=node_of[iid], image="shop/web:2")  # ...the image is there
    h.settle(lambda: h.get(path)["state"] == "Succeeded")
    pulls = pulls_after(sim, seq)
    assert pulls[f"web-{ids[0]}"] == ["Pulling", "Pulled"]  # the first batch pulls itself
    for iid in ids[1:]:
        assert pulls[f"web-{iid}"] == ["Pulled"]  # "already present on machine"
    assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}


def test_without_pre_pull_every_batch_pulls_in_its_turn(h: AppsHarness) -> None:
    # the same scenario with the look-ahead off: what the test above guards against
    h.controller.prewarm_batches = 0
    sim = web_app(h, top_layer_mb=50)
    ids = one_per_node(h)
    pulls = upgrade_to_the_end(h, sim, ids)
    for iid in ids:
        assert pulls[f"web-{iid}"] == ["Pulling", "Pulled"]


@pytest.mark.parametrize("verb", ["pause", "rollback"])
def test_a_paused_or_rolled_back_upgrade_stops_pre_pulling(h: AppsHarness, verb: str) -> None:
    # a 5 GB top layer: 4 s on the nodes' 10 Gbit/s, still in flight when the operator acts
    sim = web_app(h, top_layer_mb=5000)
    ids = one_per_node(h)
    node_of = {iid: h.instances("web")[iid]["node"] for iid in ids}
    path = upgrade(h, ids)
    h.tick()
    later = ids[1:3]
    wished = {node_of[i] for i in ids[:3]}
    assert set(sim.prewarms_in_flight(namespace=NS, owner="web")) == wished
    h.post(f"{path}/{verb}")
    h.tick()
    assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    for _ in range(40):  # 10 simulated seconds: the pre-pulls would have finished long ago
        h.tick()
    for iid in later:
        assert not sim.image_present(node=node_of[iid], image="shop/web:2")
    if verb == "pause":
        # the batch in flight was not stopped: its own pull went on and it runs v2
        assert h.instances("web")[ids[0]]["version"] == "v2"
    else:
        h.settle(lambda: h.get(path)["state"] == "RolledBack")
        assert {i["version"] for i in h.instances("web").values()} == {"v1"}


def test_a_deleted_app_leaves_no_pre_pull_behind(h: AppsHarness) -> None:
    sim = web_app(h, top_layer_mb=5000)
    path = upgrade(h, one_per_node(h))
    h.tick()
    assert sim.prewarms_in_flight(namespace=NS, owner="web")
    assert h.get(path)["state"] == "Running"
    r = h.client.delete(f"{BIZ}/apps/web", headers=h.headers)
    assert r.status_code in (200, 202, 204), r.text
    h.settle(lambda: not sim.prewarms_in_flight(namespace=NS, owner="web"), limit_s=10)


def nodes_of(h: AppsHarness) -> set[str]:
    return {inst["node"] for inst in h.instances("web").values()}


def holds_v2(sim: SimCluster, nodes: set[str]) -> bool:
    return all(sim.image_present(node=n, image="shop/web:2") for n in nodes)


def test_with_prepull_templates_even_the_first_batch_finds_the_image(h: AppsHarness) -> None:
    sim = web_app(h, top_layer_mb=50, prepull="templates")
    assert h.app("web")["prepull"] == "templates"
    nodes = nodes_of(h)
    # no upgrade asked for: v2, declared and run by no instance, comes onto every node of the
    # app (with the default, "upgrades", it never would: see the test below)
    h.settle(lambda: holds_v2(sim, nodes), limit_s=30)
    ids = one_per_node(h)
    pulls = upgrade_to_the_end(h, sim, ids)
    for iid in ids:
        assert pulls[f"web-{iid}"] == ["Pulled"]  # the first batch too
    assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}


def test_a_standing_wish_is_said_again_every_hour(
    h: AppsHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The P2P coordinator drops a declared job a day after it was last said: a wish that
    stands for weeks (``prepull: templates`` with nothing to upgrade) is repeated, the same
    wish each time, and not at every pass."""
    sim = web_app(h, top_layer_mb=50, prepull="templates")
    nodes = nodes_of(h)
    h.settle(lambda: holds_v2(sim, nodes), limit_s=30)
    said: list[tuple[str, frozenset[str]]] = []
    prewarm_image = sim.prewarm_image

    async def saying(*, namespace: str, owner: str, image: str, nodes: Any) -> None:
        said.append((image, frozenset(nodes)))
        await prewarm_image(namespace=namespace, owner=owner, image=image, nodes=nodes)

    monkeypatch.setattr(sim, "prewarm_image", saying)
    for _ in range(20):
        h.tick(60)  # 20 minutes of passes (every one a resync: a full pass)
    assert said == []
    for _ in range(45):
        h.tick(60)
    assert said == [("shop/web:2", frozenset(nodes))]


def test_by_default_no_version_is_pulled_before_its_upgrade(h: AppsHarness) -> None:
    sim = web_app(h, top_layer_mb=50)
    assert h.app("web")["prepull"] == "upgrades"
    nodes = nodes_of(h)
    for _ in range(40):  # 10 simulated seconds: a pre-pull of 50 MB would be done
        h.tick()
    assert not any(sim.image_present(node=n, image="shop/web:2") for n in nodes)


def test_the_pre_pull_of_a_version_waits_for_the_instances_own_pulls(h: AppsHarness) -> None:
    sim = h.sim("sim-1")
    # a 5 GB v1: 4 s on the nodes' 10 Gbit/s, during which v2 must not share the link
    sim.register_image("shop/web:1", [200 * MB, 5000 * MB])
    sim.register_image("shop/web:2", [200 * MB, 5000 * MB + 1])
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "shop/web:1"), template("v2", "shop/web:2")],
        "replicas": 4,
        "prepull": "templates",
    }
    h.post(f"{BIZ}/apps", body, status=201)
    for _ in range(8):  # 2 simulated seconds: every instance still pulls v1
        h.tick()
        assert not h.ready("web", 1)()
        assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    h.settle(h.ready("web", 4))
    h.settle(lambda: holds_v2(sim, nodes_of(h)), limit_s=30)


def test_a_version_declared_later_is_pulled_before_its_upgrade(h: AppsHarness) -> None:
    sim = h.sim("sim-1")
    sim.register_image("shop/web:1", [200 * MB, 20 * MB])
    sim.register_image("shop/web:3", [200 * MB, 30 * MB])
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "shop/web:1")],
        "replicas": 4,
        "prepull": "templates",
    }
    h.post(f"{BIZ}/apps", body, status=201)
    h.settle(h.ready("web", 4))
    assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    h.post(f"{BIZ}/apps/web/templates", template("v3", "shop/web:3"), status=201)
    nodes = nodes_of(h)
    h.settle(lambda: all(sim.image_present(node=n, image="shop/web:3") for n in nodes), limit_s=30)


def test_turning_prepull_off_calls_off_the_pulls_in_flight(h: AppsHarness) -> None:
    sim = web_app(h, top_layer_mb=5000, prepull="templates")
    nodes = nodes_of(h)
    h.tick()
    assert set(sim.prewarms_in_flight(namespace=NS, owner="web")) == nodes
    r = h.client.patch(f"{BIZ}/apps/web", json={"prepull": "off"}, headers=h.headers)
    assert r.status_code == 200, r.text
    assert r.json()["prepull"] == "off"
    h.tick()
    assert sim.prewarms_in_flight(namespace=NS, owner="web") == {}
    for _ in range(40):  # 10 simulated seconds: the pre-pulls would have finished long ago
        h.tick()
    assert not any(sim.image_present(node=n, image="shop/web:2") for n in nodes)


def test_with_prepull_off_not_even_an_upgrade_pulls_ahead(h: AppsHarness) -> None:
    sim = web_app(h, top_layer_mb=50, prepull="off")
    ids = one_per_node(h)
    pulls = upgrade_to_the_end(h, sim, ids, looking=True)
    for iid in ids:
        assert pulls[f"web-{iid}"] == ["Pulling", "Pulled"]


def test_a_bad_prepull_is_refused_with_the_choices(h: AppsHarness) -> None:
    web_app(h, top_layer_mb=50, replicas=1)
    r = h.client.patch(f"{BIZ}/apps/web", json={"prepull": "always"}, headers=h.headers)
    assert r.status_code == 422, r.text
    assert "'upgrades', 'templates' or 'off'" in r.text
    assert h.app("web")["prepull"] == "upgrades"
