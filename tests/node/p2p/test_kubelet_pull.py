"""The real node's kubelet (``tests/support/node.py``) starting pods whose images containerd
pulls through ``gaia p2p-agent``, and past it once the agent is dead.

The node's containerd reads ``certs.d/registry.gaia.test/hosts.toml`` on every pull. Each test
rewrites that file as the DaemonSet's init container does (``gaia p2p-agent
--write-containerd-hosts``, the registries file naming the node's registry): the agent first,
the registry as the ``server`` containerd falls back to. The fixture puts the harness's own file
(the registry alone) back afterwards.

Each pod runs a ``gaia/web`` version of its own: its site layer and config are new to
containerd's content store, so they must be fetched (the busybox layer is shared with the pause
image, which a pod straight from the registry brought in before any agent ran). What moved them
is read from the agent's ``/metrics``, its cache and the coordinator's API, before and after the
pod.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.platform import Platform
from tests.conftest import start_real_bed
from tests.support.images import OciImage, web_image
from tests.support.kube import ControlPlane
from tests.support.node import REGISTRY_HOST, WEB_REPOSITORY, RealNode
from tests.support.p2p import AgentProcess, Served, served_coordinator, write_containerd_hosts
from tests.support.waiting import eventually

NAMESPACE = "p2p-pull"
FROM_REGISTRY = 'gaia_p2p_agent_bytes_total{source="registry"}'

pytestmark = pytest.mark.slow


@dataclass
class Bed:
    plane: ControlPlane
    node: RealNode
    api: httpx.Client

    @property
    def certs_d(self) -> Path:
        return self.node.work / "containerd" / "certs.d"


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    plane, node = start_real_bed(tmp_path_factory, "p2p-pull")
    api = plane.http_client()
    bed = Bed(plane, node, api)
    warm: list[str] = []
    try:
        created = api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        assert created.status_code == 201, created.text
        # a pod straight from the registry first: the pause image and the busybox layer are then
        # in containerd's content store, so what a test's pod fetches is its own image's blobs
        _run_pod(bed, warm, "warm-up", node.images.web_v1)
        yield bed
        _delete_pods(bed, warm)
    finally:
        api.close()
        node.stop()
        plane.stop()


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: what is tested here is the agent under the kubelet, not the database."""
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def gaia(platform: Platform) -> Iterator[Served]:
    with served_coordinator(platform) as served:
        yield served


@pytest.fixture
def agent(bed: Bed, gaia: Served, tmp_path: Path) -> Iterator[AgentProcess]:
    """The node's agent, registered with the coordinator, and containerd's hosts.toml putting
    it first; the harness's hosts.toml is back afterwards."""
    agent = AgentProcess(
        node=bed.node.name,
        work=tmp_path / "agent",
        registries={REGISTRY_HOST: {"url": bed.node.registry_url, "default": True}},
        coordinator=gaia.origin,
        cluster="sim-1",
        token=gaia.token,
    )
    hosts = bed.certs_d / REGISTRY_HOST / "hosts.toml"
    original = hosts.read_text()
    try:
        agent.start()
        _wait_registered(agent, gaia)
        write_containerd_hosts(bed.certs_d, agent.work / "registries.json", agent.mirror)
        assert f'[host."http://{agent.mirror}"]' in hosts.read_text()
        yield agent
    finally:
        agent.stop()
        hosts.write_text(original)


@pytest.fixture
def pods(bed: Bed) -> Iterator[list[str]]:
    """Names of the pods a test ran; deleted afterwards."""
    names: list[str] = []
    yield names
    _delete_pods(bed, names)


def _delete_pods(bed: Bed, names: list[str]) -> None:
    for name in names:
        bed.api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    for name in names:
        eventually(lambda n=name: _pod(bed, n) is None, f"pod {name} gone")  # type: ignore[misc]


def _wait_registered(agent: AgentProcess, gaia: Served) -> None:
    with httpx.Client(base_url=gaia.origin, headers=gaia.admin, timeout=30) as c:

        def registered() -> bool:
            items = c.get("/api/v1/clusters/sim-1/p2p/nodes").json()["items"]
            return agent.node in {i["name"] for i in items}

        eventually(registered, "the agent registered with the coordinator", timeout_s=20)


def _push(bed: Bed, version: str) -> tuple[str, OciImage]:
    """``gaia/web:<version>``, a version no one has pulled; its reference and image."""
    image = web_image(version)
    return bed.node.registry.push(image, repository=WEB_REPOSITORY, tag=version), image


def _pod(bed: Bed, name: str) -> dict[str, Any] | None:
    got = bed.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
    return got.json() if got.status_code == 200 else None


def _ready(bed: Bed, name: str) -> bool:
    conditions = (_pod(bed, name) or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _run_pod(bed: Bed, pods: list[str], name: str, image: str) -> dict[str, Any]:
    manifest = {
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
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    created = bed.api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=manifest)
    assert created.status_code == 201, created.text
    pods.append(name)
    eventually(lambda: _ready(bed, name), f"pod {name} Ready", timeout_s=90, interval_s=0.2)
    found = _pod(bed, name)
    assert found is not None
    return found


def _cached(agent: AgentProcess) -> set[str]:
    folder = agent.work / "cache" / "blobs"
    return {f"sha256:{p.name}" for p in folder.iterdir()} if folder.exists() else set()


def test_the_kubelet_runs_a_pod_whose_new_layers_came_through_the_agent(
    bed: Bed, agent: AgentProcess, gaia: Served, pods: list[str]
) -> None:
    reference, image = _push(bed, "p2p-through-agent")
    site, config = image.layers[-1].blob, image.config()
    assert site.digest not in _cached(agent)
    before = agent.metrics()

    pod = _run_pod(bed, pods, "via-agent", reference)
    assert pod["status"]["phase"] == "Running"
    served = httpx.get(f"http://{pod['status']['podIP']}:8080/", timeout=5)
    assert served.text == "web p2p-through-agent\n"

    after = agent.metrics()
    # the blobs new to containerd left the registry once, into the agent, and containerd read
    # them from there (the busybox layer came with the warm-up pod, before the agent)
    assert {site.digest, config.digest} <= _cached(agent)
    moved = after[FROM_REGISTRY] - before[FROM_REGISTRY]
    assert moved == len(site.data) + len(config.data)
    completed = after["gaia_p2p_agent_blobs_completed_total"]
    assert completed - before["gaia_p2p_agent_blobs_completed_total"] == 2
    # the coordinator heard of the image by the name the kubelet asked for
    with httpx.Client(base_url=gaia.origin, headers=gaia.admin, timeout=30) as c:
        items = c.get("/api/v1/clusters/sim-1/p2p/images").json()["items"]
    (row,) = [i for i in items if i["reference"] == "p2p-through-agent"]
    assert (row["registry"], row["repository"]) == (REGISTRY_HOST, WEB_REPOSITORY)
    assert row["digest"] == bed.node.registry.digest(WEB_REPOSITORY, "p2p-through-agent")
    assert row["bytes_from_registry"] == moved
    # ...and of the node holding those two blobs (the image's busybox layer it never served, so
    # the image counts no node complete: ``nodes_complete`` stays 0)
    assert row["nodes_complete"] == 0
    with httpx.Client(base_url=gaia.origin, headers=gaia.admin, timeout=30) as c:

        def held() -> int:
            items = c.get("/api/v1/clusters/sim-1/p2p/nodes").json()["items"]
            return int(next(i["pieces_held"] for i in items if i["name"] == bed.node.name))

        eventually(lambda: held() == 2, "the coordinator knows the node holds the two blobs")


def test_with_the_agent_dead_the_kubelet_pulls_from_the_registry(
    bed: Bed, agent: AgentProcess, pods: list[str]
) -> None:
    reference, image = _push(bed, "p2p-agent-dead")
    agent.kill()
    # hosts.toml still names the agent first: containerd tries it, fails and takes the registry
    hosts = (bed.certs_d / REGISTRY_HOST / "hosts.toml").read_text()
    assert f'[host."http://{agent.mirror}"]' in hosts
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{agent.mirror}/v2/", timeout=2)

    pod = _run_pod(bed, pods, "past-agent", reference)
    assert pod["status"]["phase"] == "Running"
    served = httpx.get(f"http://{pod['status']['podIP']}:8080/", timeout=5)
    assert served.text == "web p2p-agent-dead\n"
    assert image.layers[-1].blob.digest not in _cached(agent)
