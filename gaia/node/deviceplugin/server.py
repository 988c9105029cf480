"""The device plugin's gRPC side: the kubelet's ``DevicePlugin`` service, once for
``gaia.io/gpu-core`` and once for ``nvidia.com/gpu`` (``units``), and the life around each
(serve on a unix socket, register, notice the kubelet restarting).

``GpuPlugin`` holds what both resources share (the cards, their health, the ledger, one lock:
a grant of one resource changes what the other may give) and makes one servicer per resource
(``service``). **Each servicer** (``k8s.io/kubelet`` device plugin API v1beta1):

- ``GetDevicePluginOptions``: PreStartContainer and GetPreferredAllocation are both wanted.
- ``ListAndWatch``: the devices of ``Inventory.units``, sent again whenever the agent
  reports a change of cards or health (``update``), so a sick card's units reach the kubelet
  within one agent pass and leave the node's allocatable.
- ``GetPreferredAllocation``: the container's cards as ``assign.choose_units`` decides (the pod's
  ``gaia.io/gpu-ids``, else the Gaia tree); remembered per unit set for ``Allocate``.
- ``Allocate``: ``assign.check_units`` judges the kubelet's pick (a refusal is a
  FAILED_PRECONDITION whose message becomes the pod's admission error), ``assign.shares_for``
  computes the limits, the enforcement (``gaia.node.vgpu``) turns them into the container's
  environment, mounts and device nodes, and the grant goes into the ``Ledger``.
- ``PreStartContainer``: the grant of these units, made real by ``Enforcement.prepare`` before
  the container starts (each start, restarts included).

The kubelet calls these one container at a time; ``_serial`` keeps it so even if a kubelet
did not, because the choice of one container depends on the grants before it.

**Life** (``DevicePluginServer.run``, one per resource): serve on
``<plugin dir>/gaia-gpu-core.sock`` (``gaia-nvidia-gpu.sock``), then
``Register`` with ``<plugin dir>/kubelet.sock`` (retried each ``poll_s`` until the kubelet
answers). A starting kubelet deletes every socket in that folder and makes a new
``kubelet.sock``: so every ``poll_s`` the server checks that its socket is still there and
that ``kubelet.sock`` is the file it registered with; if not, it starts over (new socket, new
registration). That is the protocol's own signal (the kubelet's comment: "Device plugins can
monitor this and use it as a signal to re-register with the new Kubelet").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc

from gaia.kube.labels import GPU_IDS_ANNOTATION
from gaia.node.deviceplugin.assign import (
    AllocationRefused,
    PendingContainer,
    allocation_id,
    check_units,
    choose_units,
    next_container,
    pending_containers,
    shares_for,
)
from gaia.node.deviceplugin.ledger import Granted, Ledger
from gaia.node.deviceplugin.units import CARD, CORE, HEALTHY, UNHEALTHY, Inventory
from gaia.node.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from gaia.node.vgpu import Enforcement, EnforcementError
from gaia.scheduler.links import GpuTopology

log = logging.getLogger(__name__)

API_VERSION = "v1beta1"
KUBELET_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = "kubelet.sock"
SOCKET_NAMES = {CORE: "gaia-gpu-core.sock", CARD: "gaia-nvidia-gpu.sock"}


class PodSource(Protocol):
    """The pods bound to this node, as Kubernetes documents (``gaia.node.agent`` lists them
    from the API server)."""

    async def pods_on_node(self) -> list[Mapping[str, Any]]: ...


class GpuPlugin:
    """What the two resources' services share (see the module docstring)."""

    def __init__(self, *, pods: PodSource, enforcement: Enforcement, ledger: Ledger) -> None:
        self.pods = pods
        self.enforcement = enforcement
        self.ledger = ledger
        self.inventory = Inventory()
        self.topology: GpuTopology | None = None
        self.version = 0
        self.changed = asyncio.Condition()
        self.preferred: dict[tuple[str, frozenset[str]], PendingContainer] = {}
        self.serial = asyncio.Lock()

    def service(self, resource: str) -> ResourceService:
        return ResourceService(self, resource)

    async def update(self, inventory: Inventory, topology: GpuTopology | None) -> bool:
        """The agent's latest view of the cards; True (and ListAndWatch sends) when it changed."""
        self.topology = topology
        if inventory == self.inventory:
            return False
        async with self.changed:
            self.inventory = inventory
            self.version += 1
            self.changed.notify_all()
        return True

    async def pending(self) -> list[PendingContainer]:
        try:
            return pending_containers(await self.pods.pods_on_node())
        except Exception as exc:  # the API server is away: choose without knowing the pod
            log.warning("cannot list this node's pods (%s): allocating without the pod's view", exc)
            return []

    async def forget_gone(self, live_uids: Sequence[str]) -> list[Granted]:
        """Release the grants of pods that left the node (the agent's sweep)."""
        async with self.serial:
            gone = self.ledger.forget_gone(live_uids)
        for granted in gone:
            try:
                await asyncio.to_thread(
                    self.enforcement.release, allocation_id=granted.allocation_id
                )
            except EnforcementError as exc:
                log.error("releasing %s failed: %s", granted.allocation_id, exc)
        return gone


class ResourceService(api_pb2_grpc.DevicePluginServicer):
    """The ``DevicePlugin`` service of one resource (see the module docstring)."""

    def __init__(self, shared: GpuPlugin, resource: str) -> None:
        self._shared = shared
        self.resource = resource

    async def GetDevicePluginOptions(self, request: Any, context: Any) -> Any:
        return api_pb2.DevicePluginOptions(
            pre_start_required=True, get_preferred_allocation_available=True
        )

    async def ListAndWatch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        shared = self._shared
        seen = -1
        while True:
            async with shared.changed:
                while shared.version == seen:
                    await shared.changed.wait()
                seen = shared.version
                units = shared.inventory.units(self.resource)
            log.info(
                "ListAndWatch %s: %d devices, %d unhealthy",
                self.resource,
                len(units),
                sum(not u.healthy for u in units),
            )
            yield api_pb2.ListAndWatchResponse(
                devices=[
                    api_pb2.Device(
                        ID=unit.id,
                        health=HEALTHY if unit.healthy else UNHEALTHY,
                        topology=(
                            api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=unit.numa_node)])
                            if unit.numa_node is not None
                            else None
                        ),
                    )
                    for unit in units
                ]
            )

    async def GetPreferredAllocation(self, request: Any, context: Any) -> Any:
        shared = self._shared
        async with shared.serial:
            candidates = await shared.pending()
            claimed = shared.ledger.keys()
            answers = []
            for asked in request.container_requests:
                size = int(asked.allocation_size)
                container = next_container(
                    candidates, resource=self.resource, size=size, allocated=claimed
                )
                try:
                    ids = choose_units(
                        inventory=shared.inventory,
                        topology=shared.topology,
                        resource=self.resource,
                        available=list(asked.available_deviceIDs),
                        must_include=list(asked.must_include_deviceIDs),
                        size=size,
                        container=container,
                        memory_used=shared.ledger.memory_used(),
                        busy=shared.ledger.busy_for(self.resource),
                    )
                except ValueError as exc:  # devices of cards this node no longer has
                    log.warning("no preference for %d x %s: %s", size, self.resource, exc)
                    ids = []
                if container is not None:
                    claimed.add(container.key)
                    if ids:
                        shared.preferred[(self.resource, frozenset(ids))] = container
                log.info(
                    "preferred %d x %s for %s: %s",
                    size,
                    self.resource,
                    container.name if container else "an unknown container",
                    _cards_text(shared.inventory, ids) or "the kubelet's choice",
                )
                answers.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
            return api_pb2.PreferredAllocationResponse(container_responses=answers)

    async def Allocate(self, request: Any, context: Any) -> Any:
        async with self._shared.serial:
            responses = []
            for asked in request.container_requests:
                ids = list(asked.devices_ids)
                try:
                    responses.append(await self._allocate(ids))
                except AllocationRefused as exc:
                    log.warning("Allocate refused: %s", exc)
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            return api_pb2.AllocateResponse(container_responses=responses)

    async def _allocate(self, ids: Sequence[str]) -> Any:
        shared = self._shared
        ledger = shared.ledger
        container = shared.preferred.pop((self.resource, frozenset(ids)), None)
        if container is None:
            container = next_container(
                await shared.pending(),
                resource=self.resource,
                size=len(ids),
                allocated=ledger.keys(),
            )
        per_card = check_units(
            inventory=shared.inventory,
            resource=self.resource,
            device_ids=ids,
            container=container,
            busy=ledger.busy_for(self.resource),
        )
        previous = ledger.by_units(ids)
        used = ledger.memory_used()
        if previous is not None:  # the same units again (a retried admission): not counted twice
            for share in previous.shares:
                used[share.index] = used.get(share.index, 0) - share.memory_mib
        shares = shares_for(
            inventory=shared.inventory, per_card=per_card, container=container, memory_used=used
        )
        grant_id = allocation_id(container, ids)
        grant = shared.enforcement.grant(allocation_id=grant_id, shares=shares)
        ledger.add(
            Granted(
                allocation_id=grant_id,
                uid=container.uid if container else "",
                namespace=container.namespace if container else "",
                pod=container.pod if container else "",
                container=container.container if container else "",
                device_ids=tuple(sorted(ids)),
                shares=tuple(shares),
                resource=self.resource,
            )
        )
        log.info(
            "allocated %s: %s",
            container.name if container else grant_id,
            ", ".join(f"GPU{s.index} {s.cores}/100 {s.memory_mib} MiB" for s in shares),
        )
        return api_pb2.ContainerAllocateResponse(
            envs=dict(grant.envs),
            mounts=[
                api_pb2.Mount(
                    container_path=m.container_path, host_path=m.host_path, read_only=m.read_only
                )
                for m in grant.mounts
            ],
            devices=[
                api_pb2.DeviceSpec(
                    container_path=d.container_path,
                    host_path=d.host_path,
                    permissions=d.permissions,
                )
                for d in grant.devices
            ],
            annotations={GPU_IDS_ANNOTATION: ",".join(str(s.index) for s in shares)},
        )

    async def PreStartContainer(self, request: Any, context: Any) -> Any:
        shared = self._shared
        ids = list(request.devices_ids)
        granted = shared.ledger.by_units(ids)
        if granted is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no grant of this node's device plugin covers "
                f"{_cards_text(shared.inventory, ids)}; its ledger was lost: delete the pod to "
                "have it admitted again",
            )
            raise AssertionError("unreachable")  # abort raises
        try:
            await asyncio.to_thread(
                shared.enforcement.prepare,
                allocation_id=granted.allocation_id,
                shares=granted.shares,
            )
        except EnforcementError as exc:
            log.error("PreStartContainer for %s failed: %s", granted.allocation_id, exc)
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return api_pb2.PreStartContainerResponse()


def _cards_text(inventory: Inventory, ids: Sequence[str]) -> str:
    try:
        per_card = inventory.per_card(ids)
    except ValueError:
        return f"{len(ids)} unknown units"
    return ", ".join(f"GPU{i} x{len(units)}" for i, units in per_card.items())


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


class DevicePluginServer:
    """Serves one resource's service to the kubelet and keeps it registered (module
    docstring)."""

    def __init__(
        self,
        *,
        service: ResourceService,
        plugin_dir: Path = KUBELET_PLUGIN_DIR,
        poll_s: float = 1.0,
    ) -> None:
        self._service = service
        self._dir = plugin_dir
        self._socket = plugin_dir / SOCKET_NAMES[service.resource]
        self._resource = service.resource
        self._poll_s = poll_s
        self.registrations = 0  # how many times the kubelet accepted us (tests read it)
        self.registered = asyncio.Event()

    @property
    def socket(self) -> Path:
        return self._socket

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            server, serving = await self._serve()
            try:
                kubelet = await self._register(stop)
                if kubelet is not None:
                    await self._watch(stop, kubelet)
            finally:
                self.registered.clear()
                await server.stop(grace=0.5)
                with contextlib.suppress(FileNotFoundError):
                    if _identity(self._socket) == serving:  # never a successor's socket
                        self._socket.unlink()

    async def _serve(self) -> tuple[Any, tuple[int, int] | None]:
        self._dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._socket.unlink()  # ours from a run that died; nobody else names it so
        server = grpc.aio.server()
        api_pb2_grpc.add_DevicePluginServicer_to_server(self._service, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix://{self._socket}")
        await server.start()
        os.chmod(self._socket, 0o600)  # only root (the kubelet) talks to it
        log.info("device plugin for %s serving on %s", self._resource, self._socket)
        return server, _identity(self._socket)

    async def _register(self, stop: asyncio.Event) -> tuple[int, int] | None:
        """Register until the kubelet accepts; the identity of the kubelet.sock that did, or
        None when our own socket vanished first (a kubelet starting: serve again)."""
        kubelet_socket = self._dir / KUBELET_SOCKET
        ours = _identity(self._socket)
        complained = False
        while not stop.is_set():
            if _identity(self._socket) != ours:
                return None
            kubelet = _identity(kubelet_socket)
            if kubelet is not None:
                try:
                    async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
                        stub = api_pb2_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
                        await stub.Register(
                            api_pb2.RegisterRequest(
                                version=API_VERSION,
                                endpoint=self._socket.name,
                                resource_name=self._resource,
                                options=api_pb2.DevicePluginOptions(
                                    pre_start_required=True,
                                    get_preferred_allocation_available=True,
                                ),
                            ),
                            timeout=10,
                        )
                except grpc.aio.AioRpcError as exc:
                    if not complained:
                        log.warning(
                            "the kubelet refused or did not answer Register: %s", exc.details()
                        )
                        complained = True
                else:
                    self.registrations += 1
                    self.registered.set()
                    log.info("registered %s with the kubelet (%s)", self._resource, kubelet_socket)
                    return kubelet
            elif not complained:
                log.info("waiting for the kubelet's %s", kubelet_socket)
                complained = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)
        return None

    async def _watch(self, stop: asyncio.Event, kubelet: tuple[int, int]) -> None:
        ours = _identity(self._socket)
        kubelet_socket = self._dir / KUBELET_SOCKET
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)
            if _identity(self._socket) != ours or _identity(kubelet_socket) != kubelet:
                log.info("the kubelet restarted (its socket folder was renewed): registering again")
                return
