"""Apps end to end on the simulated cluster: API → store → controller → sim, on both stores.

Simulated time is stepped (``AppsHarness.settle``); no test sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest

from gaia.platform import Platform
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

GPU_QUOTA = {"cpu": 200, "memory": 600_000, "gpu": 60, "bandwidth": 10_000, "local_disk": 1000}


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


@pytest.fixture
def gpu_cluster(world: World) -> str:
    """8 simulated hosts with 8 GPUs each, and room for alpha's OCR service."""
    r = world.client.post(
        "/api/v1/clusters",
        json={
            "name": "gpu-1",
            "kind": "sim",
            "zone": "ap-beijing-2",
            "sim": {"nodes": 8, "gpus": 8, "cpu": 64, "memory_mib": 262144},
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    r = world.client.put(f"{BIZ}/quotas/gpu-1", json={"hard": GPU_QUOTA}, headers=world.admin)
    assert r.status_code == 200, r.text
    return "gpu-1"


class ControllerDied(BaseException):
    """Escapes every ``except Exception``: the process is gone."""


def create_app(h: AppsHarness, name: str, templates: list[dict[str, Any]], **kw: Any) -> Any:
    body = {"name": name, "cluster": kw.pop("cluster", "sim-1"), "templates": templates, **kw}
    return h.post(f"{BIZ}/apps", body, status=201)


# ---------------------------------------------------------------- the talk's OCR example


def test_ocr_gray_upgrade_is_in_place_and_rolls_back(h: AppsHarness, gpu_cluster: str) -> None:
    v7 = template("v7", "registry.local/ocr/server:v7", cpu=4, memory=10240, gpu=2)
    v8 = template("v8", "registry.local/ocr/server:v8", cpu=4, memory=10240, gpu=2)
    create_app(h, "ocr", [v7, v8], cluster=gpu_cluster, replicas=25, default_template="v7")
    h.settle(h.ready("ocr", 25))
    before = h.instances("ocr")
    assert {i["version"] for i in before.values()} == {"v7"}
    assert all(len(i["gpu_ids"]) == 2 for i in before.values())
    # each instance is bound to exactly its 4 cores, next to its two GPUs: the sim splits the
    # 64 cores over the two sockets, GPUs 0-3 on the first, 4-7 on the second; no core is
    # given to two instances of one node
    held: dict[str, set[int]] = {}
    for inst in before.values():
        sockets = {g // 4 for g in inst["gpu_ids"]}
        near = {c for n in sockets for c in range(n * 32, n * 32 + 32)}
        assert len(inst["cpu_ids"]) == 4 and set(inst["cpu_ids"]) <= near, inst
        node = held.setdefault(inst["node"], set())
        assert not node & set(inst["cpu_ids"]), inst
        node.update(inst["cpu_ids"])

    upgrade = h.post(
        f"{BIZ}/apps/ocr/upgrades",
        {"template": "v8", "instance_ids": [0, 2, 4], "max_unavailable": 1},
        status=201,
    )
    chosen = {0, 2, 4}

    def untouched_and_one_at_a_time() -> bool:
        now = h.instances("ocr")
        for iid, inst in now.items():
            if iid not in chosen:
                # the other 22 stay on v7 and never restart
                assert inst["version"] == "v7"
                assert inst["restarts"] == before[iid]["restarts"]
                assert inst["started_at"] == before[iid]["started_at"]
                assert inst["ready"]
        assert sum(1 for i in now.values() if not i["ready"]) <= 1  # max_unavailable
        state = h.get(f"{BIZ}/apps/ocr/upgrades/{upgrade['id']}")["state"]
        return bool(state == "Succeeded")

    h.settle(untouched_and_one_at_a_time)
    after = h.instances("ocr")
    for iid in chosen:
        was, now = before[iid], after[iid]
        assert now["version"] == "v8"
        assert (now["node"], now["pod_ip"], now["gpu_ids"], now["cpu_ids"], now["name"]) == (
            was["node"],
            was["pod_ip"],
            was["gpu_ids"],
            was["cpu_ids"],
            was["name"],
        )
        assert now["restarts"] == was["restarts"] + 1
    assert h.app("ocr")["versions"] == {"v7": 22, "v8": 3}

    # the talk's event log: the hash changed, killed, v8 pulled and started on the same host
    rows = h.event_rows("ocr-4")
    reasons = [e["reason"] for e in rows]
    assert reasons.index("Killing") > reasons.index("Started")  # after the first start
    killing = next(e for e in rows if e["reason"] == "Killing")
    assert "hash changed" in killing["message"]
    assert "will be killed and re-created" in killing["message"]
    pulls = [e["message"] for e in rows if e["reason"] in ("Pulling", "Pulled")]
    assert any("ocr/server:v8" in m for m in pulls)
    counts = {e["reason"]: e["count"] for e in rows if e["reason"] in ("Created", "Started")}
    assert counts == {"Created": 2, "Started": 2}  # created and started again, in place
    assert [e["count"] for e in rows if e["reason"] == "Scheduled"] == [1]  # never rescheduled
    assert "InPlaceUpgrade" in reasons

    h.post(f"{BIZ}/apps/ocr/upgrades/{upgrade['id']}/rollback")
    h.settle(lambda: h.get(f"{BIZ}/apps/ocr/upgrades/{upgrade['id']}")["state"] == "RolledBack")
    h.settle(h.ready("ocr", 25))
    final = h.instances("ocr")
    assert {i["version"] for i in final.values()} == {"v7"}
    for iid, inst in final.items():
        assert (inst["node"], inst["pod_ip"], inst["gpu_ids"]) == (
            before[iid]["node"],
            before[iid]["pod_ip"],
            before[iid]["gpu_ids"],
        )
        if iid not in chosen:
            assert inst["restarts"] == before[iid]["restarts"]


def test_controller_killed_mid_upgrade_converges_without_loss_or_duplicates(
    h: AppsHarness, gpu_cluster: str
) -> None:
    v1 = template("v1", "web:1", cpu=1, memory=512)
    v2 = template("v2", "web:2", cpu=1, memory=512)
    create_app(h, "web", [v1, v2], cluster=gpu_cluster, replicas=12)
    h.settle(h.ready("web", 12))
    before = h.instances("web")
    h.post(f"{BIZ}/apps/web/upgrades", {"template": "v2", "all": True, "max_unavailable": 3}, 201)

    sim = h.sim(gpu_cluster)
    calls = {"n": 0}
    real_replace = sim.replace_image

    async def dying_replace(**kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ControllerDied  # the controller process dies in the middle of a batch
        return await real_replace(**kw)

    sim.replace_image = dying_replace  # type: ignore[method-assign]
    with pytest.raises(ControllerDied):
        for _ in range(20):
            h.tick()
    sim.replace_image = real_replace  # type: ignore[method-assign]
    h.restart_controller()
    upgrade = h.get(f"{BIZ}/apps/web/upgrades")["items"][0]
    h.settle(lambda: h.get(f"{BIZ}/apps/web/upgrades/{upgrade['id']}")["state"] == "Succeeded")
    h.settle(h.ready("web", 12))
    after = h.instances("web")
    assert sorted(after) == sorted(before)  # nothing lost, nothing extra
    names = [i.name for i in h.run_async(sim.list_instances(namespace="alpha", app="web"))]
    assert sorted(names) == sorted(f"web-{i}" for i in range(12))  # no duplicates
    for iid, inst in after.items():
        assert inst["version"] == "v2"
        assert (inst["node"], inst["pod_ip"]) == (before[iid]["node"], before[iid]["pod_ip"])


def test_chosen_instances_stop_give_their_quota_back_and_start_again(h: AppsHarness) -> None:
    create_app(
        h,
        "web",
        [template("v1", "shop/web:1", cpu=1), template("v2", "shop/web:2", cpu=1)],
        replicas=4,
        default_template="v1",
    )
    h.settle(h.ready("web", 4))
    cpu_before = h.get(f"{BIZ}/quotas/sim-1")["used"]["cpu"]
    h.post(f"{BIZ}/apps/web/instances/stop", {"instance_ids": [1, 2]})

    def stopped() -> bool:
        insts = h.instances("web")
        return [insts[i]["status"] for i in range(4)] == [
            "Running",
            "Stopped",
            "Stopped",
            "Running",
        ]

    h.settle(stopped)
    observed = {
        i.instance_id
        for i in h.run_async(h.sim("sim-1").list_instances(namespace="alpha", app="web"))
    }
    assert observed == {0, 3}
    cpu = h.get(f"{BIZ}/quotas/sim-1")["used"]["cpu"]
    assert cpu == cpu_before - 2  # two 1-core instances gave theirs back

    # a stopped instance cannot be upgraded; the others can
    r = h.client.post(
        f"{BIZ}/apps/web/upgrades", json={"template": "v2", "instance_ids": [1]}, headers=h.headers
    )
    assert r.status_code == 409 and "stopped" in r.text
    h.post(f"{BIZ}/apps/web/instances/start", {"instance_ids": [1, 2]})
    h.settle(h.ready("web", 4))
    insts = h.instances("web")
    assert {insts[i]["version"] for i in range(4)} == {"v1"}

    # while an upgrade includes an instance, it cannot be stopped
    h.post(f"{BIZ}/apps/web/upgrades", {"template": "v2", "instance_ids": [3]}, status=201)
    r = h.client.post(
        f"{BIZ}/apps/web/instances/stop", json={"instance_ids": [3]}, headers=h.headers
    )
    assert r.status_code == 409 and "upgrade" in r.text
    r = h.client.post(
        f"{BIZ}/apps/web/instances/stop", json={"instance_ids": [9]}, headers=h.headers
    )
    assert r.status_code == 422 and "not in app" in r.text


def test_the_instances_list_filters_counts_and_pages_both_ways(h: AppsHarness) -> None:
    """Issue 20: a page of the instances list carries the counts a console page shows above
    its table (every instance per status and per running version) and is filtered by status,
    version, node and part of the name before it is paged, so one call draws a page of a
    10,000-instance app; ``prev_cursor`` walks back the way ``next_cursor`` walked on."""
    create_app(
        h,
        "web",
        [template("v1", "shop/web:1", cpu=1), template("v2", "shop/web:2", cpu=1)],
        replicas=5,
        default_template="v1",
    )
    h.settle(h.ready("web", 5))
    h.post(f"{BIZ}/apps/web/instances/stop", {"instance_ids": [1]})
    h.settle(lambda: h.instances("web")[1]["status"] == "Stopped")
    path = f"{BIZ}/apps/web/instances"

    first = h.get(path, limit=2)
    assert [i["id"] for i in first["items"]] == [0, 1]
    assert (first["total"], first["matched"]) == (5, 5)
    assert first["by_status"] == {"Running": 4, "Stopped": 1}
    assert first["by_version"] == {"v1": 4}  # the stopped one runs nothing
    assert first["prev_cursor"] is None
    second = h.get(path, limit=2, cursor=first["next_cursor"])
    third = h.get(path, limit=2, cursor=second["next_cursor"])
    assert [i["id"] for i in second["items"]] == [2, 3]
    assert [i["id"] for i in third["items"]] == [4] and third["next_cursor"] is None
    back = h.get(path, limit=2, cursor=third["prev_cursor"])
    assert [i["id"] for i in back["items"]] == [2, 3]
    assert [i["id"] for i in h.get(path, limit=2, cursor=back["prev_cursor"])["items"]] == [0, 1]

    stopped = h.get(path, status="Stopped")
    assert [i["id"] for i in stopped["items"]] == [1]
    assert (stopped["matched"], stopped["total"]) == (1, 5)
    assert stopped["by_status"] == first["by_status"]  # the counts ignore the filters
    assert [i["id"] for i in h.get(path, name="WEB-3")["items"]] == [3]
    node = first["items"][0]["node"]
    on_node = h.get(path, node=node[-3:])["items"]
    assert 0 in [i["id"] for i in on_node] and all(node[-3:] in i["node"] for i in on_node)
    assert h.get(path, version="v2")["matched"] == 0  # the stopped one is still bound for v1
    running = h.get(path, status="Running", limit=2)
    assert [i["id"] for i in running["items"]] == [0, 2]
    assert [
        i["id"] for i in h.get(path, status="Running", cursor=running["next_cursor"])["items"]
    ] == [3, 4]


def test_newest_first_lists_the_highest_ids_and_the_app_counts_from_the_states(
    h: AppsHarness,
) -> None:
    """Issue 22: ``order=newest`` lists the highest ids first, forward page by page (what a
    scale-in by count removes), with the same counts; the app's ``ready`` and ``running`` are
    counted over each instance's small state (``instance_states``) and agree with the list;
    one instance is read on its own."""
    create_app(h, "web", [template("v1", "shop/web:1", cpu=1)], replicas=5, default_template="v1")
    h.settle(h.ready("web", 5))
    h.post(f"{BIZ}/apps/web/instances/stop", {"instance_ids": [1]})
    h.settle(lambda: h.instances("web")[1]["status"] == "Stopped")
    path = f"{BIZ}/apps/web/instances"

    newest = h.get(path, order="newest", limit=2)
    assert [i["id"] for i in newest["items"]] == [4, 3]
    assert newest["prev_cursor"] is None and newest["total"] == 5
    assert newest["by_status"] == {"Running": 4, "Stopped": 1}
    then = h.get(path, order="newest", limit=2, cursor=newest["next_cursor"])
    assert [i["id"] for i in then["items"]] == [2, 1]
    last = h.get(path, order="newest", limit=2, cursor=then["next_cursor"])
    assert [i["id"] for i in last["items"]] == [0] and last["next_cursor"] is None
    running = h.get(path, order="newest", status="Running")["items"]
    assert [i["id"] for i in running] == [4, 3, 2, 0]

    app = h.get(f"{BIZ}/apps/web")
    assert (app["replicas"], app["ready"], app["running"]) == (5, 4, 4)
    assert [a["ready"] for a in h.get(f"{BIZ}/apps")["items"]] == [4]
    one = h.get(f"{path}/3")
    assert (one["name"], one["status"], one["ready"]) == ("web-3", "Running", True)


def test_a_domain_is_bound_to_one_app_of_the_whole_platform(world: World) -> None:
    """The access layer routes a domain to its app: another business may not take it, by
    creating an app or by changing one; the holder may keep it, and freeing it frees it."""
    v1 = template("v1", "registry.local/web:v1", cpu=0.5, memory=256)
    c, dev, outsider = world.client, world.as_("developer"), world.as_("outsider")
    body = {"name": "web", "cluster": "sim-1", "templates": [v1], "domain": "web.example.com"}
    assert c.post(f"{BIZ}/apps", json=body, headers=dev).status_code == 201
    taken = c.post("/api/v1/businesses/beta/apps", json=body, headers=outsider)
    assert taken.status_code == 409, taken.text
    assert "bound to another app" in taken.text and "alpha" not in taken.text
    other = {**body, "name": "api", "domain": "api.example.com"}
    assert c.post("/api/v1/businesses/beta/apps", json=other, headers=outsider).status_code == 201
    r = c.patch(
        "/api/v1/businesses/beta/apps/api", json={"domain": "web.example.com"}, headers=outsider
    )
    assert r.status_code == 409, r.text
    # the holder may set it again, and once it lets it go, it is free
    assert c.patch(f"{BIZ}/apps/web", json={"domain": "web.example.com"}, headers=dev).is_success
    assert c.patch(f"{BIZ}/apps/web", json={"domain": ""}, headers=dev).is_success
    r = c.patch(
        "/api/v1/businesses/beta/apps/api", json={"domain": "web.example.com"}, headers=outsider
    )
    assert r.status_code == 200, r.text


def test_a_node_whose_cards_are_taken_whole_shows_their_memory_held(
    h: AppsHarness, gpu_cluster: str
) -> None:
    """Instances of whole cards request no GPU memory, yet hold all of it: a node's allocated
    GPU memory is read per card (issue 20: "0 / 196608 MiB" on a full node)."""
    whole = template("v1", "registry.local/train:v1", cpu=4, memory=10240, gpu=8)
    create_app(h, "train", [whole], cluster=gpu_cluster, replicas=2)
    h.settle(h.ready("train", 2))
    nodes = h.get(f"/api/v1/clusters/{gpu_cluster}/nodes?limit=100")["items"]
    full = [n for n in nodes if n["gpus"] and all(g["used"] == 1 for g in n["gpus"])]
    assert len(full) == 2
    for node in full:
        memory = sum(g["memory_mib"] for g in node["gpus"])
        assert node["allocated"]["gpu_memory"] == memory == node["capacity"]["gpu_memory"]
    idle = [n for n in nodes if n not in full]
    assert all(n["allocated"]["gpu_memory"] == 0 for n in idle)
