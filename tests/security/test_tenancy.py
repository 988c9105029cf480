"""Issue 15, tenancy and data safety: a cluster holding apps is not removed silently, system
namespaces cannot be taken by a business, and the secret key is shared and rotatable."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import World
from tests.support.apps_harness import template

# ---------------------------------------------------------------- cluster removal


def _app(world: World, business: str, name: str) -> None:
    body = {"name": name, "cluster": "sim-1", "templates": [template("v1", "registry.local/x:1")]}
    headers = world.admin
    r = world.client.post(f"/api/v1/businesses/{business}/apps", json=body, headers=headers)
    assert r.status_code == 201, r.text


def _succeeded(client: TestClient, headers: dict[str, str], action: str) -> list[dict[str, str]]:
    page = client.get("/api/v1/records", params={"action": action}, headers=headers).json()
    return [r for r in page["items"] if r["result"] == "success"]


def test_cluster_with_apps_is_refused_naming_them_and_force_records_them(world: World) -> None:
    c, admin = world.client, world.admin
    _app(world, "alpha", "web")
    _app(world, "alpha", "api")
    _app(world, "beta", "batch")

    r = c.delete("/api/v1/clusters/sim-1", headers=admin)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "conflict"
    for name in ("alpha/api", "alpha/web", "beta/batch", "force=true"):
        assert name in body["message"]
    assert body["details"] == {
        "apps": {"alpha": ["api", "web"], "beta": ["batch"]},
        "quotas": ["alpha", "beta"],
    }
    assert c.get("/api/v1/clusters/sim-1", headers=admin).status_code == 200
    assert _succeeded(c, admin, "cluster.delete") == []

    r = c.delete("/api/v1/clusters/sim-1", params={"force": "true"}, headers=admin)
    assert r.status_code == 204, r.text
    assert c.get("/api/v1/clusters/sim-1", headers=admin).status_code == 404
    [record] = _succeeded(c, admin, "cluster.delete")
    summary = record["summary"]
    for name in ("alpha/api", "alpha/web", "beta/batch", "quota(s) of: alpha, beta"):
        assert name in summary, summary


def test_empty_cluster_is_removed_without_force(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post("/api/v1/clusters", json={"name": "idle", "kind": "sim"}, headers=admin)
    assert r.status_code == 201, r.text
    assert client.delete("/api/v1/clusters/idle", headers=admin).status_code == 204
