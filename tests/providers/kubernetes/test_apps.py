"""Apps end to end on a real control plane: the platform's API, its app controller, the kubernetes
provider, kube-apiserver and KWOK nodes. Wall time here, not simulated: each step runs one
controller pass and waits a little for KWOK and the watches."""

from __future__ import annotations

import asyncio
import collections
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gaia.controllers.apps import AppController
from gaia.platform import Platform
from tests.conftest import World
from tests.support.apps_harness import BIZ, template
from tests.support.kube import ControlPlane, fake_node

# one database is enough here: the store is covered on both elsewhere
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

NODES = [f"apps-{i}" for i in range(4)]
KUBE_QUOTA = {
    "cpu": 40,
    "memory": 65536,
    "local_disk": 100,
    "cloud_disk": 0,
    "shared_disk": 0,
    "bandwidth": 1000,
    "gpu": 0,
    "gpu_memory": 0,
}


@pytest.fixture(scope="module")
def kube_api(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    control_plane.ensure_controller_manager()  # ResourceQuota usage, for quota admission
    client = control_plane.http_client()
    for name in NODES:
        r = client.post("/api/v1/nodes", json=fake_node(name, cpu="16", memory="64Gi"))
        assert r.status_code in (201, 409), r.text
    yield client
    client.close()


class KubeApps:
    def __init__(self, platform: Platform, world: World, api: httpx.Client) -> None:
        self.platform = platform
        self.world = world
        self.api = api
        self.controller: AppController = platform.app_controller()

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.world.client.request(method, path, json=body, headers=self.world.admin)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def instances(self, app: str) -> dict[int, dict[str, Any]]:
        page = self.call("GET", f"{BIZ}/apps/{app}/instances?limit=500")
        assert page["next_cursor"] is None  # these tests keep apps under one page
        return {i["id"]: i for i in page["items"]}

    def pods(self, namespace: str = "alpha") -> dict[str, dict[str, Any]]:
        items = self.api.get(
            f"/api/v1/namespaces/{namespace}/pods",
            params={"labelSelector": "app.kubernetes.io/managed-by=gaia"},
        ).json()["items"]
        return {p["metadata"]["name"]: p for p in items if "deletionTimestamp" not in p["metadata"]}

    def settle(self, predicate: Callable[[], bool], timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            asyncio.run(self.controller.run_once())
            if predicate():
                return
            time.sleep(0.3)
        states = collections.Counter(
            (i["status"], i["ready"]) for app in self.apps() for i in self.instances(app).values()
        )
        raise AssertionError(f"not settled within {timeout_s:g} s; instances: {dict(states)}")

    def apps(self) -> list[str]:
        return [a["name"] for a in self.call("GET", f"{BIZ}/apps?limit=500")["items"]]

    def ready(self, app: str, count: int) -> Callable[[], bool]:
        def check() -> bool:
            insts = self.instances(app)
            return len(insts) == count and all(
                i["ready"] and i["status"] == "Running" for i in insts.values()
            )

        return check


@pytest.fixture
def kube(
    platform: Platform, world: World, control_plane: ControlPlane, kube_api: httpx.Client
) -> KubeApps:
    r = world.client.post(
        "/api/v1/clusters",
        json={
            "name": "kube-1",
            "kind": "kubernetes",
            "region": "ap-beijing",
            "zone": "bj-1",
            "kubeconfig": control_plane.kubeconfig_text(),
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    r = world.client.put(f"{BIZ}/quotas/kube-1", json={"hard": KUBE_QUOTA}, headers=world.admin)
    assert r.status_code == 200, r.text
    return KubeApps(platform, world, kube_api)


def test_an_app_of_20_runs_upgrades_in_place_scales_in_stops_and_starts(kube: KubeApps) -> None:
    v1 = template("v1", "registry.local/web:v1", cpu=0.5, memory=256)
    v2 = template("v2", "registry.local/web:v2", cpu=0.5, memory=256)
    kube.call(
        "POST",
        f"{BIZ}/apps",
        {"name": "web", "cluster": "kube-1", "templates": [v1, v2], "replicas": 20},
        status=201,
    )
    kube.settle(kube.ready("web", 20))
    pods = kube.pods()
    assert sorted(pods) == sorted(f"web-{i}" for i in range(20))
    assert {p["spec"]["schedulerName"] for p in pods.values()} == {"gaia-scheduler"}
    # bound by the platform (other tests of the session may have added nodes of their own)
    assert all(p["spec"].get("nodeName") for p in pods.values())

    # gray upgrade of three chosen instances, in place
    chosen = [0, 5, 10]
    upgrade = kube.call(
        "POST",
        f"{BIZ}/apps/web/upgrades",
        {"template": "v2", "instance_ids": chosen, "max_unavailable": 1},
        status=201,
    )

    def succeeded() -> bool:
        state = kube.call("GET", f"{BIZ}/apps/web/upgrades/{upgrade['id']}")["state"]
        return bool(state == "Succeeded")

    kube.settle(succeeded)
    after = kube.pods()
    for name, before in pods.items():
        now = after[name]
        # nothing moves: same pod object, node and annotations
        assert now["metadata"]["uid"] == before["metadata"]["uid"]
        assert now["spec"]["nodeName"] == before["spec"]["nodeName"]
        image = now["spec"]["containers"][0]["image"]
        if int(name.split("-")[1]) in chosen:
            assert image == "registry.local/web:v2"
            assert now["metadata"]["labels"]["gaia.io/version"] == "v2"
            # the node restarted the container with the new image (KWOK: tools/kwok stage)
            status = now["status"]["containerStatuses"][0]
            assert (status["image"], status["restartCount"]) == ("registry.local/web:v2", 1)
        else:
            assert image == "registry.local/web:v1"
            assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert kube.call("GET", f"{BIZ}/apps/web")["versions"] == {"v1": 17, "v2": 3}

    # scale in the instances chosen by id
    kube.call("POST", f"{BIZ}/apps/web/scale-in", {"instance_ids": [1, 2]})
    kube.settle(
        lambda: sorted(kube.pods()) == sorted(f"web-{i}" for i in range(20) if i not in (1, 2))
    )
    kept = kube.pods()
    assert all(kept[n]["metadata"]["uid"] == pods[n]["metadata"]["uid"] for n in kept)

    # stop removes every pod; start brings the same ids back with their versions
    kube.call("POST", f"{BIZ}/apps/web/stop")
    kube.settle(lambda: kube.pods() == {})
    kube.call("POST", f"{BIZ}/apps/web/start")
    kube.settle(kube.ready("web", 18))
    again = kube.pods()
    assert sorted(again) == sorted(kept)
    assert again["web-5"]["spec"]["containers"][0]["image"] == "registry.local/web:v2"
    assert again["web-3"]["spec"]["containers"][0]["image"] == "registry.local/web:v1"


def test_quota_is_enforced_twice(kube: KubeApps, control_plane: ControlPlane) -> None:
    """Gaia admits against the business quota; the namespace's ResourceQuota, mirrored from it,
    refuses what bypasses the platform."""
    kube.settle(
        lambda: kube.api.get("/api/v1/namespaces/alpha/resourcequotas").json()["items"] != []
    )
    (quota,) = kube.api.get("/api/v1/namespaces/alpha/resourcequotas").json()["items"]
    assert quota["spec"]["hard"]["requests.cpu"] == "40"
    assert quota["spec"]["hard"]["requests.memory"] == "64Gi"

    # 1. the platform: 100 x 0.5 CPU is more than the business's 40 CPUs
    big = template("v1", "registry.local/big:v1", cpu=0.5, memory=256)
    r = kube.world.client.post(
        f"{BIZ}/apps",
        json={"name": "big", "cluster": "kube-1", "templates": [big], "replicas": 100},
        headers=kube.world.admin,
    )
    assert r.status_code in (403, 409, 422), r.text
    assert "quota" in r.text.lower()

    # 2. the cluster: a pod made behind the platform's back is refused by the ResourceQuota
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sneaky", "namespace": "alpha"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.local/sneaky:1",
                    "resources": {
                        "requests": {"cpu": "41", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                        "limits": {"cpu": "41", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                    },
                }
            ]
        },
    }
    r = kube.api.post("/api/v1/namespaces/alpha/pods", json=pod)
    assert r.status_code == 403, r.text
    assert "exceeded quota" in r.json()["message"]
    # kubectl against the same apiserver sees the mirrored quota
    if shutil.which("kubectl") is not None:
        done = control_plane.kubectl("get", "resourcequota", "-n", "alpha", "-o", "name")
        assert done.stdout.split() == ["resourcequota/gaia-business-quota"], done.stderr


# ---- pre-pull during gray upgrades (issue 22 with issue 17): the kubernetes adapter's
# prewarm_image becomes the P2P coordinator's prewarm job for the next batches' nodes, which
# their agents learn from their heartbeat answer (their own API calls, node tokens); one job
# per app, replaced as the batches move, withdrawn when the upgrade ends

P2P = "/api/v1/clusters/kube-1/p2p"
V2 = "registry.local/shop/web:v2"


class Agents:
    """The P2P agents of some nodes, as the API sees them: each with its node's own token."""

    def __init__(self, kube: KubeApps, nodes: set[str]) -> None:
        self.kube = kube
        self.tokens = {}
        for node in sorted(nodes):
            token = kube.call("GET", f"{P2P}/agent-token?node={node}")["token"]
            self.tokens[node] = {"Authorization": f"Bearer {token}"}
            self.heartbeat(node)

    def heartbeat(self, node: str) -> list[dict[str, Any]]:
        body = {"node": node, "zone": "bj-1", "address": f"{node}:7001", "upload_slots": 4}
        r = self.kube.world.client.post(f"{P2P}/agents", json=body, headers=self.tokens[node])
        assert r.status_code == 200, r.text
        return list(r.json()["prewarm"])

    def jobs(self) -> dict[str, set[str]]:
        """Prewarm id -> the nodes whose heartbeat answer names it (images checked)."""
        out: dict[str, set[str]] = {}
        for node in self.tokens:
            for job in self.heartbeat(node):
                assert job["image"] == V2
                out.setdefault(job["id"], set()).add(node)
        return out


def web_on_nodes(kube: KubeApps) -> tuple[list[int], dict[int, str]]:
    """An app of 8 on v1 (v2: another image, same shape), and an instance id per node."""
    v1 = template("v1", "registry.local/shop/web:v1", cpu=0.5, memory=256)
    v2 = template("v2", V2, cpu=0.5, memory=256)
    body = {"name": "web", "cluster": "kube-1", "templates": [v1, v2], "replicas": 8}
    kube.call("POST", f"{BIZ}/apps", body, status=201)
    kube.settle(kube.ready("web", 8))
    first: dict[str, int] = {}
    for iid, inst in sorted(kube.instances("web").items()):
        first.setdefault(inst["node"], iid)
    ids = sorted(first.values())
    assert len(ids) >= 3, "the scenario needs instances on three nodes at least"
    return ids, {iid: node for node, iid in first.items()}


def start_upgrade(kube: KubeApps, ids: list[int]) -> dict[str, Any]:
    """A gray upgrade of ``ids`` of web to v2, one instance at a time."""
    made: dict[str, Any] = kube.call(
        "POST",
        f"{BIZ}/apps/web/upgrades",
        {"template": "v2", "instance_ids": ids, "max_unavailable": 1},
        status=201,
    )
    return made


def test_a_gray_upgrade_prewarms_the_next_batches_nodes_and_withdraws_at_the_end(
    kube: KubeApps, platform: Platform
) -> None:
    ids, node_of = web_on_nodes(kube)
    agents = Agents(kube, set(node_of.values()))
    made = start_upgrade(kube, ids)
    path = f"{BIZ}/apps/web/upgrades/{made['id']}"

    asyncio.run(kube.controller.run_once())  # the first batch moves
    (first_job, first_nodes), *more = agents.jobs().items()
    assert not more
    # the next two batches' nodes, and the first batch's own (its pull has just begun)
    assert first_nodes == {node_of[i] for i in ids[:3]}

    seen = {frozenset(first_nodes)}
    for _ in range(200):
        asyncio.run(kube.controller.run_once())
        jobs = agents.jobs()
        assert set(jobs) <= {first_job}, f"jobs piled up: {jobs}"  # one job, its nodes moving
        seen |= {frozenset(nodes) for nodes in jobs.values()}
        if kube.call("GET", path)["state"] == "Succeeded":
            break
    else:
        raise AssertionError(f"the upgrade did not finish: {kube.call('GET', path)}")
    if len(ids) > 3:
        assert len(seen) > 1  # the look-ahead moved on with the batches (the same job)
    asyncio.run(kube.controller.run_once())
    assert agents.jobs() == {}  # withdrawn at the end
    assert {i["version"] for i in kube.instances("web").values() if i["id"] in ids} == {"v2"}


def test_with_prepull_templates_a_declared_version_is_prewarmed_before_any_upgrade(
    kube: KubeApps, platform: Platform
) -> None:
    ids, node_of = web_on_nodes(kube)
    agents = Agents(kube, set(node_of.values()))
    asyncio.run(kube.controller.run_once())
    assert agents.jobs() == {}  # the default, "upgrades": nothing before an upgrade
    prepull = {"prepull": "templates"}
    r = kube.world.client.patch(f"{BIZ}/apps/web", json=prepull, headers=kube.world.admin)
    assert r.status_code == 200, r.text
    asyncio.run(kube.controller.run_once())  # v2, run by no instance, is wished now
    (_job, nodes), *more = agents.jobs().items()
    assert not more
    assert nodes == set(node_of.values())  # every node of the app
    prepull = {"prepull": "off"}
    r = kube.world.client.patch(f"{BIZ}/apps/web", json=prepull, headers=kube.world.admin)
    assert r.status_code == 200, r.text
    asyncio.run(kube.controller.run_once())
    assert agents.jobs() == {}  # withdrawn
    made = start_upgrade(kube, ids)
    asyncio.run(kube.controller.run_once())
    assert agents.jobs() == {}  # "off": not even the upgrade's look-ahead
    kube.settle(
        lambda: kube.call("GET", f"{BIZ}/apps/web/upgrades/{made['id']}")["state"] == "Succeeded"
    )


def test_agents_that_register_after_the_wish_still_get_its_prewarm(
    kube: KubeApps, platform: Platform
) -> None:
    ids, node_of = web_on_nodes(kube)
    made = start_upgrade(kube, ids)
    asyncio.run(kube.controller.run_once())
    # the wish was declared while the cluster had no agent (as after a restart of Gaia, before
    # the agents' next heartbeat); the controller does not declare it again, yet agents that
    # register now are told of it
    agents = Agents(kube, set(node_of.values()))
    (_job, nodes), *more = agents.jobs().items()
    assert not more
    assert nodes == {node_of[i] for i in ids[:3]}
    kube.settle(
        lambda: kube.call("GET", f"{BIZ}/apps/web/upgrades/{made['id']}")["state"] == "Succeeded"
    )


def test_a_paused_upgrade_and_a_deleted_app_withdraw_their_prewarm(
    kube: KubeApps, platform: Platform
) -> None:
    ids, node_of = web_on_nodes(kube)
    agents = Agents(kube, set(node_of.values()))
    made = start_upgrade(kube, ids)
    asyncio.run(kube.controller.run_once())
    assert len(agents.jobs()) == 1
    kube.call("POST", f"{BIZ}/apps/web/upgrades/{made['id']}/pause")
    asyncio.run(kube.controller.run_once())
    assert agents.jobs() == {}
    kube.call("POST", f"{BIZ}/apps/web/upgrades/{made['id']}/resume")
    asyncio.run(kube.controller.run_once())
    assert len(agents.jobs()) == 1  # the look-ahead again, for the batches left
    r = kube.world.client.delete(f"{BIZ}/apps/web", headers=kube.world.admin)
    assert r.status_code in (200, 202, 204), r.text
    asyncio.run(kube.controller.run_once())
    assert agents.jobs() == {}
