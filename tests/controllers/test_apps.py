"""App lifecycle, quota, restarts and blacklist, probes and service, nodes — end to end on sim."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from gaia.platform import Platform
from gaia.store.models import Business, Event
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


def create(h: AppsHarness, name: str = "web", replicas: int = 2, **kw: Any) -> Any:
    templates = kw.pop("templates", [template("v1", "shop/web:1")])
    body = {"name": name, "cluster": "sim-1", "templates": templates, "replicas": replicas, **kw}
    return h.post(f"{BIZ}/apps", body, status=201)


def fault(world: World, **body: Any) -> None:
    r = world.client.post("/api/v1/clusters/sim-1/sim/faults", json=body, headers=world.admin)
    assert r.status_code == 202, r.text


def quota_used(world: World) -> dict[str, Any]:
    r = world.client.get(f"{BIZ}/quotas/sim-1", headers=world.admin)
    assert r.status_code == 200, r.text
    return dict(r.json()["used"])


# ---------------------------------------------------------------- lifecycle and quota


def test_create_scale_stop_start_delete_follow_quota(h: AppsHarness, world: World) -> None:
    create(h, replicas=2)
    assert quota_used(world)["cpu"] == 2
    h.settle(h.ready("web", 2))
    h.post(f"{BIZ}/apps/web/scale-out", {"count": 3})
    assert quota_used(world)["cpu"] == 5
    h.settle(h.ready("web", 5))
    before = h.instances("web")
    h.post(f"{BIZ}/apps/web/scale-in", {"instance_ids": [1, 3]})
    h.settle(h.ready("web", 3))
    after = h.instances("web")
    assert sorted(after) == [0, 2, 4]
    assert all(after[i]["node"] == before[i]["node"] for i in after)  # the rest stay put
    assert quota_used(world)["cpu"] == 3

    h.post(f"{BIZ}/apps/web/stop")
    assert quota_used(world)["cpu"] == 0
    h.settle(lambda: h.instances("web") == {})
    assert h.app("web")["replicas"] == 3  # the spec is kept
    h.post(f"{BIZ}/apps/web/start")
    h.settle(h.ready("web", 3))
    assert sorted(h.instances("web")) == [0, 2, 4]  # the same ids come back

    r = world.client.delete(f"{BIZ}/apps/web", headers=h.headers)
    assert r.status_code == 202
    assert quota_used(world)["cpu"] == 0
    h.settle(lambda: world.client.get(f"{BIZ}/apps/web", headers=h.headers).status_code == 404)
    assert h.run_async(h.sim("sim-1").list_instances(namespace="alpha")) == []


def test_creation_and_scale_out_pass_quota_admission(h: AppsHarness, world: World) -> None:
    r = world.client.post(
        f"{BIZ}/apps",
        json={
            "name": "big",
            "cluster": "sim-1",
            "templates": [template("v1", "x:1", cpu=4)],
            "replicas": 3,
        },
        headers=h.headers,
    )
    assert r.status_code == 403
    assert r.json()["code"] == "quota_exceeded"
    assert "CPU: asked 12 cores" in r.json()["message"]
    assert world.client.get(f"{BIZ}/apps/big", headers=h.headers).status_code == 404
    create(h, "small", replicas=9)
    r = world.client.post(f"{BIZ}/apps/small/scale-out", json={"count": 2}, headers=h.headers)
    assert r.status_code == 403
    assert h.app("small")["replicas"] == 9


def test_scale_out_chooses_the_version_of_new_instances(h: AppsHarness) -> None:
    create(h, templates=[template("v1", "shop/web:1"), template("v2", "shop/web:2")])
    h.post(f"{BIZ}/apps/web/scale-out", {"count": 2, "template": "v2"})
    h.settle(h.ready("web", 4))
    versions = {i: x["version"] for i, x in h.instances("web").items()}
    assert versions == {0: "v1", 1: "v1", 2: "v2", 3: "v2"}


def test_template_change_beyond_the_image_recreates(h: AppsHarness) -> None:
    create(
        h,
        replicas=1,
        templates=[template("v1", "shop/web:1"), template("v2", "shop/web:1", memory=2048)],
    )
    h.settle(h.ready("web", 1))
    h.post(f"{BIZ}/apps/web/upgrades", {"template": "v2", "instance_ids": [0]}, 201)
    h.settle(lambda: h.instances("web")[0]["version"] == "v2" and h.instances("web")[0]["ready"])
    reasons = [r for r, _ in h.events("web-0")]
    assert reasons.count("Scheduled") == 2  # deleted and created again
    assert h.instances("web")[0]["restarts"] == 0


def test_bad_input_gets_clear_errors(h: AppsHarness, world: World) -> None:
    def refused(body: dict[str, Any], path: str = f"{BIZ}/apps") -> str:
        r = world.client.post(path, json=body, headers=h.headers)
        assert r.status_code == 422, r.text
        return str(r.json()["message"])

    ok = template("v1", "shop/web:1")
    assert (
        "gpu"
        in refused(
            {"name": "x", "cluster": "sim-1", "templates": [template("v1", "a:1", gpu=1.5)]}
        ).lower()
    )
    assert "resources or an instance_config" in refused(
        {"name": "x", "cluster": "sim-1", "templates": [{"name": "v1", "image": "a:1"}]}
    )
    assert "default_template" in refused(
        {"name": "x", "cluster": "sim-1", "templates": [ok], "default_template": "v9"}
    )
    assert "name" in refused({"name": "Bad_Name", "cluster": "sim-1", "templates": [ok]})
    create(h, replicas=1)
    assert "not in the app" in refused(
        {"template": "v1", "instance_ids": [7]}, f"{BIZ}/apps/web/upgrades"
    )
    assert "instance_ids or all" in refused({"template": "v1"}, f"{BIZ}/apps/web/upgrades")


# ---------------------------------------------------------------- restarts and blacklist


def test_crash_restarts_in_place_with_growing_backoff(h: AppsHarness, world: World) -> None:
    create(h, replicas=1)
    h.settle(h.ready("web", 1))
    node = h.instances("web")[0]["node"]
    fault(world, kind="crash", namespace="alpha", instance="web-0", exit_code=3)
    h.tick(0)
    inst = h.instances("web")[0]
    assert inst["status"] == "Failed"
    assert inst["last_failure"]["cause"] == "AppExit"
    assert inst["last_failure"]["exit_code"] == 3
    waited = h.settle(h.ready("web", 1))
    assert 10 <= waited <= 20  # first back-off: 10 s, then start
    fault(world, kind="crash", namespace="alpha", instance="web-0", exit_code=3)
    waited = h.settle(h.ready("web", 1))
    assert 20 <= waited <= 30  # second: 20 s
    inst = h.instances("web")[0]
    assert inst["node"] == node
    assert inst["restarts"] == 2
    messages = [m for r, m in h.events("web-0") if r == "BackOff"]
    assert any("next try in 10s" in m for m in messages)
    assert any("next try in 20s" in m for m in messages)


def test_oom_and_liveness_are_told_apart(h: AppsHarness, world: World) -> None:
    create(h, replicas=2, templates=[template("v1", "shop/web:1", liveness=True)])
    h.settle(h.ready("web", 2))
    fault(world, kind="oom", namespace="alpha", instance="web-0")
    fault(world, kind="liveness", namespace="alpha", instance="web-1")
    h.settle(lambda: all(i["last_failure"] is not None for i in h.instances("web").values()))
    insts = h.instances("web")
    assert insts[0]["last_failure"]["cause"] == "OOMKilled"
    assert insts[0]["last_failure"]["exit_code"] == 137
    assert insts[1]["last_failure"]["cause"] == "LivenessFailed"
    assert "Unhealthy" in [r for r, _ in h.events("web-1")]
    h.settle(h.ready("web", 2))


def test_image_pull_error_backs_off_without_moving(h: AppsHarness, world: World) -> None:
    fault(world, kind="image_pull", image="shop/web:1", message="manifest unknown")
    create(h, replicas=1)
    h.settle(lambda: (h.instances("web")[0]["last_failure"] or {}).get("cause") == "ImagePullError")
    node = h.instances("web")[0]["node"]
    for _ in range(30):
        h.tick()
    assert h.instances("web")[0]["node"] == node
    assert "BackOff" in [r for r, _ in h.events("web-0")]
    fault(world, kind="clear_image_pull", image="shop/web:1")
    h.settle(h.ready("web", 1), limit_s=400)
    assert h.instances("web")[0]["node"] == node


def test_node_loss_reschedules_on_another_node(h: AppsHarness, world: World) -> None:
    create(h, replicas=2)
    h.settle(h.ready("web", 2))
    before = h.instances("web")
    lost = before[0]["node"]
    fault(world, kind="node_lost", node=lost)
    h.settle(h.ready("web", 2))
    after = h.instances("web")
    assert all(i["node"] != lost for i in after.values())
    assert sorted(after) == [0, 1]
    assert "Rescheduling" in [r for r, _ in h.events("web-0")] + [r for r, _ in h.events("web-1")]


def test_repeated_failures_blacklist_the_node_until_an_admin_clears_it(
    h: AppsHarness, world: World
) -> None:
    create(h, replicas=1)
    h.settle(h.ready("web", 1))
    node = h.instances("web")[0]["node"]
    for _ in range(3):
        h.settle(h.ready("web", 1), limit_s=400)
        assert h.instances("web")[0]["node"] == node
        fault(world, kind="crash", namespace="alpha", instance="web-0", exit_code=1)
        h.tick(0)
    h.settle(h.ready("web", 1), limit_s=400)
    assert h.instances("web")[0]["node"] != node  # moved off the blacklisted node
    entries = h.get(f"{BIZ}/apps/web/blacklist")["items"]
    assert [e["node"] for e in entries] == [node]
    assert entries[0]["failures"] == 3
    assert "Blacklisted" in [r for r, _ in h.events("web")]
    r = world.client.delete(f"{BIZ}/apps/web/blacklist/{node}", headers=h.headers)
    assert r.status_code == 403  # a developer may not
    r = world.client.delete(f"{BIZ}/apps/web/blacklist/{node}", headers=world.as_("business-admin"))
    assert r.status_code == 204
    assert h.get(f"{BIZ}/apps/web/blacklist")["items"] == []


# ---------------------------------------------------------------- probes, service, access


def test_readiness_gates_endpoints_and_a_domain_binds(h: AppsHarness, world: World) -> None:
    slow = template("v1", "shop/web:1")
    slow["readiness"]["initial_delay_s"] = 30
    create(h, replicas=2, templates=[slow], domain="shop.example.com")
    h.settle(lambda: all(i["status"] == "Running" for i in h.instances("web").values()))
    service = h.get(f"{BIZ}/apps/web/service")
    assert service["domain"] == "shop.example.com"
    assert service["ready_endpoints"] == 0
    h.settle(lambda: h.get(f"{BIZ}/apps/web/service")["ready_endpoints"] == 2)
    fault(world, kind="crash", namespace="alpha", instance="web-1", exit_code=1)
    h.tick(0)
    service = h.get(f"{BIZ}/apps/web/service")
    assert [e["instance"] for e in service["endpoints"] if e["ready"]] == ["web-0"]
    r = world.client.patch(f"{BIZ}/apps/web", json={"domain": "Not A Domain"}, headers=h.headers)
    assert r.status_code == 422


def test_configs_and_secrets_reach_the_instance(h: AppsHarness, world: World) -> None:
    r = world.client.post(
        f"{BIZ}/configmaps", json={"name": "web-conf", "data": {"MODE": "fast"}}, headers=h.headers
    )
    assert r.status_code == 201, r.text
    r = world.client.post(
        f"{BIZ}/secrets", json={"name": "web-key", "data": {"token": "s3cr3t"}}, headers=h.headers
    )
    assert r.status_code == 201, r.text
    t = template(
        "v1",
        "shop/web:1",
        configs=[{"name": "web-conf"}, {"name": "web-key", "secret": True, "mount_path": "/keys"}],
    )
    create(h, replicas=1, templates=[t])
    h.settle(h.ready("web", 1))
    env = h.post(f"{BIZ}/apps/web/instances/0/exec", {"command": ["env"]})
    assert "MODE=fast" in env["stdout"]
    token = h.post(f"{BIZ}/apps/web/instances/0/exec", {"command": ["cat", "/keys/token"]})
    assert token["stdout"].strip() == "s3cr3t"
    records = world.client.get("/api/v1/records", headers=world.admin).text
    assert "s3cr3t" not in records


def test_missing_config_fails_the_instance_with_its_cause(h: AppsHarness) -> None:
    create(h, replicas=1, templates=[template("v1", "shop/web:1", configs=[{"name": "nope"}])])
    h.settle(lambda: (h.instances("web")[0]["last_failure"] or {}).get("cause") == "ConfigError")


def test_restart_kill_logs_and_exec_of_one_instance(h: AppsHarness, world: World) -> None:
    create(h, replicas=1)
    h.settle(h.ready("web", 1))
    first = h.instances("web")[0]
    logs = h.get(f"{BIZ}/apps/web/instances/0/logs", tail=20)
    assert logs and any("shop/web:1" in line["text"] or "web" in line["text"] for line in logs)
    assert (
        h.post(f"{BIZ}/apps/web/instances/0/exec", {"command": ["hostname"]})["stdout"].strip()
        == "web-0"
    )
    h.post(f"{BIZ}/apps/web/instances/0/restart")
    h.settle(h.ready("web", 1))
    assert h.instances("web")[0]["restarts"] == first["restarts"] + 1
    h.post(f"{BIZ}/apps/web/instances/0/kill", status=202)
    h.settle(h.ready("web", 1))
    again = h.instances("web")[0]
    assert again["name"] == "web-0"
    assert again["restarts"] == 0  # a new container object
    r = world.client.post(
        f"{BIZ}/apps/web/instances/0/exec", json={"command": ["env"]}, headers=world.as_("viewer")
    )
    assert r.status_code == 403


def test_exec_records_the_command_line_with_secrets_redacted(h: AppsHarness, world: World) -> None:
    create(h, replicas=1)
    h.settle(h.ready("web", 1))
    shell = {"command": ["sh", "-c", "hostname && echo password=hunter2"]}
    assert h.post(f"{BIZ}/apps/web/instances/0/exec", shell)["exit_code"] == 0
    h.post(f"{BIZ}/apps/web/instances/0/exec", {"command": ["echo", "token=abc def"]})
    records = world.client.get(
        "/api/v1/records", params={"action": "app.instance.exec"}, headers=world.admin
    ).json()["items"]
    summaries = {r["summary"] for r in records}
    assert "$ hostname && echo password=[REDACTED] in web-0: exit 0" in summaries
    assert "$ echo 'token=[REDACTED] def' in web-0: exit 0" in summaries
    assert not any("hunter2" in s or "abc" in s for s in summaries)


def test_mutations_write_records_and_events(h: AppsHarness, world: World) -> None:
    create(h, replicas=1)
    h.settle(h.ready("web", 1))
    h.post(f"{BIZ}/apps/web/scale-out", {"count": 1})
    records = world.client.get(
        "/api/v1/records", params={"business": "alpha"}, headers=world.admin
    ).json()["items"]
    actions = [r["action"] for r in records]
    assert "app.create" in actions
    assert "app.scale-out" in actions
    reasons = [r for r, _ in h.events("web-0")]
    for reason in ("Scheduled", "Pulled", "Created", "Started"):
        assert reason in reasons


def test_a_cluster_event_names_its_business_even_without_apps_or_quota(
    h: AppsHarness, world: World
) -> None:
    """The controller's snapshot holds only the businesses with apps or quotas (a pass reads it
    every second); an event in another business's namespace is still filed under it."""
    assert (
        world.client.post(
            "/api/v1/businesses", json={"name": "gamma"}, headers=world.admin
        ).status_code
        == 201
    )
    h.sim("sim-1")._events.emit(
        at=h.clock.now(),
        namespace="gamma",
        kind="Instance",
        name="batch-0",
        reason="Evicted",
        message="the node ran low on memory",
        type="Warning",
    )
    h.tick()
    with h.platform.db.read_session() as session:
        row = session.scalars(select(Event).where(Event.object_name == "batch-0")).one()
        gamma = session.scalars(select(Business).where(Business.name == "gamma")).one()
        assert (row.business, row.business_id, row.reason) == ("gamma", gamma.id, "Evicted")


# ---------------------------------------------------------------- nodes: scale out and in


def test_drain_moves_instances_and_remove_scales_in(h: AppsHarness, world: World) -> None:
    create(h, replicas=2)
    h.settle(h.ready("web", 2))
    node = h.instances("web")[0]["node"]
    base = "/api/v1/clusters/sim-1/nodes"
    r = world.client.delete(f"{base}/{node}", headers=world.admin)
    assert r.status_code == 409  # still has instances
    r = world.client.post(f"{base}/{node}/drain", headers=world.admin)
    assert r.status_code == 200, r.text
    assert "web-0" in r.json()["evicted"]
    h.settle(h.ready("web", 2))
    assert all(i["node"] != node for i in h.instances("web").values())
    assert world.client.delete(f"{base}/{node}", headers=world.admin).status_code == 204
    names = [n["name"] for n in world.client.get(base, headers=world.admin).json()["items"]]
    assert node not in names
    r = world.client.post(
        base,
        json={
            "name": "extra-1",
            "cpu": 16,
            "memory_mib": 65536,
            "gpus": 4,
            "gpu_model": "T4",
            "gpu_memory_mib": 15360,
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["capacity"]["gpu"] == 4
    assert len(r.json()["gpu_links"]) == 4
    r = world.client.post(f"{base}/extra-1/cordon", headers=h.headers)
    assert r.status_code == 403


def test_a_failing_new_version_pauses_the_upgrade_and_rolls_back(
    h: AppsHarness, world: World
) -> None:
    create(h, replicas=3, templates=[template("v1", "shop/web:1"), template("v2", "shop/web:2")])
    h.settle(h.ready("web", 3))
    fault(world, kind="image_pull", image="shop/web:2", message="manifest unknown")
    upgrade = h.post(f"{BIZ}/apps/web/upgrades", {"template": "v2", "all": True}, status=201)
    path = f"{BIZ}/apps/web/upgrades/{upgrade['id']}"
    h.settle(lambda: h.get(path)["state"] == "Paused")
    paused = h.get(path)
    assert "web-0 (ImagePullError)" in paused["message"]
    assert paused["progress"]["in_flight"] == [0]
    for _ in range(20):
        h.tick()
    versions = {i: x["template"] for i, x in h.instances("web").items()}
    assert versions == {0: "v2", 1: "v1", 2: "v1"}  # the bad version went no further
    r = world.client.post(f"{path}/resume", headers=h.headers)
    assert r.status_code == 200
    r = world.client.post(f"{path}/pause", headers=h.headers)
    assert r.status_code == 200
    h.post(f"{path}/rollback")
    h.settle(lambda: h.get(path)["state"] == "RolledBack")
    h.settle(h.ready("web", 3))
    assert {x["version"] for x in h.instances("web").values()} == {"v1"}
    r = world.client.post(f"{path}/rollback", headers=h.headers)
    assert r.status_code == 409


def test_an_instance_that_fits_nowhere_waits_with_failed_scheduling(
    h: AppsHarness, world: World
) -> None:
    ssd = template("v1", "db:1", node_selector={"disktype": "ssd"})
    # no node has the label yet: accepted only because the app says it may wait for one
    create(h, name="db", replicas=1, templates=[ssd], allow_pending=True)
    for _ in range(3):
        h.tick()
    assert h.instances("db")[0]["status"] == "Pending"
    message = dict(h.events("db-0"))["FailedScheduling"]
    assert "0/4 nodes are available" in message
    assert "4 node(s) didn't match the node selector" in message
    r = world.client.post(
        "/api/v1/clusters/sim-1/nodes",
        json={"name": "ssd-1", "cpu": 16, "memory_mib": 65536, "labels": {"disktype": "ssd"}},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    h.settle(h.ready("db", 1))
    assert h.instances("db")[0]["node"] == "ssd-1"


def test_per_model_gpu_limits_steer_any_model_apps_and_hold_pinned_ones(
    h: AppsHarness, world: World
) -> None:
    r = world.client.post(
        "/api/v1/clusters/sim-1/nodes",
        json={
            "name": "v100-1",
            "cpu": 32,
            "memory_mib": 131072,
            "gpus": 4,
            "gpu_model": "V100",
            "gpu_memory_mib": 32768,
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    r = world.client.put(
        f"{BIZ}/quotas/sim-1/gpu-models/Tesla P40", json={"cards": 1}, headers=world.admin
    )
    assert r.status_code == 200, r.text
    limits = h.get(f"{BIZ}/quotas/sim-1/gpu-models")["items"]
    assert limits == [{"model": "Tesla P40", "cards": 1}]
    # An app pinned to the limited model gets what the budget allows; the rest waits, saying why.
    pinned = template("v1", "infer:1", gpu=1, cpu=1, gpu_model="Tesla P40")
    create(h, "infer", replicas=2, templates=[pinned])
    h.settle(lambda: any(i["status"] == "Running" for i in h.instances("infer").values()))
    for _ in range(3):
        h.tick()
    states = sorted(i["status"] for i in h.instances("infer").values())
    assert states == ["Pending", "Running"], states
    waiting = next(i["name"] for i in h.instances("infer").values() if i["status"] == "Pending")
    message = dict(h.events(waiting))["FailedScheduling"]
    assert "of which the business may take no more" in message, message
    # An any-model app is steered to the models still within budget.
    create(h, "train", replicas=2, templates=[template("v1", "train:1", gpu=1, cpu=1)])
    h.settle(h.ready("train", 2))
    assert {i["node"] for i in h.instances("train").values()} == {"v100-1"}
    # Raising the limit lets the waiting instance run.
    r = world.client.put(
        f"{BIZ}/quotas/sim-1/gpu-models/Tesla P40", json={"cards": 2}, headers=world.admin
    )
    assert r.status_code == 200, r.text
    h.settle(h.ready("infer", 2))
