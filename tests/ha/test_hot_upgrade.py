"""Issue 21's hot upgrade: Gaia itself upgraded, replicas rolled one at a time, changes no pod.

Three replicas of the *previous* Gaia (the commit just before the newest migration was added,
unpacked from git: ``tests/support/replicas.older_gaia``) run an app of 12 instances on a real
control plane (KWOK nodes). Then each replica in turn is stopped and started again from this
tree: the first new one migrates the schema while older replicas still run, as a rolling
upgrade does. Afterwards every pod has the same UID and ``resourceVersion`` as before (not
restarted, not patched, not even relabelled), and the new leader still reconciles: a scale-out
adds exactly one pod and touches none of the others.

Where the clone has no git history to take the previous Gaia from, the test is skipped and
says so (CI clones with history; a shallow clone cannot run it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gaia.kube.labels import APP_LABEL
from tests.conftest import start_plane
from tests.support.kube import ControlPlane, fake_node
from tests.support.postgres import PostgresServer
from tests.support.replicas import REPO, ReplicaSet, older_gaia
from tests.support.waiting import eventually

INSTANCES = 12
BIZ = "/api/v1/businesses/hot"
ADMIN_PASSWORD = "hot-admin-password-1"
METRICS_TOKEN = "hot-metrics-token-1"
SECRET_KEY = "aG90LXVwZ3JhZGUtdGVzdC1zZWNyZXQta2V5LTMyYnk="


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory, "hot-plane")
    plane.ensure_controller_manager()
    api = plane.http_client()
    for i in range(4):
        r = api.post("/api/v1/nodes", json=fake_node(f"hot-{i}"))
        assert r.status_code == 201, r.text
    api.close()
    yield plane
    plane.stop()


def _pods(kube: httpx.Client) -> dict[str, dict[str, Any]]:
    r = kube.get("/api/v1/namespaces/hot/pods", params={"labelSelector": f"{APP_LABEL}=web"})
    assert r.status_code == 200, r.text
    return {p["metadata"]["name"]: p for p in cast(list[dict[str, Any]], r.json()["items"])}


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _identity(pods: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {n: (p["metadata"]["uid"], p["metadata"]["resourceVersion"]) for n, p in pods.items()}


def test_rolling_gaia_to_a_new_version_changes_no_pod(
    plane: ControlPlane, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    older = older_gaia(tmp_path / "previous")
    if older is None:
        pytest.skip("no git history to take the previous Gaia from (a shallow clone)")
    rev, old_code = older
    env = {
        "GAIA_DATABASE_URL": postgres_server.create_database("gaia_hot"),
        "GAIA_SECRET_KEY": SECRET_KEY,
        "GAIA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GAIA_METRICS_TOKEN": METRICS_TOKEN,
        "GAIA_EGRESS_ALLOW_CIDRS": "127.0.0.0/8",
    }
    rs = ReplicaSet(work=tmp_path / "replicas", env=env, metrics_token=METRICS_TOKEN)
    kube = plane.http_client()
    try:
        first, *others = rs.add(3)
        for replica in rs.replicas:
            replica.code = old_code
        first.start()
        first.wait_ready()
        for replica in others:
            replica.start()
        for replica in others:
            replica.wait_ready()

        def api(method: str, path: str, body: Any = None) -> Any:
            for replica in rs.live():  # whichever answers: a client behind a balancer
                try:
                    r = httpx.request(
                        method,
                        f"{replica.url}{path}",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                    )
                except httpx.TransportError:
                    continue
                assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:300]}"
                return r.json() if r.content else None
            raise AssertionError("no replica answered")

        token = httpx.post(
            f"{first.url}/api/v1/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            timeout=30,
        ).json()["token"]
        api("POST", "/api/v1/businesses", {"name": "hot"})
        api(
            "POST",
            "/api/v1/clusters",
            {"name": "kube", "kind": "kubernetes", "kubeconfig": plane.kubeconfig_text()},
        )
        api("PUT", f"{BIZ}/quotas/kube", {"hard": {"cpu": 100, "memory": 1 << 20}})
        template = {
            "name": "v1",
            "image": "registry.local/hot/web:v1",
            "resources": {"cpu": 0.1, "memory": 64},
            "readiness": {"kind": "http", "port": 8080, "path": "/ready"},
        }
        api(
            "POST",
            f"{BIZ}/apps",
            {"name": "web", "cluster": "kube", "templates": [template], "replicas": INSTANCES},
        )
        eventually(
            lambda: sum(_ready(p) for p in _pods(kube).values()) == INSTANCES,
            "the app ready on the previous Gaia",
            timeout_s=120,
            interval_s=0.5,
        )
        time.sleep(3)  # a few more controller passes of the old leader: settled, not moving
        before = _identity(_pods(kube))

        for replica in rs.replicas:  # the rolling upgrade, one replica at a time
            replica.stop()
            replica.code = REPO
            replica.start()
            replica.wait_ready()
        assert all(r.code == REPO for r in rs.replicas)
        eventually(
            lambda: rs.leader_of("controllers") is not None,
            "a new replica leads the controllers",
            timeout_s=30,
        )
        time.sleep(5)  # the new leader's passes over the app (one a second)
        after = _identity(_pods(kube))
        changed = {n: (before[n], after.get(n)) for n in before if after.get(n) != before[n]}
        assert changed == {}, f"pods changed by upgrading Gaia from {rev[:12]}: {changed}"

        api("POST", f"{BIZ}/apps/web/scale-out", {"count": 1})
        eventually(
            lambda: sum(_ready(p) for p in _pods(kube).values()) == INSTANCES + 1,
            "the new leader scales out",
            timeout_s=60,
            interval_s=0.5,
        )
        now = _identity(_pods(kube))
        assert {n: now[n] for n in before} == before, "the scale-out touched existing pods"
    finally:
        rs.stop()
        kube.close()
