"""A placement interrupted between two writes, on a real control plane. Up to release 22 the
kubernetes provider created an instance's pod and then bound it to the node the Gaia scheduler
chose; a process killed in between left a pod that no scheduler will ever bind. The provider now
creates pods bound, but such pods may still be in a cluster an older platform ran, and the app
controller deletes one once it has waited past its grace period and places it again
(``gaia.controllers.apps``, "placements left half-done").

The crash is made the way the older release crashed: the pod is created from the manifest
without its node, and the step after the create raises, so the controller pass dies right after
the pod was created, as a killed process would; the "restarted" platform is a new provider
object (empty caches) and a new controller on the same cluster."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gaia.clock import ManualClock
from gaia.controllers.apps import AppController
from gaia.platform import Platform
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.kubernetes import cluster as kube_cluster
from gaia.providers.kubernetes.pods import pod_manifest
from gaia.providers.kubernetes.quotas import QUOTA_NAME
from gaia.store.models import Cluster
from tests.conftest import World
from tests.support.apps_harness import BIZ, template
from tests.support.kube import ControlPlane, fake_node
from tests.support.waiting import eventually

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

GRACE = dt.timedelta(seconds=60)  # AppController's default ``unbound_grace``
NODE = "unbound-gpu"
SELECTOR = {"gaia.io/test": "unbound"}  # keeps other tests' apps and this one's apart
QUOTA = {
    "cpu": 8,
    "memory": 16384,
    "local_disk": 100,
    "cloud_disk": 0,
    "shared_disk": 0,
    "bandwidth": 1000,
    "gpu": 4,
    "gpu_memory": 0,
}


@pytest.fixture(scope="module")
def kube_api(control_plane: ControlPlane) -> Iterator[httpx.Client]:
    control_plane.ensure_controller_manager()  # ResourceQuota usage, for quota admission
    client = control_plane.http_client()
    r = client.post("/api/v1/nodes", json=fake_node(NODE, gpus=2, labels=SELECTOR))
    assert r.status_code in (201, 409), r.text
    eventually(lambda: _ready(client.get(f"/api/v1/nodes/{NODE}").json()), "KWOK: node Ready")
    yield client
    client.close()


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Rig:
    def __init__(self, platform: Platform, world: World, api: httpx.Client) -> None:
        self.platform, self.world, self.api = platform, world, api

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.world.client.request(method, path, json=body, headers=self.world.admin)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def pod(self, name: str) -> dict[str, Any] | None:
        r = self.api.get(f"/api/v1/namespaces/alpha/pods/{name}")
        return r.json() if r.status_code == 200 else None

    def create_app(self, name: str) -> None:
        gpu = template(
            "v1", f"registry.local/{name}:v1", cpu=0.5, memory=256, gpu=1, readiness=False
        )
        gpu["node_selector"] = SELECTOR
        body = {"name": name, "cluster": "kube-1", "templates": [gpu], "replicas": 1}
        self.call("POST", f"{BIZ}/apps", body, status=201)

    def settle(self, controller: AppController, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            asyncio.run(controller.run_once())
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"not settled within 60 s: {what}")

    def controller(self, clock: ManualClock) -> AppController:
        """A fresh app controller (nothing in memory, as after a restart) on its own clock."""
        return AppController(
            db=self.platform.db,
            providers=self.platform.providers,
            secrets=self.platform.secrets,
            clock=clock,
        )


@pytest.fixture
def rig(
    platform: Platform, world: World, control_plane: ControlPlane, kube_api: httpx.Client
) -> Iterator[Rig]:
    rig = Rig(platform, world, kube_api)
    rig.call(
        "POST",
        "/api/v1/clusters",
        {
            "name": "kube-1",
            "kind": "kubernetes",
            "region": "ap-beijing",
            "zone": "bj-1",
            "kubeconfig": control_plane.kubeconfig_text(),
        },
        status=201,
    )
    rig.call("PUT", f"{BIZ}/quotas/kube-1", {"hard": QUOTA})
    # the quota is mirrored as the namespace's ResourceQuota by a controller pass, and admission
    # reads the quota's status, which kube-controller-manager copies from the spec a moment
    # later; until then an earlier test's mirror in "alpha" refuses the GPU pod this test needs
    asyncio.run(platform.app_controller().run_once())
    eventually(lambda: _quota_in_effect(kube_api), "the business quota mirrored and in effect")
    yield rig
    # the node's cards are free again for the next test (its platform does not know these apps)
    pods = kube_api.get(
        "/api/v1/namespaces/alpha/pods", params={"fieldSelector": f"spec.nodeName={NODE}"}
    ).json()["items"]
    for pod in pods:
        kube_api.delete(
            f"/api/v1/namespaces/alpha/pods/{pod['metadata']['name']}",
            params={"gracePeriodSeconds": "0"},
        )
    eventually(
        lambda: (
            not kube_api.get(
                "/api/v1/namespaces/alpha/pods", params={"fieldSelector": f"spec.nodeName={NODE}"}
            ).json()["items"]
        ),
        "the test's pods gone",
    )


def _quota_in_effect(api: httpx.Client) -> bool:
    r = api.get(f"/api/v1/namespaces/alpha/resourcequotas/{QUOTA_NAME}")
    if r.status_code != 200:
        return False
    quota = r.json()
    hard = quota["spec"]["hard"]
    return bool(
        hard.get("requests.nvidia.com/gpu") == str(QUOTA["gpu"])
        and (quota.get("status") or {}).get("hard") == hard
    )


def restart(rig: Rig) -> None:
    """What a restarted platform has: a new provider object (empty caches) on the cluster."""
    with rig.platform.db.read_session() as session:
        cluster_id = session.query(Cluster).filter_by(name="kube-1").one().id
    rig.platform.providers.forget(cluster_id)
    asyncio.run(rig.platform.providers.close_retired())


def _cards(pod: dict[str, Any]) -> set[str]:
    return set(pod["metadata"]["annotations"]["gaia.io/gpu-ids"].split(","))


def _running(pod: dict[str, Any] | None) -> bool:
    return (
        pod is not None
        and "deletionTimestamp" not in pod["metadata"]
        and pod["spec"].get("nodeName") == NODE
        and pod.get("status", {}).get("phase") == "Running"
    )


def test_a_pod_left_unbound_by_a_crash_is_placed_again_without_sharing_a_card(
    rig: Rig,
) -> None:
    # 1. the first platform (an older release) places ua-0 and is killed between creating its
    # pod and binding it
    rig.create_app("ua")

    def unbound_manifest(spec: Any) -> dict[str, Any]:
        manifest = pod_manifest(spec)
        del manifest["spec"]["nodeName"]
        return manifest

    def killed(self: KubernetesCluster, pod: dict[str, Any]) -> None:
        raise RuntimeError("process killed before the bind")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kube_cluster, "pod_manifest", unbound_manifest)
        patch.setattr(KubernetesCluster, "_scheduled", killed)
        with pytest.raises(RuntimeError, match="process killed"):
            asyncio.run(rig.platform.app_controller().run_once())
    stranded = rig.pod("ua-0")
    assert stranded is not None and not stranded["spec"].get("nodeName")
    recorded = _cards(stranded)  # the card the interrupted placement chose, held by no one
    created = dt.datetime.fromisoformat(stranded["metadata"]["creationTimestamp"])

    # 2. restart: a new provider object on the same cluster, a new controller; while its grace
    # period runs (a bind might still be in flight) the pod is left alone, and the card it
    # records is free in the books, so the next GPU instance gets it
    restart(rig)
    clock = ManualClock(created + GRACE - dt.timedelta(seconds=10))
    controller = rig.controller(clock)
    rig.create_app("ub")
    rig.settle(controller, lambda: _running(rig.pod("ub-0")), "ub-0 running")
    ub = rig.pod("ub-0")
    assert ub is not None and _cards(ub) == recorded
    waiting = rig.pod("ua-0")
    assert waiting is not None and waiting["metadata"]["uid"] == stranded["metadata"]["uid"]
    assert not waiting["spec"].get("nodeName")

    # 3. past the grace period the controller deletes it and places it again, on a free card
    clock.step(20)
    rig.settle(controller, lambda: _running(rig.pod("ua-0")), "ua-0 recreated and running")
    ua = rig.pod("ua-0")
    ub = rig.pod("ub-0")
    assert ua is not None and ub is not None
    assert ua["metadata"]["uid"] != stranded["metadata"]["uid"]
    assert _cards(ua).isdisjoint(_cards(ub)), (_cards(ua), _cards(ub))
    assert _cards(ua) | _cards(ub) == {"0", "1"}
    instances = {i["name"]: i for i in rig.call("GET", f"{BIZ}/apps/ua/instances")["items"]}
    assert instances["ua-0"]["status"] == "Running"

    items = rig.call("GET", "/api/v1/events?object_name=ua-0")["items"]
    repairs = [e for e in items if e["reason"] == "LeftUnbound"]
    assert len(repairs) == 1, items
    assert repairs[0]["type"] == "Warning"
    assert "left unbound by an interrupted placement" in repairs[0]["message"]
    assert f"recreated it on node {NODE} with GPU(s) {min(_cards(ua))}" in repairs[0]["message"]

    # 4. level-triggered: further passes change nothing
    uid = ua["metadata"]["uid"]
    clock.step(60)
    for _ in range(3):
        asyncio.run(controller.run_once())
    again = rig.pod("ua-0")
    assert again is not None and again["metadata"]["uid"] == uid


def test_a_pod_bound_just_before_a_crash_keeps_its_card_and_is_left_alone(rig: Rig) -> None:
    """The mirror case: the pod was created bound but the process died before it recorded
    anything (here: before the Scheduled event). The platform keeps no placement record outside
    the pod, so the next platform reads the pod back bound, counts its card, and repairs
    nothing."""
    rig.create_app("uc")

    def killed(self: KubernetesCluster, pod: dict[str, Any]) -> None:
        raise RuntimeError("process killed after the bind")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(KubernetesCluster, "_scheduled", killed)
        with pytest.raises(RuntimeError, match="process killed"):
            asyncio.run(rig.platform.app_controller().run_once())
    bound = rig.pod("uc-0")
    assert bound is not None and bound["spec"].get("nodeName") == NODE

    restart(rig)
    created = dt.datetime.fromisoformat(bound["metadata"]["creationTimestamp"])
    clock = ManualClock(created + GRACE + dt.timedelta(seconds=60))
    controller = rig.controller(clock)
    rig.create_app("ud")
    rig.settle(
        controller,
        lambda: _running(rig.pod("ud-0")) and _running(rig.pod("uc-0")),
        "uc-0 and ud-0 running",
    )
    uc, ud = rig.pod("uc-0"), rig.pod("ud-0")
    assert uc is not None and ud is not None
    assert uc["metadata"]["uid"] == bound["metadata"]["uid"]  # not recreated
    assert _cards(uc).isdisjoint(_cards(ud)), (_cards(uc), _cards(ud))
    items = rig.call("GET", "/api/v1/events?object_name=uc-0")["items"]
    assert not [e for e in items if e["reason"] == "LeftUnbound"], items
