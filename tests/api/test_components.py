"""The platform's components (issue 21): this replica and its loops from its own heartbeat,
the loop groups' leaders, the database and metric store, clusters' control planes probed now
(a simulated cluster and the real control plane of the tests), and a loop restarted on an
administrator's request, by the replica's heartbeat. Platform administrators only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gaia.app import create_app
from gaia.platform import Platform
from tests.conftest import ADMIN_PASSWORD, World, login
from tests.support.egress import allow_loopback_egress  # noqa: F401 (the control plane is local)
from tests.support.kube import ControlPlane

C = "/api/v1/platform/components"


@pytest.fixture
def live(platform: Platform) -> Iterator[TestClient]:
    """The application with its background loops running, as ``gaia up`` runs it."""
    with TestClient(create_app(platform, run_loops=True), base_url="https://localhost") as c:
        yield c


def _until(check: Any, what: str, timeout_s: float = 20) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_a_replica_reports_its_loops_and_restarts_one_when_asked(
    live: TestClient, platform: Platform
) -> None:
    admin = _admin(live)

    def me() -> dict[str, Any] | None:
        body = live.get(C, headers=admin).json()
        return next((r for r in body["replicas"] if r["this_replica"]), None)

    def leading() -> dict[str, Any] | None:
        # the first heartbeat may come before the first lease renewal: wait for both
        now = me()
        loops = {lp["name"]: lp for lp in now["loops"]} if now else {}
        return now if loops.get("apps", {}).get("leads") else None

    replica = _until(leading, "a heartbeat that says this replica leads the controllers")
    assert replica["name"] == platform.replica_id and replica["state"] == "up"
    loops = {loop["name"]: loop for loop in replica["loops"]}
    assert {"apps", "cluster-health", "alert-evaluator", "replica-heartbeat"} <= set(loops)
    assert loops["apps"]["group"] == "controllers" and loops["apps"]["leads"] is True
    assert loops["apps"]["logger"] == "gaia.controllers.apps"
    assert loops["replica-heartbeat"]["group"] == "" and loops["replica-heartbeat"]["leads"] is None
    body = live.get(C, headers=admin).json()
    assert {lead["group"]: lead["holder"] for lead in body["leaders"]} == {
        "controllers": platform.replica_id,
        "monitoring": platform.replica_id,
    }
    assert body["database"]["healthy"] is True and body["database"]["detail"].startswith("schema ")
    assert body["metric_store"]["kind"] == "embedded"

    r = live.post(
        f"/api/v1/platform/replicas/{platform.replica_id}/loops/apps/restart", headers=admin
    )
    assert r.status_code == 202, r.text
    assert r.json() == {"replica": platform.replica_id, "loop": "apps", "state": "asked"}

    def restarted() -> bool:
        now = me()
        return bool(now) and {lp["name"]: lp for lp in now["loops"]}["apps"]["restarts"] == 1

    _until(restarted, "the apps loop restarted by the heartbeat")
    assert me()["asked_restarts"] == []  # taken once
    records = live.get("/api/v1/records", headers=admin, params={"limit": 50}).json()["items"]
    assert any(rec["action"] == "replica.loop.restart" for rec in records)


def _admin(client: TestClient) -> dict[str, str]:
    return login(client, "admin", ADMIN_PASSWORD)


def test_restart_requests_are_checked(live: TestClient, platform: Platform) -> None:
    admin = _admin(live)
    _until(lambda: live.get(C, headers=admin).json()["replicas"], "a heartbeat")
    base = "/api/v1/platform/replicas"
    r = live.post(f"{base}/no-such-replica/loops/apps/restart", headers=admin)
    assert r.status_code == 404 and "not found" in r.json()["message"]
    r = live.post(f"{base}/{platform.replica_id}/loops/no-such-loop/restart", headers=admin)
    assert r.status_code == 422 and "runs no loop named 'no-such-loop'" in r.json()["message"]
    assert "apps" in r.json()["message"]  # the loops it does run
    r = live.post(f"{base}/{platform.replica_id}/loops/replica-heartbeat/restart", headers=admin)
    assert r.status_code == 422 and "restart the replica" in r.json()["message"]


@pytest.mark.parametrize("who", ["business-admin", "developer", "viewer"])
def test_only_platform_admins_see_or_restart_components(world: World, who: str) -> None:
    headers = world.as_(who)
    assert world.client.get(C, headers=headers).status_code == 403
    assert world.client.get(f"{C}/clusters", headers=headers).status_code == 403
    r = world.client.post("/api/v1/platform/replicas/x/loops/apps/restart", headers=headers)
    assert r.status_code == 403


def test_cluster_control_planes_are_probed_now(world: World, control_plane: ControlPlane) -> None:
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "real", "kind": "kubernetes", "kubeconfig": control_plane.kubeconfig_text()},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    page = world.client.get(f"{C}/clusters", headers=world.admin, params={"limit": 1})
    assert page.status_code == 200, page.text
    first = page.json()
    assert [c["cluster"] for c in first["items"]] == ["real"] and first["next_cursor"]
    parts = {p["name"]: p for p in first["items"][0]["parts"]}
    assert parts["apiserver"]["healthy"] is True
    assert parts["etcd"]["healthy"] is True and "MiB" in parts["etcd"]["detail"]
    rest = world.client.get(
        f"{C}/clusters", headers=world.admin, params={"cursor": first["next_cursor"]}
    ).json()
    assert [c["cluster"] for c in rest["items"]] == ["sim-1"]
    assert {p["name"]: p for p in rest["items"][0]["parts"]}["apiserver"]["healthy"] is True
