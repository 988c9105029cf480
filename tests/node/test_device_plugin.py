"""The device plugin with a real kubelet: registration, shares of one card, limits, health, restart.

A real node (``tests/support/node.py``: kubelet + containerd + runc) runs without the
harness's advertised GPUs; the node agent (``gaia.node.agent``) runs in this process, with its
device plugin in the kubelet's real plugin folder and its publisher writing the Node, reading a
FAKE NVML (``tests/support/fake_nvml.py``: the four A100 cards of a real ``nvidia-smi -q``,
minor numbers 3 to 6, with the links of a real four-GPU dual-socket ``nvidia-smi topo -m``; no
machine here has a GPU) and the ``none`` enforcement over FAKE device nodes (character devices
with /dev/null's numbers, named ``nvidia3``...). Everything between the kubelet and the plugin
is real: the kubelet's registration server, its gRPC calls, its admission, its node status, its
checkpoint, and containerd creating the containers with the device nodes and environment the
plugin returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig

from gaia.kube.nodes import read_node
from gaia.kube.resources import GAIA_GPU_CORE, GAIA_GPU_MEMORY, NVIDIA_GPU
from gaia.node.agent import NodeAgent, build_agent
from gaia.node.gpus import open_gpus
from gaia.node.publish import NodePublisher
from gaia.node.vgpu import enforcement_from
from gaia.scheduler.links import parse_nvidia_smi_topo
from tests.conftest import missing_component
from tests.support.fake_nvml import FakeNvml
from tests.support.kube import ControlPlane
from tests.support.node import (
    RealNode,
    RealNodeUnavailable,
    device_plugin_folder,
    start_real_node,
)
from tests.support.paths import FIXTURES
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

NODE = "gaia-gpu-node"
CARD_MIB = 81920  # A100-SXM4-80GB
NAMESPACE = "default"
TOPOLOGIES = FIXTURES / "topology"
FAKE_MPS = Path(__file__).with_name("fake_mps_control.py")


def until(check: Any, *, what: str, timeout_s: float = 60) -> Any:
    """The first true value of ``check()`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


@dataclass
class Bed:
    plane: ControlPlane
    node: RealNode
    agent: NodeAgent
    nvml: FakeNvml
    loop: asyncio.AbstractEventLoop
    dev_root: Path
    state_root: Path
    control: Path

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.plane.http_client() as client:
            response = client.request(method, path, **kwargs)
        assert response.status_code < 300, response.text
        return (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )

    def node_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.api("GET", f"/api/v1/nodes/{NODE}")["status"]
        return status

    def pod(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}")
        return doc

    def make_pod(
        self,
        name: str,
        *,
        cores: int = 0,
        cards: int = 0,
        memory_mib: int = 0,
        gpu_ids: str | None = None,
    ) -> None:
        limits = {GAIA_GPU_CORE: str(cores)} if cores else {NVIDIA_GPU: str(cards)}
        if memory_mib:
            limits[GAIA_GPU_MEMORY] = str(memory_mib)
        annotations = {"gaia.io/gpu-ids": gpu_ids} if gpu_ids is not None else {}
        self.api(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            json={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "annotations": annotations},
                "spec": {
                    "nodeName": NODE,
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "work",
                            "image": self.node.images.web_v1,
                            "command": [
                                "sh",
                                "-c",
                                "env; ls /dev; cat /tmp/nvidia-mps/fake-state.json; echo;"
                                " sleep 3600",
                            ],
                            "resources": {"limits": limits},
                        }
                    ],
                },
            },
        )

    def delete_pod(self, name: str) -> None:
        with self.plane.http_client() as client:
            client.delete(
                f"/api/v1/namespaces/{NAMESPACE}/pods/{name}", params={"gracePeriodSeconds": "0"}
            )

    def running(self, name: str) -> dict[str, Any]:
        pod = until(
            lambda: (p := self.pod(name))["status"].get("phase") in ("Running", "Failed") and p,
            timeout_s=90,
            what=f"pod {name} running",
        )
        assert pod["status"]["phase"] == "Running", pod["status"]
        return pod

    def logs(self, name: str) -> str:
        text: str = until(
            lambda: (
                (t := self.api("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/log"))
                and "PATH=" in t
                and t
            ),
            timeout_s=30,
            what=f"the logs of {name}",
        )
        return text

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


def _fake_dev(root: Path) -> Path:
    """FAKE NVIDIA device nodes: character devices with /dev/null's numbers."""
    root.mkdir(parents=True, exist_ok=True)
    for name in (
        "nvidiactl",
        "nvidia-uvm",
        "nvidia-uvm-tools",
        *(f"nvidia{i}" for i in range(3, 7)),
    ):
        path = root / name
        if not path.exists():
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return root


@pytest.fixture(scope="module")
def bed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    work = tmp_path_factory.mktemp("gpu-node")
    nvml = FakeNvml.machine(
        "hgx_a100_4",
        topology=parse_nvidia_smi_topo((TOPOLOGIES / "workstation4_dual_socket.txt").read_text()),
    )
    reader = open_gpus(nvml=nvml)
    assert reader is not None
    dev_root = _fake_dev(work / "dev")
    # MPS's sockets live in <state root>/<allocation>/pipe: a short root keeps their paths legal
    state_root = Path(tempfile.mkdtemp(prefix="gv", dir="/run"))
    control = work / "fake-nvidia-cuda-mps-control"
    control.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_MPS}" "$@"\n')
    control.chmod(0o755)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, state_root, ignore_errors=True)
        plugin_dir = cleanup.enter_context(device_plugin_folder())
        try:
            node = start_real_node(control_plane, work / "node", name=NODE, advertise_gpus=False)
        except RealNodeUnavailable as exc:
            missing_component("A real Kubernetes node (kubelet + containerd + runc)", str(exc))
            raise AssertionError("unreachable") from exc
        cleanup.callback(node.stop)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="node-agent", daemon=True)
        thread.start()

        def stop_loop() -> None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

        cleanup.callback(stop_loop)

        enforcement = enforcement_from(
            "mps", dev_root=dev_root, state_root=state_root, mps_control=str(control)
        )

        def release_all() -> None:  # the fake MPS daemons of pods still there
            for child in state_root.iterdir():
                if (child / "pipe").exists():
                    enforcement.release(allocation_id=child.name)

        cleanup.callback(release_all)

        async def make() -> tuple[NodeAgent, asyncio.Event, asyncio.Future[None]]:
            client = AsyncClient(KubeConfig.from_dict(control_plane.kubeconfig()), trust_env=False)
            publisher = NodePublisher(client=client, node_name=NODE, reader=reader)
            agent = build_agent(
                node_name=NODE,
                reader=reader,
                client=client,
                publish=publisher.publish,
                enforcement=enforcement,
                plugin_dir=plugin_dir,
                state_dir=work / "agent",
                interval_s=0.5,
                poll_s=0.2,
                used_settle_s=1.0,
                audit_s=0.5,
                nvml=nvml,
            )
            stop = asyncio.Event()
            return agent, stop, asyncio.ensure_future(agent.run(stop))

        agent, stop, running = asyncio.run_coroutine_threadsafe(make(), loop).result(30)

        def stop_agent() -> None:
            loop.call_soon_threadsafe(stop.set)
            asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(asyncio.shield(running), 10), loop
            ).result(15)

        cleanup.callback(stop_agent)
        yield Bed(
            plane=control_plane,
            node=node,
            agent=agent,
            nvml=nvml,
            loop=loop,
            dev_root=dev_root,
            state_root=state_root,
            control=control,
        )


def gpu_used(bed: Bed) -> dict[str, list[int]]:
    annotations = bed.api("GET", f"/api/v1/nodes/{NODE}")["metadata"].get("annotations", {})
    used: dict[str, list[int]] = json.loads(annotations.get("gaia.io/gpu-used", "{}"))
    return used


def allocatable(bed: Bed, resource: str) -> str | None:
    value: str | None = bed.node_status().get("allocatable", {}).get(resource)
    return value


def test_plugin_registers_and_the_node_offers_100_units_per_card(bed: Bed) -> None:
    eventually(lambda: allocatable(bed, GAIA_GPU_CORE) == "400", timeout_s=60, what="400 units")
    eventually(
        lambda: allocatable(bed, GAIA_GPU_MEMORY) == str(4 * CARD_MIB), timeout_s=30, what="memory"
    )
    meta = bed.api("GET", f"/api/v1/nodes/{NODE}")["metadata"]
    assert meta["labels"]["gaia.io/gpu-model"] == "NVIDIA-A100-SXM4-80GB"
    assert json.loads(meta["annotations"]["gaia.io/gpu-topology"])[0] == ["X", "PHB", "SYS", "SYS"]
    assert all(server.registrations >= 1 for server in bed.agent.servers)


def test_shares_of_one_card_are_admitted_and_started_on_that_card(bed: Bed) -> None:
    eventually(lambda: allocatable(bed, GAIA_GPU_CORE) == "400", timeout_s=60, what="400 units")
    bed.make_pod("share-30", cores=30, memory_mib=4096, gpu_ids="1")
    bed.make_pod("share-50", cores=50, gpu_ids="1")
    for name in ("share-30", "share-50"):
        bed.running(name)
    card1 = bed.nvml.cards[1].uuid
    logs30, logs50 = bed.logs("share-30"), bed.logs("share-50")
    for text in (logs30, logs50):
        assert f"NVIDIA_VISIBLE_DEVICES={card1}" in text
        assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in text
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in text  # limits are the daemon's
        devices = {name for name in text.split() if name.startswith("nvidia")}
        # card 1's minor number, no other card's, and the driver's shared nodes
        assert devices == {"nvidia4", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"}
    # PreStartContainer started each container's own MPS daemon with its limits before the
    # container ran; the container reads them through the pipe folder it was given (a FAKE
    # nvidia-cuda-mps-control keeps them in a file there)
    assert '"thread": 30.0' in logs30 and '"0": "4096M"' in logs30
    assert '"thread": 50.0' in logs50 and f'"0": "{CARD_MIB // 2}M"' in logs50
    grants = {g.pod: g for g in bed.agent.plugin.ledger.grants()}
    assert [(s.index, s.cores, s.memory_mib) for s in grants["share-30"].shares] == [(1, 30, 4096)]
    # no memory asked: the same fraction of the card as of its cores
    assert [(s.index, s.cores, s.memory_mib) for s in grants["share-50"].shares] == [
        (1, 50, CARD_MIB // 2)
    ]


def test_a_limit_a_container_raises_through_its_control_socket_is_set_back(bed: Bed) -> None:
    bed.running("share-30")
    grant = next(g for g in bed.agent.plugin.ledger.grants() if g.pod == "share-30")
    pipe = bed.state_root / grant.allocation_id / "pipe"
    state = pipe / "fake-state.json"

    def thread() -> float:
        return float(json.loads(state.read_text())["thread"])

    assert thread() == 30.0
    # what a container holding nvidia-cuda-mps-control could do through its mounted pipe folder
    subprocess.run(
        [str(bed.control)],
        input="set_default_active_thread_percentage 100\n",
        env={**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)},
        text=True,
        check=True,
        capture_output=True,
        timeout=30,
    )
    eventually(lambda: thread() == 30.0, timeout_s=30, what="the agent's audit setting 30 back")


def test_a_context_outside_mps_on_a_shared_card_is_reported(bed: Bed) -> None:
    bed.running("share-30")
    # a process with a plain CUDA context on card 1, not an MPS client (what a container gets
    # that points CUDA_MPS_PIPE_DIRECTORY elsewhere); the FAKE NVML lists it as NVML would
    bed.nvml.add_process(1, pid=999_999, used_mib=2048)
    try:
        eventually(
            lambda: (
                [(s.pid, s.uuid, s.used_mib) for s in bed.agent.strays]
                == [(999_999, bed.nvml.cards[1].uuid, 2048)]
            ),
            timeout_s=30,
            what="the stray context reported",
        )
    finally:
        bed.nvml.remove_process(1, 999_999)
    eventually(lambda: bed.agent.strays == (), timeout_s=30, what="the stray gone")


def test_a_pod_without_gaia_annotation_gets_the_tree_choice(bed: Bed) -> None:
    bed.running("share-30")
    bed.make_pod("unplaced-20", cores=20)
    bed.running("unplaced-20")
    grant = next(g for g in bed.agent.plugin.ledger.grants() if g.pod == "unplaced-20")
    # best fit: the card already shared (card 1, 20 units left), not a whole free card
    assert [(s.index, s.cores) for s in grant.shares] == [(1, 20)]


def test_a_pod_whose_card_is_full_fails_admission_with_the_reason(bed: Bed) -> None:
    bed.running("unplaced-20")
    bed.make_pod("too-much", cores=60, gpu_ids="1")
    pod = until(
        lambda: (p := bed.pod("too-much"))["status"].get("phase") == "Failed" and p,
        timeout_s=60,
        what="the pod refused",
    )
    status = pod["status"]
    assert status.get("reason") == "UnexpectedAdmissionError", status
    # the plugin's refusal, word for word, is what the user reads on the pod
    assert (
        "gaia.io/gpu-ids" in status["message"]
        and "cannot hold 60 x gaia.io/gpu-core" in status["message"]
    )


def test_a_whole_card_is_one_nvidia_gpu_and_takes_no_shares_beside_it(bed: Bed) -> None:
    eventually(lambda: allocatable(bed, NVIDIA_GPU) == "4", timeout_s=30, what="4 whole cards")
    bed.make_pod("whole-1", cards=1)
    bed.running("whole-1")
    grant = next(g for g in bed.agent.plugin.ledger.grants() if g.pod == "whole-1")
    (share,) = grant.shares
    assert share.cores == 100 and share.index != 1  # card 1 holds shares
    assert f"NVIDIA_VISIBLE_DEVICES={share.uuid}" in bed.logs("whole-1")
    bed.make_pod("beside-whole", cores=10, gpu_ids=str(share.index))
    pod = until(
        lambda: (p := bed.pod("beside-whole"))["status"].get("phase") == "Failed" and p,
        timeout_s=60,
        what="the share refused",
    )
    assert "held through nvidia.com/gpu" in pod["status"]["message"], pod["status"]
    shared = [100, 4096 + CARD_MIB // 2 + CARD_MIB // 5]  # 30 + 50 + 20 cores of card 1
    eventually(
        lambda: gpu_used(bed) == {"1": shared, str(share.index): [100, CARD_MIB]},
        timeout_s=30,
        what="gaia.io/gpu-used counting every pod's grant",
    )
    bed.delete_pod("whole-1")
    eventually(
        lambda: all(g.pod != "whole-1" for g in bed.agent.plugin.ledger.grants()),
        timeout_s=60,
        what="the whole card released",
    )
    # the extender only ever added to gaia.io/gpu-used; the agent takes the pod away again
    eventually(
        lambda: gpu_used(bed) == {"1": shared}, timeout_s=30, what="gaia.io/gpu-used shrinking"
    )


def test_a_sick_card_leaves_the_allocatable(bed: Bed) -> None:
    bed.nvml.xid(3, 79)
    eventually(lambda: allocatable(bed, GAIA_GPU_CORE) == "300", timeout_s=60, what="300 units")
    eventually(lambda: allocatable(bed, NVIDIA_GPU) == "3", timeout_s=60, what="3 whole cards")
    eventually(
        lambda: allocatable(bed, GAIA_GPU_MEMORY) == str(3 * CARD_MIB), timeout_s=30, what="memory"
    )
    # the scheduler's side: the health annotation names the card and why
    health = bed.api("GET", f"/api/v1/nodes/{NODE}")["metadata"]["annotations"][
        "gaia.io/gpu-health"
    ]
    assert "XID 79" in json.loads(health)["3"][0]
    # the kubelet keeps the sick card in its capacity, so the node still reads as four cards
    # with their matrix (an unreadable matrix would keep every GPU pod off the node)
    gpus = read_node(bed.api("GET", f"/api/v1/nodes/{NODE}")).gpus
    assert gpus.unreadable == {}
    assert (gpus.cards, len(gpus.links), gpus.unhealthy) == (4, 4, {3})
    assert gpus.memory_per_card == CARD_MIB


def test_the_plugin_registers_again_when_the_kubelet_restarts(bed: Bed) -> None:
    before = [server.registrations for server in bed.agent.servers]
    bed.node.restart_kubelet()
    eventually(
        lambda: all(s.registrations > b for s, b in zip(bed.agent.servers, before, strict=True)),
        timeout_s=60,
        what="both resources registered again",
    )
    eventually(
        lambda: allocatable(bed, GAIA_GPU_CORE) == "300", timeout_s=60, what="300 units again"
    )
    # running pods keep their units (the kubelet's checkpoint), and new ones are admitted
    bed.make_pod("after-restart", cores=100)
    pod = bed.running("after-restart")
    grant = next(g for g in bed.agent.plugin.ledger.grants() if g.pod == "after-restart")
    assert [s.cores for s in grant.shares] == [100]
    assert grant.shares[0].index in (0, 2)  # free whole cards; card 3 is sick, card 1 shared
    assert pod["status"]["phase"] == "Running"
    for name in ("share-30", "share-50", "unplaced-20"):
        assert bed.pod(name)["status"]["phase"] == "Running"
