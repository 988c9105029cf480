"""The test control plane itself: real etcd, kube-apiserver and KWOK nodes, reachable by Gaia's
kubernetes provider and by kubectl."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import HealthState
from tests.support.kube import ControlPlane, fake_node

PIX4 = [
    ["X", "PIX", "SYS", "SYS"],
    ["PIX", "X", "SYS", "SYS"],
    ["SYS", "SYS", "X", "PIX"],
    ["SYS", "SYS", "PIX", "X"],
]


def wait_for(predicate: object, timeout_s: float = 60, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    client = control_plane.http_client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def kwok_nodes(api: httpx.Client) -> list[str]:
    nodes = [
        fake_node(
            "cp-gpu-0",
            gpus=4,
            gpu_memory_mib=16384,
            gpu_model="Tesla-T4",
            gpu_topology=PIX4,
            zone="z1",
        ),
        fake_node("cp-cpu-0", cpu="16", memory="64Gi", zone="z2"),
    ]
    for node in nodes:
        r = api.post("/api/v1/nodes", json=node)
        assert r.status_code in (201, 409), r.text

    def ready() -> bool:
        items = api.get("/api/v1/nodes", params={"labelSelector": "type=kwok"}).json()["items"]
        names = {
            n["metadata"]["name"]
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        }
        return {"cp-gpu-0", "cp-cpu-0"} <= names

    wait_for(ready, what="KWOK marking the fake nodes Ready")
    return ["cp-gpu-0", "cp-cpu-0"]


def test_the_apiserver_serves_with_rbac_and_client_certificates(
    control_plane: ControlPlane, api: httpx.Client
) -> None:
    assert api.get("/readyz").status_code == 200
    version = api.get("/version").json()
    assert version["gitVersion"].startswith("v1.37.")
    # without a client certificate the caller is anonymous, and RBAC refuses it
    anonymous = httpx.get(
        f"{control_plane.server}/api/v1/namespaces",
        verify=False,  # noqa: S501 - the point is the missing credentials
        timeout=10,
    )
    assert anonymous.status_code in (401, 403)


def test_kwok_runs_fake_nodes_with_gpu_resources(api: httpx.Client, kwok_nodes: list[str]) -> None:
    node = api.get("/api/v1/nodes/cp-gpu-0").json()
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert json.loads(node["metadata"]["annotations"]["gaia.io/gpu-topology"]) == PIX4


def test_the_kubernetes_provider_sees_the_cluster(
    control_plane: ControlPlane, kwok_nodes: list[str]
) -> None:
    async def look() -> tuple[HealthState, dict[str, bool]]:
        cluster = KubernetesCluster(name="real", kubeconfig=control_plane.kubeconfig_text())
        try:
            health = await cluster.check_health(timeout=5)
            nodes = await cluster.list_nodes()
        finally:
            await cluster.close()
        return health.state, {n.name: n.ready for n in nodes}

    state, nodes = asyncio.run(look())
    assert state == HealthState.HEALTHY
    assert nodes["cp-gpu-0"] and nodes["cp-cpu-0"]


def test_kubectl_sees_the_same_objects(control_plane: ControlPlane, kwok_nodes: list[str]) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl on PATH (Debian: apt-get install kubernetes-client)")
    done = control_plane.kubectl("get", "nodes", "-l", "type=kwok", "-o", "name")
    assert done.returncode == 0, done.stderr
    assert {"node/cp-gpu-0", "node/cp-cpu-0"} <= set(done.stdout.split())


def test_kwok_records_a_killing_event_for_a_deleted_pod_that_ran(
    api: httpx.Client, kwok_nodes: list[str]
) -> None:
    """``tools/kwok/gaia-stages.yaml``: as a kubelet stops a deleted pod's containers, KWOK
    records a ``Killing`` event for every deleted pod that ran, then deletes it. KWOK's own
    pod-delete stage records none and matches too; the Gaia stage's weight makes KWOK pick it
    every time (without it this test failed in two runs of four). Once per pod: KWOK's own
    DELETE makes it look at the pod again."""
    namespace = "kwok-delete"
    r = api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
    assert r.status_code in (201, 409), r.text
    names = [f"stopped-{i}" for i in range(4)]
    for name in names:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": "cp-cpu-0",
                "containers": [{"name": "main", "image": "registry.local/stopped:1"}],
            },
        }
        r = api.post(f"/api/v1/namespaces/{namespace}/pods", json=pod)
        assert r.status_code == 201, r.text

    def running() -> dict[str, str]:
        items = api.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"]
        return {
            p["metadata"]["name"]: p["metadata"]["uid"]
            for p in items
            if p.get("status", {}).get("phase") == "Running"
        }

    wait_for(lambda: set(running()) == set(names), what="KWOK running the pods")
    uids = set(running().values())
    for name in names:
        assert api.delete(f"/api/v1/namespaces/{namespace}/pods/{name}").status_code == 200

    def killing() -> dict[str, dict[str, Any]]:
        items = api.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
        return {e["involvedObject"]["uid"]: e for e in items if e["reason"] == "Killing"}

    wait_for(
        lambda: not api.get(f"/api/v1/namespaces/{namespace}/pods").json()["items"],
        what="KWOK deleting the pods",
    )
    wait_for(lambda: set(killing()) == uids, timeout_s=30, what="a Killing event per pod")
    time.sleep(1)  # an event recorded twice would be one with a count of 2 by now
    events = killing()
    assert {e["message"] for e in events.values()} == {"Stopping container"}
    assert {e["type"] for e in events.values()} == {"Normal"}
    assert {e.get("count", 1) for e in events.values()} == {1}
