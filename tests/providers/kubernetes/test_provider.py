"""The kubernetes provider on a real kube-apiserver with KWOK nodes (tests/support/kube.py).

What KWOK cannot do (pull images, run processes, serve logs, exec) is not tested here; the
contract suite's sim-only and kubelet-dependent tests cover those on the sim.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from gaia.domain.errors import Conflict, InvalidRequest, NotFound, NotManaged
from gaia.domain.resources import ResourceVector
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import (
    ConfigData,
    ConfigRef,
    InstancePhase,
    InstanceSpec,
    PortSpec,
    PullSecret,
    ServiceSpec,
)
from tests.support.kube import ControlPlane, fake_node
from tests.support.waiting import eventually

PIX4 = [
    ["X", "PIX", "SYS", "SYS"],
    ["PIX", "X", "SYS", "SYS"],
    ["SYS", "SYS", "X", "PIX"],
    ["SYS", "SYS", "PIX", "X"],
]
_namespaces = itertools.count()


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    client = control_plane.http_client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def nodes(control_plane: ControlPlane, api: httpx.Client) -> list[str]:
    names = ["prov-gpu-0", "prov-gpu-1"]
    for name in names:
        body = fake_node(
            name, gpus=4, gpu_memory_mib=16384, gpu_model="Tesla-T4", gpu_topology=PIX4
        )
        r = api.post("/api/v1/nodes", json=body)
        assert r.status_code in (201, 409), r.text
    # EndpointSlices for services come from kube-controller-manager
    control_plane.ensure_controller_manager()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = api.get("/api/v1/nodes").json()["items"]
        ready = {
            n["metadata"]["name"]
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n["status"].get("conditions", [])
            )
        }
        if set(names) <= ready:
            return names
        time.sleep(0.2)
    raise AssertionError("KWOK did not make the nodes Ready")


@pytest.fixture
def cluster(control_plane: ControlPlane, nodes: list[str]) -> Iterator[KubernetesCluster]:
    provider = KubernetesCluster(name="kube-test", kubeconfig=control_plane.kubeconfig_text())
    yield provider
    asyncio.run(provider.close())


@pytest.fixture
def namespace() -> str:
    return f"prov-{next(_namespaces)}-{int(time.time()) % 100000}"


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def settle(check: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    async def loop() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"not settled within {timeout_s:g} s")

    run(loop())


def spec(namespace: str, node: str, instance_id: int = 0, **kw: Any) -> InstanceSpec:
    base: dict[str, Any] = {
        "namespace": namespace,
        "app": "web",
        "instance_id": instance_id,
        "version": "v1",
        "image": "registry.local/web:v1",
        "node": node,
        "resources": ResourceVector(cpu=500, memory=512),
    }
    base.update(kw)
    return InstanceSpec(**base)


def test_nodes_carry_gpus_and_topology(cluster: KubernetesCluster, nodes: list[str]) -> None:
    listed = {n.name: n for n in run(cluster.list_nodes())}
    node = listed["prov-gpu-0"]
    assert node.ready and node.schedulable
    assert len(node.gpus) == 4 and node.capacity.gpu == 400
    # the port spells the cross-socket link SOC, as the sim does
    assert [list(r) for r in node.gpu_links] == [
        [label.replace("SYS", "SOC") for label in row] for row in PIX4
    ]
    assert node.gpus[0].model == "Tesla-T4"


def test_an_instance_is_a_bound_pod_that_runs(
    cluster: KubernetesCluster, api: httpx.Client, namespace: str
) -> None:
    resources = ResourceVector(cpu=500, memory=512, gpu=200)
    created = run(
        cluster.create_instance(
            spec(namespace, "prov-gpu-0", resources=resources, gpu_ids=(0, 1), cpu_ids=(0, 1))
        )
    )
    assert (created.name, created.node) == ("web-0", "prov-gpu-0")
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/web-0").json()
    assert pod["spec"]["schedulerName"] == "gaia-scheduler"
    assert pod["spec"]["nodeName"] == "prov-gpu-0"
    assert pod["metadata"]["annotations"]["gaia.io/gpu-ids"] == "0,1"
    assert pod["metadata"]["labels"]["gaia.io/app"] == "web"

    async def running() -> bool:
        found = await cluster.list_instances(namespace=namespace, app="web")
        return bool(found) and found[0].phase == InstancePhase.RUNNING and found[0].ready

    settle(running)
    (inst,) = run(cluster.list_instances(namespace=namespace, app="web"))
    assert inst.pod_ip and inst.gpu_ids == (0, 1) and inst.resources == resources
    node = next(n for n in run(cluster.list_nodes()) if n.name == "prov-gpu-0")
    assert node.gpu_used.get(0) == 100 and node.gpu_used.get(1) == 100
    with pytest.raises(Conflict):
        run(cluster.create_instance(spec(namespace, "prov-gpu-0")))
    with pytest.raises(InvalidRequest):
        run(cluster.create_instance(spec(namespace, "no-such-node", instance_id=1)))


def test_an_in_place_upgrade_patches_only_the_image(
    cluster: KubernetesCluster, api: httpx.Client, namespace: str
) -> None:
    run(
        cluster.create_instance(
            spec(
                namespace,
                "prov-gpu-1",
                gpu_ids=(2,),
                resources=ResourceVector(cpu=500, memory=512, gpu=100),
            )
        )
    )
    before = api.get(f"/api/v1/namespaces/{namespace}/pods/web-0").json()
    replaced = run(
        cluster.replace_image(
            namespace=namespace, name="web-0", image="registry.local/web:v2", version="v2"
        )
    )
    assert (replaced.version, replaced.image) == ("v2", "registry.local/web:v2")
    after = api.get(f"/api/v1/namespaces/{namespace}/pods/web-0").json()
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["nodeName"] == before["spec"]["nodeName"]
    assert after["spec"]["containers"][0]["image"] == "registry.local/web:v2"
    assert after["metadata"]["annotations"]["gaia.io/gpu-ids"] == "2"
    assert (
        after["metadata"]["annotations"]["gaia.io/shape-hash"]
        == before["metadata"]["annotations"]["gaia.io/shape-hash"]
    )
    assert (
        after["metadata"]["annotations"]["gaia.io/template-hash"]
        != before["metadata"]["annotations"]["gaia.io/template-hash"]
    )
    assert replaced.shape == before["metadata"]["annotations"]["gaia.io/shape-hash"]


def test_a_listing_makes_again_only_what_changed_and_sees_every_change(
    cluster: KubernetesCluster, api: httpx.Client, namespace: str
) -> None:
    """A controller pass lists every instance and node; one whose objects did not change is the
    value made last time (``informer.Derived``), and a change by anyone is seen at once."""
    for iid in (0, 1):
        run(cluster.create_instance(spec(namespace, "prov-gpu-1", instance_id=iid)))

    async def both_running() -> bool:
        found = await cluster.list_instances(namespace=namespace, app="web")
        return len(found) == 2 and all(i.phase == InstancePhase.RUNNING for i in found)

    settle(both_running)

    def instances() -> dict[str, Any]:
        return {i.name: i for i in run(cluster.list_instances(namespace=namespace, app="web"))}

    def node() -> Any:
        return next(n for n in run(cluster.list_nodes()) if n.name == "prov-gpu-1")

    first, first_node = instances(), node()
    assert instances()["web-0"] is first["web-0"] and instances()["web-1"] is first["web-1"]
    assert node() is first_node

    # another client relabels web-1: the watch brings it, and only web-1 is made again
    r = api.patch(
        f"/api/v1/namespaces/{namespace}/pods/web-1",
        json={"metadata": {"labels": {"gaia.io/version": "v9"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text

    async def relabelled() -> bool:
        found = await cluster.list_instances(namespace=namespace, app="web")
        return {i.name: i.version for i in found}.get("web-1") == "v9"

    settle(relabelled)
    assert instances()["web-0"] is first["web-0"]
    # a pod of the node changed, so the node is made again, from what holds now
    assert node() is not first_node and node().allocated == first_node.allocated

    run(cluster.delete_instance(namespace=namespace, name="web-0"))

    async def deleted() -> bool:
        found = await cluster.list_instances(namespace=namespace, app="web")
        return [i.name for i in found] == ["web-1"]

    settle(deleted)
    gone = spec(namespace, "prov-gpu-1").resources
    assert node().allocated == first_node.allocated.minus(gone)


def test_a_pods_change_is_heard_with_its_app(cluster: KubernetesCluster, namespace: str) -> None:
    """The app controller looks at the one app whose instance changed (its work queue): the
    pod watch names the pod's namespace and app."""
    heard: list[Any] = []
    cluster.watch_changes(heard.append)
    run(cluster.create_instance(spec(namespace, "prov-gpu-0")))
    eventually(lambda: (namespace, "web") in heard, "the new pod is heard", timeout_s=10)
    before = len(heard)
    run(cluster.delete_instance(namespace=namespace, name="web-0"))
    eventually(lambda: (namespace, "web") in heard[before:], "the deletion is heard", timeout_s=10)


def test_delete_is_idempotent(cluster: KubernetesCluster, namespace: str) -> None:
    run(cluster.create_instance(spec(namespace, "prov-gpu-0")))
    run(cluster.delete_instance(namespace=namespace, name="web-0"))
    run(cluster.delete_instance(namespace=namespace, name="web-0"))
    run(cluster.delete_instance(namespace=namespace, name="never"))

    async def gone() -> bool:
        return not await cluster.list_instances(namespace=namespace)

    settle(gone)


def test_services_select_ready_pods(cluster: KubernetesCluster, namespace: str) -> None:
    service = ServiceSpec(
        namespace=namespace,
        name="web",
        app="web",
        ports=(PortSpec(80, "http"),),
        domain="web.example.test",
    )
    applied = run(cluster.apply_service(service))
    assert applied.cluster_ip and applied.domain == "web.example.test"
    run(cluster.create_instance(spec(namespace, "prov-gpu-0", ports=(PortSpec(80, "http"),))))

    async def endpoint() -> bool:
        got = await cluster.get_service(namespace=namespace, name="web")
        return [e.instance for e in got.ready_endpoints] == ["web-0"]

    settle(endpoint)
    assert run(cluster.apply_service(service)).cluster_ip == applied.cluster_ip
    run(cluster.delete_service(namespace=namespace, name="web"))
    run(cluster.delete_service(namespace=namespace, name="web"))
    with pytest.raises(NotFound):
        run(cluster.get_service(namespace=namespace, name="web"))


def test_configs_and_secrets_round_trip(
    cluster: KubernetesCluster, api: httpx.Client, namespace: str
) -> None:
    run(cluster.apply_config(ConfigData(namespace, "app", secret=False, data={"mode": "fast"})))
    run(cluster.apply_config(ConfigData(namespace, "app", secret=True, data={"token": "s3cr3t"})))
    listed = run(cluster.list_configs(namespace=namespace))
    assert {(c.name, c.secret): c.data for c in listed} == {
        ("app", False): {"mode": "fast"},
        ("app", True): {"token": "s3cr3t"},
    }
    # mounted by reference: the pod names the secret, it does not copy it
    refs = (ConfigRef("app"), ConfigRef("app", secret=True, mount_path="/etc/app"))
    run(cluster.create_instance(spec(namespace, "prov-gpu-1", configs=refs)))
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/web-0").json()
    volumes = {v["name"]: v for v in pod["spec"]["volumes"] if "secret" in v}
    assert [v["secret"]["secretName"] for v in volumes.values()] == ["app"]
    assert "s3cr3t" not in str(pod)
    run(cluster.delete_config(namespace=namespace, name="app", secret=True))
    run(cluster.delete_config(namespace=namespace, name="app", secret=True))
    listed = run(cluster.list_configs(namespace=namespace))
    assert [(c.name, c.secret) for c in listed] == [("app", False)]


def test_the_registry_pull_secret_is_injected_and_never_listed(
    cluster: KubernetesCluster, api: httpx.Client, namespace: str
) -> None:
    pull = PullSecret("registry.gaia.example:5000", "pull+shop", "derived-password")
    assert "derived-password" not in repr(pull) and "derived-password" not in repr(
        spec(namespace, "prov-gpu-1", pull_secret=pull)
    )
    run(cluster.create_instance(spec(namespace, "prov-gpu-1", pull_secret=pull)))
    pod = api.get(f"/api/v1/namespaces/{namespace}/pods/web-0").json()
    assert pod["spec"]["imagePullSecrets"] == [{"name": "gaia-registry-pull"}]
    secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/gaia-registry-pull").json()
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = config["auths"]["registry.gaia.example:5000"]
    assert (entry["username"], entry["password"]) == ("pull+shop", "derived-password")
    assert base64.b64decode(entry["auth"]) == b"pull+shop:derived-password"
    # tenants see configs through the configs API: the pull secret is not one of them, and a
    # config of the same name cannot replace it
    assert run(cluster.list_configs(namespace=namespace)) == []
    with pytest.raises(NotManaged):
        run(
            cluster.apply_config(
                ConfigData(namespace, "gaia-registry-pull", secret=True, data={"x": "y"})
            )
        )
    # new credentials (a rotated secret key) replace the secret at the next instance
    rotated = PullSecret("registry.gaia.example:5000", "pull+shop", "rotated")
    run(cluster.create_instance(spec(namespace, "prov-gpu-1", instance_id=1, pull_secret=rotated)))
    secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/gaia-registry-pull").json()
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config["auths"]["registry.gaia.example:5000"]["password"] == "rotated"


def test_cordon_and_uncordon(cluster: KubernetesCluster) -> None:
    assert not run(cluster.set_schedulable("prov-gpu-1", False)).schedulable
    assert run(cluster.set_schedulable("prov-gpu-1", True)).schedulable


def test_a_node_change_placement_reads_is_heard_and_a_heartbeat_is_not(
    cluster: KubernetesCluster, api: httpx.Client
) -> None:
    """The app controller's work queue waits for an app that cannot be placed; a node opened
    (or added, or Ready again) must wake it, a node's heartbeat must not (1,000 nodes would
    keep it awake)."""
    heard: list[Any] = []
    cluster.watch_changes(heard.append)
    run(cluster.list_nodes())  # the caches start: their first listing is heard, node by node

    def quiet_for(seconds: float) -> int:
        before = len(heard)
        time.sleep(seconds)
        return len(heard) - before

    eventually(lambda: quiet_for(0.5) == 0, "the first listing is heard and done", timeout_s=10)
    node = api.get("/api/v1/nodes/prov-gpu-0").json()
    conditions = node["status"]["conditions"]
    for c in conditions:
        c["lastHeartbeatTime"] = "2026-12-06T12:00:00Z"  # what a heartbeat changes
    r = api.patch(
        "/api/v1/nodes/prov-gpu-0/status",
        json={"status": {"conditions": conditions}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert quiet_for(1.0) == 0
    try:
        before = len(heard)
        run(cluster.set_schedulable("prov-gpu-0", False))
        eventually(lambda: len(heard) > before, "a cordon is heard", timeout_s=10)
        before = len(heard)
        run(cluster.set_schedulable("prov-gpu-0", True))
        eventually(lambda: len(heard) > before, "an uncordon is heard", timeout_s=10)
        # a node is no one app's: the controller looks at every app (any may now fit)
        assert set(heard[before:]) == {None}
    finally:
        run(cluster.set_schedulable("prov-gpu-0", True))


def test_a_dead_cluster_is_unreachable_and_closes(control_plane: ControlPlane) -> None:
    text = control_plane.kubeconfig_text().replace(
        control_plane.server,
        "https://127.0.0.1:9",  # nothing listens on the discard port
    )
    dead = KubernetesCluster(name="dead", kubeconfig=text)
    health = run(dead.check_health(timeout=2))
    assert health.state.value == "Unreachable"
    run(dead.close())


def test_a_node_refuses_what_it_cannot_hold(cluster: KubernetesCluster, namespace: str) -> None:
    node = next(n for n in run(cluster.list_nodes()) if n.name == "prov-gpu-1")
    with pytest.raises(InvalidRequest):
        run(
            cluster.create_instance(
                spec(
                    namespace,
                    "prov-gpu-1",
                    resources=ResourceVector(cpu=node.free.cpu + 1000, memory=512),
                )
            )
        )
    whole = ResourceVector(cpu=500, memory=512, gpu=100)
    run(cluster.create_instance(spec(namespace, "prov-gpu-1", resources=whole, gpu_ids=(3,))))
    with pytest.raises(InvalidRequest):  # the card is taken
        run(
            cluster.create_instance(
                spec(namespace, "prov-gpu-1", instance_id=1, resources=whole, gpu_ids=(3,))
            )
        )
    with pytest.raises(InvalidRequest):  # a card the node does not have
        run(
            cluster.create_instance(
                spec(namespace, "prov-gpu-1", instance_id=1, resources=whole, gpu_ids=(9,))
            )
        )
    run(cluster.set_schedulable("prov-gpu-1", False))
    try:
        with pytest.raises(InvalidRequest):
            run(cluster.create_instance(spec(namespace, "prov-gpu-1", instance_id=2)))
    finally:
        run(cluster.set_schedulable("prov-gpu-1", True))


def test_a_batch_of_instances_is_one_pod_write_each_and_one_scheduled_event(
    cluster: KubernetesCluster, api: httpx.Client, namespace: str
) -> None:
    """Each instance is created bound (no binding after it); the platform hears of each
    placement (``events``), the cluster gets one ``Scheduled`` Event for the app's batch."""

    async def create_three() -> None:
        await asyncio.gather(
            *(
                cluster.create_instance(spec(namespace, "prov-gpu-0", instance_id=i))
                for i in range(3)
            )
        )

    run(create_three())
    for i in range(3):
        pod = api.get(f"/api/v1/namespaces/{namespace}/pods/web-{i}").json()
        assert pod["spec"]["nodeName"] == "prov-gpu-0"
    heard = [e for e in run(cluster.events(limit=10_000)) if e.namespace == namespace]
    assert sorted((e.object_kind, e.object_name, e.reason) for e in heard) == [
        ("Instance", f"web-{i}", "Scheduled") for i in range(3)
    ]
    assert all(e.message.endswith("to prov-gpu-0") for e in heard)

    def batch_events() -> list[dict[str, Any]]:
        items = api.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events").json()["items"]
        return [e for e in items if e["reason"] == "Scheduled"]

    eventually(lambda: bool(batch_events()), "the batch Scheduled event", timeout_s=30)
    (batch,) = batch_events()
    assert batch["regarding"]["kind"] == "App" and batch["regarding"]["name"] == "web"
    assert batch["note"].startswith("Successfully assigned 3 pod(s) of app web to 1 node(s): ")
    assert all(f"web-{i} to prov-gpu-0" in batch["note"] for i in range(3))
    # the batch Event comes back through the watch but is not heard twice
    time.sleep(1)
    again = [e for e in run(cluster.events(limit=10_000)) if e.namespace == namespace]
    assert len(again) == 3
