"""``gaia node-agent``: the one Gaia process on each GPU worker node.

It owns three jobs that share one view of the node's cards:

1. **Read** the cards every ``interval_s``: ``GpuReader.snapshot()`` (``gaia.node.gpus``: NVML,
   or ``nvidia-smi``), with their health and the processes on them.
2. **Serve the kubelet**: the device plugin (``gaia.node.deviceplugin``) advertises each card as
   100 ``gaia.io/gpu-core`` units, healthy or not as the last snapshot says, and grants
   containers their cards and limits through the enforcement (``gaia.node.vgpu``). The node's
   ``gaia.io/gpu-memory`` (MiB, the healthy cards' memory) is not a device list, so the agent
   writes it into the Node's status as an extended resource (``advertise_memory``), again each
   pass: a kubelet that starts with no checkpoint zeroes the extended resources it does not own.
3. **Publish** what the scheduler reads (``publish``: topology, model, health, NUMA and cores
   per card, as the Node's annotations and labels), rewrite ``gaia.io/gpu-used`` from the pods
   on the node once a difference has settled (``gpu_used``: it only grew before), sweep the
   grants of pods that left the node so the enforcement releases them, and every
   ``audit_s`` set back MPS limits a container changed through its own control socket and
   report processes that hold a context on a shared card outside MPS (no limit applies).

With ``--qos-device``/``--qos-link-mbit`` it also keeps the node's uplink shaped from the pods'
bandwidth quotas (``gaia.node.qos_loop``, its own task: it runs while no GPU is found too).

Every pass is level-triggered: it compares what it reads with what is there and writes only a
difference, so a pass that finds nothing new writes nothing, and a missed pass is made up by
the next. A failing pass (API server away, NVML error) is logged once per kind and retried on
the next tick; the device plugin keeps serving the last good view meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType

from gaia.kube.labels import GPU_USED_ANNOTATION
from gaia.kube.resources import GAIA_GPU_MEMORY, WHOLE_CARD
from gaia.node.deviceplugin import RESOURCES, DevicePluginServer, GpuPlugin, Inventory, Ledger
from gaia.node.gpu_used import DEFAULT_SETTLE_S, GpuUsedReconciler
from gaia.node.gpus import GpuReader, GpuSnapshot
from gaia.node.vgpu import StrayContext, stray_contexts

log = logging.getLogger(__name__)

Publish = Callable[[GpuSnapshot], Awaitable[object]]
DEFAULT_AUDIT_S = 30.0  # how often the MPS limits of shared cards are checked

# What the agent asks of the API server beyond its publisher (``publish.PUBLISHER_API_CALLS``),
# as (API group, resource, verb): the DaemonSet's ClusterRole allows exactly the union
# (tests/node/test_publish.py)
AGENT_API_CALLS = frozenset(
    {
        ("", "pods", "list"),  # the device plugin's pending containers, the sweep, gpu-used
        ("", "nodes", "get"),  # gpu-used and the memory resource compare before writing
        ("", "nodes", "patch"),  # gaia.io/gpu-used
        ("", "nodes/status", "patch"),  # gaia.io/gpu-memory
    }
)


class KubePods:
    """This node's pods, listed from the API server each time (the kubelet admits a pod it got
    from there, so a fresh list holds it)."""

    def __init__(self, client: AsyncClient, node_name: str) -> None:
        self._client = client
        self._node = node_name

    async def pods_on_node(self) -> list[Mapping[str, Any]]:
        pods = self._client.list(Pod, namespace="*", fields={"spec.nodeName": self._node})
        return [pod.to_dict() async for pod in pods]


def memory_amounts(snapshot: GpuSnapshot) -> tuple[int, int]:
    """MiB of GPU memory the node has (every card) and offers (its healthy cards)."""
    sick = {h.index for h in snapshot.health if not h.healthy}
    total = sum(card.memory_mib for card in snapshot.cards)
    healthy = sum(card.memory_mib for card in snapshot.cards if card.index not in sick)
    return total, healthy


class NodeAgent:
    """The agent's passes and the device plugin, run until ``stop`` is set (``run``)."""

    def __init__(
        self,
        *,
        node_name: str,
        reader: GpuReader,
        client: AsyncClient,
        plugin: GpuPlugin,
        servers: Sequence[DevicePluginServer],
        publish: Publish | None = None,
        interval_s: float = 5.0,
        used_settle_s: float = DEFAULT_SETTLE_S,
        audit_s: float = DEFAULT_AUDIT_S,
        nvml: Any = None,
    ) -> None:
        self.node_name = node_name
        self._reader = reader
        self._client = client
        self._pods = KubePods(client, node_name)
        self.plugin = plugin
        self.servers = tuple(servers)
        self._publish = publish
        self._interval_s = interval_s
        self._failing: set[str] = set()
        self._used = GpuUsedReconciler(settle_s=used_settle_s)
        self._audit_s = audit_s
        self._audited = 0.0
        self._nvml = nvml
        self.strays: tuple[StrayContext, ...] = ()
        self.passes = 0

    async def run(self, stop: asyncio.Event) -> None:
        serving = [
            asyncio.create_task(server.run(stop), name=f"device-plugin {server.socket.name}")
            for server in self.servers
        ]
        try:
            while not stop.is_set():
                await self.run_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._interval_s)
        finally:
            stop.set()
            await asyncio.gather(*serving)

    async def run_once(self) -> None:
        snapshot = await self._step("read the GPUs", asyncio.to_thread(self._reader.snapshot))
        if snapshot is not None:
            await self.plugin.update(
                Inventory.of(snapshot.cards, snapshot.health), snapshot.topology
            )
            if self._publish is not None:
                await self._step("publish the GPUs", self._publish(snapshot))
        pods = await self._step("list this node's pods", self._pods.pods_on_node())
        if pods is not None:
            await self._step("sweep the grants", self.sweep(pods))
        # one read of the Node serves both writes below; each is a patch the API server checks
        node = await self._step("read the Node", self._client.get(Node, name=self.node_name))
        if node is not None and pods is not None:
            await self._step("reconcile gaia.io/gpu-used", self.reconcile_used(node, pods))
        if node is not None and snapshot is not None:
            await self._step("advertise GPU memory", self.advertise_memory(node, snapshot))
        if time.monotonic() - self._audited >= self._audit_s:
            self._audited = time.monotonic()
            await self._step("audit the MPS limits", self.audit_limits())
            await self._step("look for contexts outside MPS", self.find_strays())
        self.passes += 1

    async def _step(self, what: str, work: Awaitable[Any]) -> Any:
        try:
            result = await work
        except Exception as exc:
            if what not in self._failing:  # one line per outage, not one per pass
                log.warning("node agent: could not %s: %s", what, exc)
                self._failing.add(what)
            return None
        if what in self._failing:
            log.info("node agent: %s works again", what)
            self._failing.discard(what)
        return result

    async def advertise_memory(self, node: Node, snapshot: GpuSnapshot) -> bool:
        """Write the node's ``gaia.io/gpu-memory``, capacity (every card) and allocatable (the
        healthy ones, as the kubelet does for device plugins), when they differ; True when it
        wrote."""
        total, healthy = (str(amount) for amount in memory_amounts(snapshot))
        status = node.status
        capacity = (status.capacity or {}) if status else {}
        allocatable = (status.allocatable or {}) if status else {}
        if capacity.get(GAIA_GPU_MEMORY) == total and allocatable.get(GAIA_GPU_MEMORY) == healthy:
            return False
        await self._client.patch(
            Node.Status,
            name=self.node_name,
            obj={
                "status": {
                    "capacity": {GAIA_GPU_MEMORY: total},
                    "allocatable": {GAIA_GPU_MEMORY: healthy},
                }
            },
            patch_type=PatchType.MERGE,
        )
        log.info(
            "node %s: %s = %s MiB (%s MiB on healthy cards)",
            self.node_name,
            GAIA_GPU_MEMORY,
            total,
            healthy,
        )
        return True

    async def sweep(self, pods: Sequence[Mapping[str, Any]]) -> int:
        """Release the grants of pods no longer on the node; how many."""
        live = [
            str((pod.get("metadata") or {}).get("uid", ""))
            for pod in pods
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        gone = await self.plugin.forget_gone(live)
        for granted in gone:
            log.info(
                "released %s (%s/%s left the node)",
                granted.allocation_id,
                granted.namespace,
                granted.pod,
            )
        return len(gone)

    async def audit_limits(self) -> list[str]:
        """Set back the MPS limits a container changed through its own control socket
        (``vgpu.MpsEnforcement.audit``); the allocations whose limits had drifted."""
        audit = getattr(self.plugin.enforcement, "audit", None)
        if audit is None:
            return []
        drifted = []
        for granted in self.plugin.ledger.grants():
            if all(share.cores >= WHOLE_CARD for share in granted.shares):
                continue  # whole cards run without MPS
            changes = await asyncio.to_thread(audit, granted.allocation_id)
            if changes:
                log.warning(
                    "%s/%s container %s changed its own MPS limits (%s): set back",
                    granted.namespace,
                    granted.pod,
                    granted.container,
                    "; ".join(changes),
                )
                drifted.append(granted.allocation_id)
        return drifted

    async def find_strays(self) -> tuple[StrayContext, ...]:
        """Processes on shared cards that hold a plain CUDA context outside MPS, hence no limit
        (``vgpu.stray_contexts``): each is logged once, with its card and memory. Reported, not
        ended: which process it is (a container that left MPS on purpose, or a tool an operator
        runs on the host) is for a person to judge."""
        shared = {
            share.uuid
            for granted in self.plugin.ledger.grants()
            for share in granted.shares
            if share.cores < WHOLE_CARD
        }
        if not shared:
            self.strays = ()
            return ()
        found = await asyncio.to_thread(stray_contexts, shared_uuids=shared, nvml=self._nvml)
        for stray in set(found) - set(self.strays):
            log.warning(
                "process %s holds a GPU context on shared card %s outside MPS (%s MiB): it is "
                "not held to any share's limit",
                stray.pid,
                stray.uuid,
                stray.used_mib if stray.used_mib is not None else "?",
            )
        self.strays = found
        return found

    async def reconcile_used(self, node: Node, pods: Sequence[Mapping[str, Any]]) -> bool:
        """Rewrite the Node's ``gaia.io/gpu-used`` from its pods once a difference has settled
        (``gaia.node.gpu_used``); True when it wrote."""
        patch = self._used.patch(node.to_dict(), pods, self.plugin.ledger.grants())
        if patch is None:
            return False
        try:
            await self._client.patch(
                Node, name=self.node_name, obj=patch, patch_type=PatchType.MERGE
            )
        except ApiError as exc:
            if exc.status.code == 409:  # a bind changed the node meanwhile: look again next pass
                return False
            raise
        self._used.written()
        log.info(
            "node %s: %s rewritten from its pods: %s",
            self.node_name,
            GPU_USED_ANNOTATION,
            patch["metadata"]["annotations"][GPU_USED_ANNOTATION],
        )
        return True


def build_agent(
    *,
    node_name: str,
    reader: GpuReader,
    client: AsyncClient,
    enforcement: Any,
    plugin_dir: Path,
    state_dir: Path,
    publish: Publish | None = None,
    interval_s: float = 5.0,
    poll_s: float = 1.0,
    used_settle_s: float = DEFAULT_SETTLE_S,
    audit_s: float = DEFAULT_AUDIT_S,
    nvml: Any = None,
) -> NodeAgent:
    """A ``NodeAgent`` with its device plugin, ledger in ``state_dir``."""
    plugin = GpuPlugin(
        pods=KubePods(client, node_name),
        enforcement=enforcement,
        ledger=Ledger(state_dir / "grants.json"),
    )
    servers = [
        DevicePluginServer(service=plugin.service(resource), plugin_dir=plugin_dir, poll_s=poll_s)
        for resource in RESOURCES
    ]
    return NodeAgent(
        node_name=node_name,
        reader=reader,
        client=client,
        plugin=plugin,
        servers=servers,
        publish=publish,
        interval_s=interval_s,
        used_settle_s=used_settle_s,
        audit_s=audit_s,
        nvml=nvml,
    )


NO_GPU_RETRY_S = 60.0


async def serve_node(
    *,
    node_name: str,
    kubeconfig: Path | None,
    plugin_dir: Path,
    state_dir: Path,
    enforcement_mode: str,
    dev_root: Path,
    interval_s: float,
    stop: asyncio.Event,
    qos_device: str | None = None,
    qos_link: int = 0,
) -> None:
    """What ``gaia node-agent`` runs: find the GPUs (again each minute while there are none:
    a driver may load after the agent starts), then the agent until ``stop``. With
    ``qos_device`` (and ``qos_link``, bytes/s), the bandwidth pass (``gaia.node.qos_loop``)
    shapes that uplink from the node's pods meanwhile, from the start: it needs no GPU."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    client = AsyncClient(config, field_manager="gaia-node-agent", trust_env=False)
    shaping = None
    if qos_device is not None:
        from gaia.node.qos_loop import NodeQos

        shaper = NodeQos(
            device=qos_device,
            link=qos_link,
            pods=KubePods(client, node_name),
            interval_s=interval_s,
        )
        shaping = asyncio.create_task(shaper.run(stop), name=f"qos {qos_device}")
    try:
        await _serve_gpus(
            node_name=node_name,
            client=client,
            plugin_dir=plugin_dir,
            state_dir=state_dir,
            enforcement_mode=enforcement_mode,
            dev_root=dev_root,
            interval_s=interval_s,
            stop=stop,
        )
    finally:
        if shaping is not None:
            stop.set()  # the GPU side ended (stopped or failed): the shaping loop ends with it
            await shaping


async def _serve_gpus(
    *,
    node_name: str,
    client: AsyncClient,
    plugin_dir: Path,
    state_dir: Path,
    enforcement_mode: str,
    dev_root: Path,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    from gaia.node.gpus import open_gpus
    from gaia.node.vgpu import enforcement_from

    reader = None
    while reader is None and not stop.is_set():
        reader = await asyncio.to_thread(open_gpus)
        if reader is None:
            log.warning(
                "no NVIDIA GPU found on %s (NVML, nvidia-smi); looking again in %.0f s",
                node_name,
                NO_GPU_RETRY_S,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), NO_GPU_RETRY_S)
    if reader is None:
        return
    from gaia.node.publish import NodePublisher

    publisher = NodePublisher(client=client, node_name=node_name, reader=reader)
    try:
        agent = build_agent(
            node_name=node_name,
            reader=reader,
            client=client,
            publish=publisher.publish,
            enforcement=enforcement_from(
                enforcement_mode, dev_root=dev_root, state_root=state_dir / "vgpu"
            ),
            plugin_dir=plugin_dir,
            state_dir=state_dir,
            interval_s=interval_s,
        )
        await agent.run(stop)
    finally:
        reader.close()
