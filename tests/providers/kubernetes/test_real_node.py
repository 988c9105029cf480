"""The real test node (``tests/support/node.py``): a kubelet running real containers through
containerd and runc on a control plane of this module's own, pulling busybox images that the
tests built and pushed to a local registry. Its GPUs are FAKE: extended resources and a topology
annotation patched onto the node; there is no GPU here.

The pods are plain manifests with ``nodeName`` set (no scheduler runs), so no ``Scheduled``
event is expected: every event checked here comes from the kubelet.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import missing_component, start_real_bed
from tests.support.kube import ControlPlane, ControlPlaneUnavailable
from tests.support.node import FAKE_GPU_LINKS, RealNode, mounts_under, start_real_node

NAMESPACE = "real-node"
GREETING = "hello from a mounted ConfigMap"

pytestmark = pytest.mark.slow


@dataclass
class Bed:
    plane: ControlPlane
    node: RealNode
    api: httpx.Client


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    plane, node = start_real_bed(tmp_path_factory, "real-node")
    api = plane.http_client()
    created = api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
    assert created.status_code == 201, created.text
    config = {"metadata": {"name": "greeting"}, "data": {"message": GREETING}}
    assert api.post(f"/api/v1/namespaces/{NAMESPACE}/configmaps", json=config).status_code == 201
    yield Bed(plane, node, api)
    api.close()
    node.stop()
    plane.stop()


def wait_for(probe: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s:g} s")


def pod_manifest(bed: Bed, name: str, image: str, **resources: str) -> dict[str, Any]:
    amounts = {"cpu": "100m", "memory": "64Mi", **resources}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeName": bed.node.name,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 1,
                    },
                    "resources": {"requests": amounts, "limits": amounts},
                    "volumeMounts": [{"name": "greeting", "mountPath": "/etc/greeting"}],
                }
            ],
            "volumes": [{"name": "greeting", "configMap": {"name": "greeting"}}],
        },
    }


def pod(bed: Bed, name: str) -> dict[str, Any] | None:
    got = bed.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    return got.json() if got.status_code == 200 else None


def is_ready(found: dict[str, Any] | None) -> bool:
    conditions = (found or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def run_pod(bed: Bed, name: str, image: str, **resources: str) -> dict[str, Any]:
    manifest = pod_manifest(bed, name, image, **resources)
    created = bed.api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=manifest)
    assert created.status_code == 201, created.text
    ready: dict[str, Any] = wait_for(
        lambda: (found := pod(bed, name)) and is_ready(found) and found, f"pod {name} Ready"
    )
    return ready


def delete_pod(bed: Bed, name: str) -> None:
    bed.api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    wait_for(lambda: pod(bed, name) is None, f"pod {name} gone")


def kubectl(bed: Bed, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("kubectl") is None:
        missing_component("kubectl", "run scripts/test.sh (apt-get install kubernetes-client)")
    return bed.plane.kubectl(*args)


@pytest.fixture(scope="module")
def web(bed: Bed) -> dict[str, Any]:
    """One pod of the web image under a tag never pulled before, holding one FAKE GPU."""
    image, _ = bed.node.fresh_images("real-node")
    return run_pod(bed, "web-0", image, **{"nvidia.com/gpu": "1"})


def test_the_node_registers_ready_with_fake_gpus_the_kubelet_keeps(bed: Bed) -> None:
    def heartbeat() -> str:
        got = bed.api.get(f"/api/v1/nodes/{bed.node.name}").json()
        ready = next(c for c in got["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        return str(ready["lastHeartbeatTime"])

    first = heartbeat()
    # a status report of the kubelet's own after the patch must not drop the extended resources
    wait_for(lambda: heartbeat() != first, "a kubelet status report", timeout_s=30)
    node = bed.api.get(f"/api/v1/nodes/{bed.node.name}").json()
    for field in ("capacity", "allocatable"):
        assert node["status"][field]["nvidia.com/gpu"] == "4"
        assert node["status"][field]["gaia.io/gpu-memory"] == str(4 * bed.node.gpus.memory_mib)
    assert node["metadata"]["labels"]["gaia.io/gpu-model"] == bed.node.gpus.model
    assert node["metadata"]["labels"]["gaia.io/fake-gpus"] == "true"
    topology = json.loads(node["metadata"]["annotations"]["gaia.io/gpu-topology"])
    assert topology == [list(row) for row in FAKE_GPU_LINKS]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == bed.node.ip
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.")


def test_a_pod_pulls_from_the_local_registry_and_runs(bed: Bed, web: dict[str, Any]) -> None:
    assert web["status"]["phase"] == "Running"
    assert ipaddress.ip_address(web["status"]["podIP"]) in bed.node.slot.subnet

    def reasons() -> list[str]:
        events = bed.api.get(
            f"/api/v1/namespaces/{NAMESPACE}/events",
            params={"fieldSelector": "involvedObject.name=web-0"},
        ).json()["items"]
        assert all(e["source"].get("component") == "kubelet" for e in events)
        # timestamps have whole seconds; event names end in the hex of the creation time
        order = sorted(events, key=lambda e: (e["firstTimestamp"] or "", e["metadata"]["name"]))
        return [e["reason"] for e in order]

    wanted = ["Pulling", "Pulled", "Created", "Started"]
    seen = wait_for(lambda: (r := reasons()) and set(wanted) <= set(r) and r, "kubelet events")
    assert [r for r in seen if r in wanted] == wanted


def test_pod_logs_come_from_the_container(bed: Bed, web: dict[str, Any]) -> None:
    image = web["spec"]["containers"][0]["image"]
    got = bed.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/web-0/log")
    assert got.status_code == 200, got.text
    assert got.text.splitlines()[0] == "web v1 starting", (image, got.text)
    logs = kubectl(bed, "logs", "-n", NAMESPACE, "web-0")
    assert logs.stdout.startswith("web v1 starting\n"), logs.stderr


def test_exec_runs_in_the_container_with_the_mounted_config(bed: Bed, web: dict[str, Any]) -> None:
    hostname = kubectl(bed, "exec", "-n", NAMESPACE, "web-0", "--", "hostname")
    assert (hostname.returncode, hostname.stdout) == (0, "web-0\n"), hostname.stderr
    cat = kubectl(bed, "exec", "-n", NAMESPACE, "web-0", "--", "cat", "/etc/greeting/message")
    assert (cat.returncode, cat.stdout) == (0, GREETING), cat.stderr


def test_the_pod_serves_http_on_its_own_ip(web: dict[str, Any]) -> None:
    got = httpx.get(f"http://{web['status']['podIP']}:8080/", timeout=5)
    assert (got.status_code, got.text) == (200, "web v1\n")


def test_node_proxy_serves_resource_metrics_of_the_pod(bed: Bed, web: dict[str, Any]) -> None:
    labels = f'container="main",namespace="{NAMESPACE}",pod="web-0"'

    def metrics() -> str:
        got = bed.api.get(f"/api/v1/nodes/{bed.node.name}/proxy/metrics/resource")
        assert got.status_code == 200, got.text
        return got.text

    text = wait_for(
        lambda: (t := metrics()) and f"container_memory_working_set_bytes{{{labels}}}" in t and t,
        "resource metrics of the pod",
    )
    assert f"container_cpu_usage_seconds_total{{{labels}}}" in text


def test_a_pod_recreated_under_its_name_keeps_its_ip(bed: Bed) -> None:
    image = bed.node.images.web_v2
    first = run_pod(bed, "keep-0", image)["status"]["podIP"]
    neighbour = run_pod(bed, "keep-1", image)["status"]["podIP"]
    delete_pod(bed, "keep-0")
    newcomer = run_pod(bed, "keep-2", image)["status"]["podIP"]
    assert newcomer not in (first, neighbour), "a deleted pod's address stays reserved"
    again = run_pod(bed, "keep-0", image)["status"]["podIP"]
    assert again == first
    got = httpx.get(f"http://{again}:8080/", timeout=5)
    assert got.text == "web v2\n"


def test_a_second_node_on_a_second_control_plane_runs_beside_and_leaves_no_trace(
    bed: Bed, web: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What the contract suite does: a dedicated control plane (with kube-controller-manager,
    which namespace deletion needs) and a node of its own, while this module's node runs."""
    plane = ControlPlane(bin_dir=bed.plane.bin_dir, work=tmp_path_factory.mktemp("second-plane"))
    work = tmp_path_factory.mktemp("second-node")
    try:
        plane.start()
        plane.ensure_controller_manager()
        node = start_real_node(plane, work, name="gaia-node-b")
    except ControlPlaneUnavailable:
        plane.stop()
        raise
    try:
        assert node.slot.index != bed.node.slot.index
        assert not node.slot.subnet.overlaps(bed.node.slot.subnet)
        with plane.http_client() as api:
            assert (
                api.post("/api/v1/namespaces", json={"metadata": {"name": "b"}}).status_code == 201
            )
            manifest = pod_manifest(bed, "web-b", node.fresh_images("second")[1])
            manifest["metadata"]["namespace"] = "b"
            manifest["spec"]["nodeName"] = node.name
            del manifest["spec"]["volumes"], manifest["spec"]["containers"][0]["volumeMounts"]
            assert api.post("/api/v1/namespaces/b/pods", json=manifest).status_code == 201
            ready = wait_for(
                lambda: (
                    (got := api.get("/api/v1/namespaces/b/pods/web-b").json())
                    and is_ready(got)
                    and got
                ),
                "the second node's pod Ready",
            )
            assert ipaddress.ip_address(ready["status"]["podIP"]) in node.slot.subnet
            got = httpx.get(f"http://{ready['status']['podIP']}:8080/", timeout=5)
            assert got.text == "web v2\n"
            api.delete("/api/v1/namespaces/b")
            wait_for(
                lambda: api.get("/api/v1/namespaces/b").status_code == 404,
                "namespace b deleted, its pod terminated by the kubelet",
            )
    finally:
        node.stop()
        plane.stop()
    assert not (
        node.cgroups.tracker.exists() or Path(f"/sys/class/net/{node.slot.bridge}").exists()
    )
    assert mounts_under(work) == []
    assert is_ready(bed.api.get(f"/api/v1/nodes/{bed.node.name}").json())
    assert httpx.get(f"http://{web['status']['podIP']}:8080/", timeout=5).status_code == 200
