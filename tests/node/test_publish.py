"""Publishing the node's GPUs on its Node (``gaia.node.publish``) and reading them back
(``gaia.kube.nodes``, the extender, the kubernetes provider); the GPUs are a FAKE NVML
(``tests/support/fake_nvml.py``) built from real ``nvidia-smi`` output, the Node a real one on
the test kube-apiserver where it says so."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

from gaia.controllers.apps import node_view as controller_node_view
from gaia.domain.resources import ResourceVector
from gaia.kube.errors import UnreadableObject
from gaia.kube.nodes import read_gpu_health, read_gpu_numa, read_node
from gaia.node.agent import AGENT_API_CALLS
from gaia.node.gpus import GpuReader, GpuSnapshot, open_gpus
from gaia.node.publish import (
    PUBLISHER_API_CALLS,
    NodePublisher,
    model_label_value,
    node_patch,
)
from gaia.providers.kubernetes.nodes import node_from_k8s
from gaia.scheduler.extender.decisions import node_view, parse_node
from gaia.scheduler.links import parse_nvidia_smi_topo
from gaia.scheduler.placement import GaiaScheduler
from gaia.scheduler.port import ClusterView, PlacementRequest
from tests.support.fake_nvml import FakeNvml
from tests.support.kube import ControlPlane, fake_node
from tests.support.paths import FIXTURES, REPO
from tests.support.waiting import eventually

DAEMONSET = REPO / "deploy" / "node-agent" / "daemonset.yaml"
# What the device plugin (gaia.node.deviceplugin) asks of the API: the pods bound to its node.


def fake_dgx_h100() -> FakeNvml:
    topology = parse_nvidia_smi_topo((FIXTURES / "topology" / "dgx_h100.txt").read_text())
    return FakeNvml.machine("dgx_h100", topology=topology)


@pytest.fixture
def fake() -> FakeNvml:
    return fake_dgx_h100()


@pytest.fixture
def reader(fake: FakeNvml) -> Iterator[GpuReader]:
    opened = open_gpus(nvml=fake, which=lambda name: None)
    assert opened is not None
    yield opened
    opened.close()


def bare_node(name: str = "gpu-0", *, gpus: int = 8) -> dict[str, Any]:
    return fake_node(name, gpus=gpus, gpu_memory_mib=81559)


def merged(doc: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with a JSON merge patch applied (RFC 7386), as the API server applies it."""
    out = copy.deepcopy(dict(doc))
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ------------------------------------------------------------------------------ node_patch


def test_a_fresh_node_gets_the_model_topology_health_and_numa(reader: GpuReader) -> None:
    patch = node_patch(bare_node(), reader.snapshot())
    assert patch is not None
    meta = patch["metadata"]
    assert meta["labels"] == {"gaia.io/gpu-model": "NVIDIA-H100-80GB-HBM3"}
    annotations = meta["annotations"]
    assert annotations["gaia.io/gpu-health"] == "{}"
    assert json.loads(annotations["gaia.io/gpu-numa"]) == {
        **{str(i): [0, "0-55,112-167"] for i in range(4)},
        **{str(i): [1, "56-111,168-223"] for i in range(4, 8)},
    }
    topology = json.loads(annotations["gaia.io/gpu-topology"])
    assert len(topology) == 8 and topology[0][1] == "NV18" and topology[7][7] == "X"
    assert annotations["gaia.io/gpu-memory-used"] == "{}"


def test_a_node_that_says_it_all_already_needs_no_patch(reader: GpuReader) -> None:
    snapshot = reader.snapshot()
    node = bare_node()
    patch = node_patch(node, snapshot)
    assert patch is not None
    node = merged(node, patch)
    assert node_patch(node, snapshot) is None
    assert node_patch(node, reader.snapshot()) is None  # a second look changes nothing either


def test_an_xid_changes_only_the_health_annotation(reader: GpuReader, fake: FakeNvml) -> None:
    node = merged(bare_node(), node_patch(bare_node(), reader.snapshot()) or {})
    fake.xid(3, 79)
    patch = node_patch(node, reader.snapshot())
    assert patch == {
        "metadata": {
            "annotations": {
                "gaia.io/gpu-health": json.dumps(
                    {
                        "3": [
                            "XID 79 (GPU has fallen off the bus)",
                            "NVML has lost the GPU (fallen off the bus?)",
                        ]
                    },
                    separators=(",", ":"),
                )
            }
        }
    }


def test_process_memory_is_rewritten_only_past_the_hysteresis(
    reader: GpuReader, fake: FakeNvml
) -> None:
    node = merged(bare_node(), node_patch(bare_node(), reader.snapshot()) or {})

    def publish() -> dict[str, Any] | None:
        nonlocal node
        patch = node_patch(node, reader.snapshot())
        if patch is not None:
            node = merged(node, patch)
        return patch

    fake.add_process(0, pid=4242, used_mib=30000)
    assert publish() == {"metadata": {"annotations": {"gaia.io/gpu-memory-used": '{"0":30000}'}}}
    fake.add_process(0, pid=4243, used_mib=900)  # 30900: within max(1 GiB, 5% of 81559 MiB)
    assert publish() is None
    fake.add_process(0, pid=4244, used_mib=5000)  # 35900: past it
    assert publish() == {"metadata": {"annotations": {"gaia.io/gpu-memory-used": '{"0":35900}'}}}
    fake.add_process(5, pid=77, used_mib=10)  # a card going busy is always news
    assert publish() == {
        "metadata": {"annotations": {"gaia.io/gpu-memory-used": '{"0":35900,"5":10}'}}
    }
    for pid in (4242, 4243, 4244):
        fake.remove_process(0, pid)
    fake.remove_process(5, 77)
    assert publish() == {"metadata": {"annotations": {"gaia.io/gpu-memory-used": "{}"}}}


def test_cards_of_different_models_leave_the_model_label_alone(reader: GpuReader) -> None:
    snapshot = reader.snapshot()
    cards = list(snapshot.cards)
    cards[7] = dataclasses.replace(cards[7], model="NVIDIA H200")
    mixed = GpuSnapshot(
        cards=tuple(cards),
        topology=snapshot.topology,
        health=snapshot.health,
        processes=snapshot.processes,
    )
    node = bare_node()
    node["metadata"]["labels"]["gaia.io/gpu-model"] = "set-by-hand"
    patch = node_patch(node, mixed)
    assert patch is not None and "labels" not in patch["metadata"]


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA-A100-SXM4-80GB"),
        ("NVIDIA H200", "NVIDIA-H200"),
        ("  Tesla V100-SXM2-16GB (rev. a1) ", "Tesla-V100-SXM2-16GB-rev.-a1"),
        ("X" * 80, "X" * 63),
    ],
)
def test_model_label_values_are_spelt_as_gpu_feature_discovery_spells_them(
    model: str, label: str
) -> None:
    assert model_label_value(model) == label


# -------------------------------------------------------------------- reading them back


def published_node(reader: GpuReader, fake: FakeNvml) -> dict[str, Any]:
    fake.xid(3, 79)
    return merged(bare_node(), node_patch(bare_node(), reader.snapshot()) or {})


def test_the_published_node_reads_back_as_unhealthy_cards_and_their_cores(
    reader: GpuReader, fake: FakeNvml
) -> None:
    gpus = read_node(published_node(reader, fake)).gpus
    assert gpus.unreadable == {}
    assert gpus.unhealthy == {3}
    assert gpus.health_reasons[3][0] == "XID 79 (GPU has fallen off the bus)"
    assert gpus.numa_node == {i: 0 if i < 4 else 1 for i in range(8)}
    assert gpus.cpus[5] == (*range(56, 112), *range(168, 224))
    assert gpus.model == "NVIDIA-H100-80GB-HBM3"
    assert len(gpus.links) == 8


def test_the_extender_places_nothing_on_an_unhealthy_card(
    reader: GpuReader, fake: FakeNvml
) -> None:
    node = parse_node(published_node(reader, fake))
    request = PlacementRequest(name="p", resources=ResourceVector(gpu=100, gpu_memory=1024))
    view = node_view(node, request)
    assert view.gpu_free[3] == 0
    assert [view.gpu_free[i] for i in (0, 1, 2, 4, 5, 6, 7)] == [100] * 7
    assert node_view(node, request, idle=True).gpu_free[3] == 0  # preempting frees nothing


def test_the_platform_sees_the_cores_of_each_card_and_its_health(
    reader: GpuReader, fake: FakeNvml
) -> None:
    node = node_from_k8s(published_node(reader, fake), [])
    assert [g.numa_node for g in node.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert node.gpus[0].cpu_ids == (*range(0, 56), *range(112, 168))
    assert "GPU 3 unhealthy: XID 79 (GPU has fallen off the bus)" in node.message
    assert [g.healthy for g in node.gpus] == [True, True, True, False, True, True, True, True]


def test_the_platform_places_nothing_on_an_unhealthy_card(
    reader: GpuReader, fake: FakeNvml
) -> None:
    view = controller_node_view(node_from_k8s(published_node(reader, fake), []))
    assert view.gpu_free[3] == 0 and view.gpu_memory_free[3] == 0
    assert all(view.gpu_free[i] == 100 for i in (0, 1, 2, 4, 5, 6, 7))
    # four cards of a NUMA node: only 0-1-2 are left on the first, so the four go to the second
    request = PlacementRequest(name="p", resources=ResourceVector(gpu=400))
    ready = dataclasses.replace(view, ready=True, schedulable=True)
    placement = GaiaScheduler().place(request, ClusterView([ready]))
    assert 3 not in placement.gpu_ids
    # "could it ever fit" still counts the card: it may be repaired
    assert (
        controller_node_view(node_from_k8s(published_node(reader, fake), []), empty=True).gpu_free[
            3
        ]
        == 100
    )


def test_cards_past_the_allocatable_count_are_ignored_not_refused() -> None:
    # the device plugin takes an unhealthy card out of the allocatable count
    assert read_gpu_health('{"7": ["XID 79"], "1": []}', cards=7) == {1: ("unhealthy",)}
    assert read_gpu_numa('{"7": [1, "8-15"], "0": [null, ""]}', cards=7) == {0: (None, ())}


@pytest.mark.parametrize(
    "raw",
    ["[]", "not json", '{"a": []}', '{"0": "XID 79"}', '{"0": [1]}', '{"-1": []}'],
)
def test_a_health_annotation_that_is_not_one_is_refused(raw: str) -> None:
    with pytest.raises(UnreadableObject, match=re.escape("gaia.io/gpu-health")):
        read_gpu_health(raw, cards=8)


@pytest.mark.parametrize(
    "raw",
    [
        '{"0": [0]}',
        '{"0": [-1, "0-3"]}',
        '{"0": [true, "0-3"]}',
        '{"0": [0, "3-1"]}',
        '{"0": [0, "x"]}',
    ],
)
def test_a_numa_annotation_that_is_not_one_is_refused(raw: str) -> None:
    with pytest.raises(UnreadableObject, match=re.escape("gaia.io/gpu-numa")):
        read_gpu_numa(raw, cards=8)


def test_an_unreadable_health_annotation_keeps_gpu_pods_off_the_node() -> None:
    node = bare_node()
    node["metadata"]["annotations"]["gaia.io/gpu-health"] = "[]"
    parsed = parse_node(node)
    assert parsed.problem is not None and "gaia.io/gpu-health" in parsed.problem


# ------------------------------------------------------------------------------- RBAC


def daemonset_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]


def test_the_daemonset_runs_the_agent_on_gpu_nodes_with_the_kubelet_paths() -> None:
    docs = {d["kind"]: d for d in daemonset_documents()}
    assert set(docs) == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
    }
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert docs["DaemonSet"]["metadata"]["namespace"] == "gaia-system"
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["command"] == ["gaia", "node-agent", "--node-name", "$(NODE_NAME)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["securityContext"]["privileged"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert {host[name]: path for name, path in mounts.items()} == {
        "/var/lib/kubelet/device-plugins": "/var/lib/kubelet/device-plugins",
        "/dev": "/dev",
        "/run/gaia": "/run/gaia",
        "/var/lib/gaia/node-agent": "/var/lib/gaia/node-agent",
        "/run/gaia/vgpu/shm": "/dev/shm",
    }
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert {t["matchExpressions"][0]["key"] for t in terms["nodeSelectorTerms"]} == {
        "nvidia.com/gpu.present",
        "gaia.io/gpu-node",
    }


def test_the_cluster_role_allows_exactly_the_calls_the_agent_makes() -> None:
    role = next(d for d in daemonset_documents() if d["kind"] == "ClusterRole")
    allowed = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert allowed == PUBLISHER_API_CALLS | AGENT_API_CALLS


# --------------------------------------------------------- against the real API server


@pytest.fixture
def kube(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    client = control_plane.http_client()
    yield client
    client.close()


def create_node(kube: httpx.Client, name: str) -> None:
    r = kube.post("/api/v1/nodes", json=bare_node(name))
    assert r.status_code == 201, r.text


def annotations_of(kube: httpx.Client, name: str) -> dict[str, str]:
    r = kube.get(f"/api/v1/nodes/{name}")
    assert r.status_code == 200, r.text
    out: dict[str, str] = r.json()["metadata"].get("annotations", {})
    return out


def test_the_publisher_writes_the_node_once_and_again_on_change(
    control_plane: ControlPlane, kube: httpx.Client, fake: FakeNvml, reader: GpuReader
) -> None:
    create_node(kube, "agent-gpu-0")

    async def scenario() -> list[bool]:
        client = AsyncClient(KubeConfig.from_dict(control_plane.kubeconfig()), trust_env=False)
        publisher = NodePublisher(client=client, node_name="agent-gpu-0", reader=reader)
        try:
            first = await publisher.publish_once()
            again = await publisher.publish_once()
            fake.xid(3, 79)
            changed = await publisher.publish_once()
            return [first, again, changed]
        finally:
            await client.close()

    try:
        assert asyncio.run(scenario()) == [True, False, True]
        node = kube.get("/api/v1/nodes/agent-gpu-0").json()
        assert node["metadata"]["labels"]["gaia.io/gpu-model"] == "NVIDIA-H100-80GB-HBM3"
        gpus = read_node(node).gpus
        assert gpus.unhealthy == {3}
        assert gpus.cpus[0] == (*range(0, 56), *range(112, 168))
        assert gpus.unreadable == {}
    finally:
        kube.delete("/api/v1/nodes/agent-gpu-0")


def test_the_publisher_loop_republishes_until_stopped(
    control_plane: ControlPlane, kube: httpx.Client, fake: FakeNvml, reader: GpuReader
) -> None:
    create_node(kube, "agent-gpu-1")

    async def scenario() -> None:
        client = AsyncClient(KubeConfig.from_dict(control_plane.kubeconfig()), trust_env=False)
        publisher = NodePublisher(client=client, node_name="agent-gpu-1", reader=reader)
        stop = asyncio.Event()
        task = asyncio.create_task(publisher.run(stop, interval_s=0.1))
        try:
            await eventually_async(
                lambda: "gaia.io/gpu-health" in annotations_of(kube, "agent-gpu-1")
            )
            fake.ecc(6, uncorrected=2)
            await eventually_async(
                lambda: '"6"' in annotations_of(kube, "agent-gpu-1")["gaia.io/gpu-health"]
            )
            fake.add_process(2, pid=31337, used_mib=20000)
            await eventually_async(
                lambda: (
                    annotations_of(kube, "agent-gpu-1")["gaia.io/gpu-memory-used"] == '{"2":20000}'
                )
            )
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await client.close()

    try:
        asyncio.run(scenario())
        health = json.loads(annotations_of(kube, "agent-gpu-1")["gaia.io/gpu-health"])
        assert health == {
            "6": [
                "XID 48 (double-bit ECC error)",
                "2 uncorrected ECC error(s) since the driver loaded",
            ]
        }
    finally:
        kube.delete("/api/v1/nodes/agent-gpu-1")


async def eventually_async(condition: Any, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(condition):
        if loop.time() > deadline:
            raise AssertionError("the Node did not change in time")
        await asyncio.sleep(0.1)


def test_the_agents_service_account_may_do_what_it_needs_and_no_more(
    control_plane: ControlPlane, kube: httpx.Client, tmp_path: Path
) -> None:
    """The RBAC of the DaemonSet, applied to the real API server; the service account's calls
    are made by impersonating it from the admin client."""
    for doc in daemonset_documents():
        if doc["kind"] == "DaemonSet":
            continue
        path = {
            "Namespace": "/api/v1/namespaces",
            "ServiceAccount": "/api/v1/namespaces/gaia-system/serviceaccounts",
            "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        }[doc["kind"]]
        r = kube.post(path, json=doc)
        assert r.status_code in (201, 409), r.text
    create_node(kube, "agent-gpu-2")
    agent = {"Impersonate-User": "system:serviceaccount:gaia-system:gaia-node-agent"}
    merge = {**agent, "Content-Type": "application/merge-patch+json"}
    body = json.dumps({"metadata": {"annotations": {"gaia.io/gpu-health": "{}"}}})
    try:

        def allowed() -> bool:
            return kube.get("/api/v1/nodes/agent-gpu-2", headers=agent).status_code == 200

        eventually(allowed, timeout_s=20, what="the agent's RBAC taking effect")
        assert (
            kube.patch("/api/v1/nodes/agent-gpu-2", content=body, headers=merge).status_code == 200
        )
        assert kube.get("/api/v1/pods", headers=agent).status_code == 200
        assert kube.delete("/api/v1/nodes/agent-gpu-2", headers=agent).status_code == 403
        assert kube.get("/api/v1/nodes", headers=agent).status_code == 403  # get, not list
        assert kube.get("/api/v1/namespaces/gaia-system/secrets", headers=agent).status_code == 403
        memory = json.dumps({"status": {"capacity": {"gaia.io/gpu-memory": "1024"}}})
        assert (
            kube.patch(
                "/api/v1/nodes/agent-gpu-2/status", content=memory, headers=merge
            ).status_code
            == 200
        )
        assert (
            kube.post("/api/v1/namespaces/default/pods", json={}, headers=agent).status_code == 403
        )
    finally:
        kube.delete("/api/v1/nodes/agent-gpu-2")
