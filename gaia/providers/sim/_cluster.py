"""``SimCluster``: the ``ClusterProvider`` port over an in-process simulated cluster.

**State and time.** All state (nodes, instances, services, configs, the event ring) lives in
plain records behind one lock; every public method takes the lock, so two threads may call in at
once. Time is the injected ``Clock``'s. Nothing runs in the background: whatever happens later
(a pull finishing, a container starting, a probe failing) is a *timed transition* on a heap, and
every public method first runs, in time order, the transitions due by ``clock.now()``; each one
happens at its own due time, so events carry the instant they would have happened at. With a
``ManualClock`` nothing moves until a test steps the clock (and calls ``advance()`` or any
method); with the ``RealClock`` the cluster follows wall time. Each instance carries a *token*
for its current container attempt: a kill, restart or upgrade takes a new token, and the old
attempt's pending transitions find a stale token and do nothing.

**Instance lifecycle** (``SANDBOX_S`` or ``WATCH_S``, ``CREATE_S``, ``START_S`` apart; each
constant says what real work it stands for)::

    create_instance -> Scheduled -> Pulling/Pulled (image layers, see _images) -> Created
        -> Started (RUNNING) -> ready (at once, or after the readiness probe's initial delay)

    a missing config/secret at Created       -> FAILED (ConfigError)
    crash / oom_kill / liveness / image pull -> FAILED with the cause and exit code
    lose_node                                -> every instance on it FAILED (NodeLost)

The provider never restarts anything on its own: the platform calls ``restart_instance`` (where
it is, straight to Created; the image is pulled again only when it is not all on the node, as
after an image pull failure) or ``replace_image`` (in place: same node, pod IP and GPUs). A
failed instance keeps its resources, IP and GPUs until it is deleted. ``delete_instance``
releases them at once: there is no Terminating grace period, so a deleted instance's name, IP
and GPUs are free for the very next call.

**Pre-pull** (``prewarm_image``, the port's optional ``ImagePrewarmer``): the platform names
an image and the nodes that will soon run it (the later batches of a gray upgrade); those nodes
fetch its missing layers now, so the instance's own pull, when its turn comes, finds the image
"already present on machine". A real cluster maps the same call to the P2P pre-warm of issue 17
(``gaia.controllers.swarm``: a prewarm job the nodes' agents pull); here it is a pull with no
instance behind it (``_images``), begun ``WATCH_S`` after the call, as a kubelet learns of a
pod: a node learns of a wish no sooner than of an instance (a real agent learns at its next
heartbeat, later still), so a pre-pull never beats the instance's own pull to the link.

**Scale.** 2,000 nodes and 20,000 instances fit in well under 200 MiB: records are slotted,
instances are indexed by namespace and by (namespace, app), the event ring and each instance's
log buffer are bounded, and metrics and periodic log lines are computed on read (``_workload``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import heapq
import itertools
import math
import re
import threading
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any

from gaia.clock import Clock, RealClock
from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.gpu_links import LinkMatrix, normalize_matrix, preset
from gaia.domain.registry import RegistryCaller, Scope, grant
from gaia.domain.resources import DIMENSIONS, ResourceVector, describe
from gaia.kube.labels import GPU_COUNT_LABEL, GPU_MODEL_LABEL, VERSION_LABEL, ZONE_LABEL
from gaia.providers.port import (
    ChangeOf,
    ClusterEvent,
    ClusterHealth,
    ConfigData,
    ControlPlaneSample,
    Endpoint,
    ExecResult,
    Failure,
    FailureCause,
    Gpu,
    HealthState,
    Instance,
    InstancePhase,
    InstanceSpec,
    InstanceState,
    LogLine,
    MetricSample,
    NetworkMode,
    Node,
    NodeSpec,
    ProbeKind,
    ProbeSpec,
    Service,
    ServiceSpec,
)
from gaia.providers.sim import _control_plane, _exec
from gaia.providers.sim._events import EventRing
from gaia.providers.sim._images import Layer, LayerCatalog, NodeImages, Pull
from gaia.providers.sim._network import CLUSTER_DNS_IP, PodRange, ServiceRange, host_ip, pod_prefix
from gaia.providers.sim._records import (
    InstanceRecord,
    NodeRecord,
    instance_shape,
    instance_view,
    node_view,
)
from gaia.providers.sim._spec import (
    DEFAULT_GPU_MEMORY_MIB,
    DEFAULT_GPU_MODEL,
    MAX_GPUS_PER_NODE,
    GpuPlace,
    check_labels,
    gpu_places,
    validate_sim_spec,
)
from gaia.providers.sim._workload import (
    LoadOverride,
    Usage,
    banner,
    check_load_percent,
    check_profile,
    log_interval_s,
    overridden,
    periodic_line,
    usage,
)
from gaia.scheduler.links import parse_nvidia_smi_topo

# The simulated kubelet's fixed steps, each what a real node spends on it (not a poll period:
# the sim has none; a step happens at its own time and is seen at once, as a watch reports it).
# A new pod: the binding reaches the kubelet through its watch (milliseconds), then the kubelet
# makes the pod's sandbox (the pause container and the CNI's network setup), the bulk of this.
SANDBOX_S = 0.5
# A change to a pod that runs (an image swapped in place, a restart that must pull again): the
# kubelet hears of it through its watch and acts at once; tens of milliseconds on a healthy
# cluster. (Before issue 22 this was the 0.5 s of a new pod's sandbox, which an existing pod
# does not make again.) The old container's stop is not modelled: it exits on SIGTERM at once.
WATCH_S = 0.05
CREATE_S = 0.2  # CRI CreateContainer once the image is unpacked (a snapshot, the OCI spec)
START_S = 0.3  # CRI StartContainer (runc); the start is reported at once, as evented PLEG does
PULL_FAIL_S = 1.0  # a registry answering "manifest unknown"
MAX_LOG_TAIL = 10_000
CONTAINER = "main"
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL = {d[0]: d[3] for d in DIMENSIONS}
_NODE_DIMENSIONS = tuple(d[0] for d in DIMENSIONS if d[0] not in ("cloud_disk", "shared_disk"))
_FAULTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # kind -> (required fields, optional fields)
    "crash": (frozenset({"namespace", "instance"}), frozenset({"exit_code", "message"})),
    "oom": (frozenset({"namespace", "instance"}), frozenset()),
    "liveness": (frozenset({"namespace", "instance"}), frozenset()),
    "image_pull": (frozenset({"image"}), frozenset({"message"})),
    "clear_image_pull": (frozenset({"image"}), frozenset()),
    "node_lost": (frozenset({"node"}), frozenset()),
    "node_restored": (frozenset({"node"}), frozenset()),
    "load": (frozenset({"namespace", "app"}), frozenset({"cpu_percent", "memory_percent"})),
    "clear_load": (frozenset({"namespace", "app"}), frozenset()),
}

Step = Callable[[float, InstanceRecord], None]


@dataclasses.dataclass(slots=True, eq=False)
class _Prewarm:
    """One owner's pre-pull: the image, the nodes asked for, the pulls still downloading."""

    image: str
    nodes: frozenset[str]
    pulls: dict[str, Pull] = dataclasses.field(default_factory=dict)  # node -> pull in flight
    # nodes told of the wish that have not begun their pull yet: node -> when it begins
    # (``WATCH_S`` after the call that first named it with this image)
    pending: dict[str, float] = dataclasses.field(default_factory=dict)


class _Timeline:
    """Timed transitions, run in time order (ties in the order they were scheduled)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn, args))

    def next_at(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_until(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            t, _, fn, args = heapq.heappop(heap)
            fn(t, *args)


class SimCluster:
    """A simulated cluster (see the module docstring); ``kind = "sim"``."""

    kind = "sim"

    def __init__(
        self, *, name: str, spec: dict[str, Any], zone: str = "", clock: Clock | None = None
    ) -> None:
        self.name = name
        self.sim_spec = validate_sim_spec(spec)
        self.zone = zone
        self.clock: Clock = clock or RealClock()
        # False cuts the cluster off: health says Unreachable, every port call raises
        self.reachable = True
        self._t0 = self.clock.now()
        self._lock = threading.RLock()
        self._timeline = _Timeline()
        self._events = EventRing()
        self._catalog = LayerCatalog()
        self._failing_images: dict[str, str] = {}
        self._tokens = itertools.count(1)
        self._nodes: dict[str, NodeRecord] = {}
        self._next_node_index = 0
        self._by_ns: dict[str, dict[str, InstanceRecord]] = {}
        self._by_app: dict[tuple[str, str], dict[str, InstanceRecord]] = {}
        self._services: dict[tuple[str, str], tuple[ServiceSpec, str]] = {}
        self._service_ips = ServiceRange()
        self._configs: dict[tuple[str, bool, str], ConfigData] = {}
        self._quotas: dict[str, ResourceVector] = {}  # namespace -> mirrored hard limits
        self._loads: dict[tuple[str, str], LoadOverride] = {}  # (namespace, app) -> override
        # (namespace, owner) -> the image pre-pulled for that owner and its pulls in flight
        self._prewarms: dict[tuple[str, str], _Prewarm] = {}
        # what the simulated API server has served: the port calls, plus the nodes' own
        # traffic (status and lease updates) added up to the last control-plane reading
        self._api_requests = 0.0
        self._api_counted_to = 0.0
        # instance changes so far, and who hears of each (``watch_changes``)
        self.changes = 0
        self._listeners: list[Callable[[ChangeOf], None]] = []
        self._build_nodes()

    # ------------------------------------------------------------ time

    def _now_s(self) -> float:
        return (self.clock.now() - self._t0).total_seconds()

    def _dt(self, t: float) -> dt.datetime:
        return self._t0 + dt.timedelta(seconds=t)

    def _catch_up(self) -> float:
        now = self._now_s()
        self._timeline.run_until(now)
        return now

    def _enter(self) -> float:
        """Every port call: refuse when cut off, then bring the simulation up to now."""
        if not self.reachable:
            raise ConnectionError("simulated cluster is cut off")
        self._api_requests += 1
        return self._catch_up()

    def advance(self) -> None:
        """Run every transition due by ``clock.now()`` (port calls do this themselves)."""
        with self._lock:
            self._catch_up()

    def _after(self, t: float, rec: InstanceRecord, step: Step) -> None:
        self._timeline.at(t, self._fire, step, rec, rec.token)

    @staticmethod
    def _fire(t: float, step: Step, rec: InstanceRecord, token: int) -> None:
        if rec.token == token:  # else the attempt it belonged to is over
            step(t, rec)

    # ------------------------------------------------------------ events

    def _event(
        self, t: float, kind: str, namespace: str, name: str, reason: str, message: str, type: str
    ) -> None:
        self._events.emit(
            at=self._dt(t),
            namespace=namespace,
            kind=kind,
            name=name,
            reason=reason,
            message=message,
            type=type,
        )

    def _instance_event(
        self, t: float, rec: InstanceRecord, reason: str, message: str, type: str = "Normal"
    ) -> None:
        self._event(t, "Instance", rec.spec.namespace, rec.name, reason, message, type)
        self._changed(rec.spec)

    # ------------------------------------------------------------ change notification

    def _changed(self, spec: InstanceSpec) -> None:
        """An instance changed as a watcher would see it (a phase, readiness, gone): count it
        and tell the listeners (``watch_changes``) whose it is, as an informer's event handler
        would."""
        self.changes += 1
        of: ChangeOf = (spec.namespace, spec.app)
        for listener in self._listeners:
            listener(of)

    def watch_changes(self, listener: Callable[[ChangeOf], None]) -> None:
        """Call ``listener((namespace, app))`` (from whichever thread moves the simulation) at
        every change of an instance of that app; it must be quick and thread-safe (a loop's
        ``wake``)."""
        self._listeners.append(listener)

    def next_transition_at(self) -> dt.datetime | None:
        """When the simulation next has something scheduled (a pull, a start, a probe...),
        or None: what an event-driven driver of simulated time steps the clock to."""
        with self._lock:
            pending = self._timeline.next_at()
        return None if pending is None else self._dt(pending)

    def _node_event(
        self, t: float, node: NodeRecord, reason: str, message: str, type: str = "Normal"
    ) -> None:
        self._event(t, "Node", "", node.name, reason, message, type)

    # ------------------------------------------------------------ health

    async def check_health(self, *, timeout: float) -> ClusterHealth:
        if not self.reachable:
            return ClusterHealth(HealthState.UNREACHABLE, "simulated cluster is cut off")
        with self._lock:
            return ClusterHealth(HealthState.HEALTHY, f"{len(self._nodes)} simulated nodes")

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------ nodes

    def _build_nodes(self) -> None:
        s = self.sim_spec
        cards = s["gpus"]
        topology = s["gpu_topology"]
        if isinstance(topology, str):
            links = preset(topology, cards)
        else:
            links = tuple(tuple(row) for row in topology)
        text = s["nvidia_smi_topo"]
        places, guessed = gpu_places(
            links=links,
            cores=s["cpu"],
            source=parse_nvidia_smi_topo(text) if text.strip() else None,
            affinity=s["gpu_affinity"],
        )
        # one capacity vector, GPU tuple and matrix shared by all the spec's nodes
        capacity = ResourceVector(
            cpu=s["cpu"] * 1000,
            memory=s["memory_mib"],
            local_disk=s["local_disk_gib"],
            bandwidth=s["bandwidth_mbps"],
            gpu=cards * 100,
            gpu_memory=cards * s["gpu_memory_mib"],
        )
        gpus = _gpu_tuple(s["gpu_model"], s["gpu_memory_mib"], places)
        zone = s["zone"] or self.zone
        for i in range(s["nodes"]):
            node = self._add_record(
                name=f"{self.name}-node-{i}",
                capacity=capacity,
                gpus=gpus,
                links=links,
                zone=zone,
                labels=s["labels"],
            )
            if guessed and gpus and not isinstance(topology, str):
                self._say_affinity_derived(0.0, node)

    def _say_affinity_derived(self, t: float, node: NodeRecord) -> None:
        """A node whose GPUs' NUMA nodes and cores were guessed from an explicit link matrix
        says so: the guess is wrong on most real boards (see ``_spec``)."""
        self._node_event(
            t,
            node,
            "GpuAffinityDerived",
            f"Node {node.name}: the NUMA node and CPU cores of each GPU were derived from the "
            "GPU link matrix, which is often wrong (an NVLink board across two sockets reads as "
            "one NUMA node); give sim_spec.nvidia_smi_topo or sim_spec.gpu_affinity",
            "Warning",
        )

    def _add_record(
        self,
        *,
        name: str,
        capacity: ResourceVector,
        gpus: tuple[Gpu, ...],
        links: LinkMatrix,
        zone: str,
        labels: dict[str, str],
    ) -> NodeRecord:
        index = self._next_node_index
        pods = PodRange(pod_prefix(index))
        self._next_node_index += 1
        node_labels = {
            **labels,
            "kubernetes.io/hostname": name,
            ZONE_LABEL: zone,
        }
        if gpus:
            node_labels[GPU_MODEL_LABEL] = gpus[0].model
            node_labels[GPU_COUNT_LABEL] = str(len(gpus))
        node = NodeRecord(
            name=name,
            index=index,
            zone=zone,
            labels=node_labels,
            host_ip=host_ip(index),
            capacity=capacity,
            gpus=gpus,
            gpu_links=links,
            images=NodeImages(bandwidth_mbps=capacity.bandwidth),
            pods=pods,
        )
        self._nodes[name] = node
        return node

    def _node(self, name: str) -> NodeRecord:
        node = self._nodes.get(name)
        if node is None:
            raise NotFound(f"node {name} does not exist in cluster {self.name}")
        return node

    async def list_nodes(self) -> list[Node]:
        with self._lock:
            self._enter()
            return [node_view(n) for n in self._nodes.values()]

    async def add_node(self, spec: NodeSpec) -> Node:
        with self._lock:
            now = self._enter()
            if not isinstance(spec, NodeSpec):
                raise InvalidRequest("add_node takes a NodeSpec")
            if not isinstance(spec.name, str) or not _NODE_NAME.match(spec.name):
                raise InvalidRequest(
                    f"node name {spec.name!r} is invalid: use lowercase letters, digits, '-' "
                    "and '.', starting and ending with a letter or digit"
                )
            if spec.name in self._nodes:
                raise Conflict(f"node {spec.name} already exists in cluster {self.name}")
            limits = {
                "cpu_milli": (0, 1024 * 1000),
                "memory_mib": (0, 16 * 1024 * 1024),
                "local_disk_gib": (0, 1024 * 1024),
                "bandwidth_mbps": (1, 1_000_000),
                "gpus": (0, MAX_GPUS_PER_NODE),
                "gpu_memory_mib": (0, 1024 * 1024),
            }
            for field, (lower, upper) in limits.items():
                value = getattr(spec, field)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidRequest(f"node {field} must be an integer")
                if not lower <= value <= upper:
                    raise InvalidRequest(f"node {field} must be from {lower} to {upper}")
            if not isinstance(spec.zone, str) or len(spec.zone) > 63:
                raise InvalidRequest("node zone must be a string of at most 63 characters")
            if not isinstance(spec.gpu_model, str) or len(spec.gpu_model) > 63:
                raise InvalidRequest("node gpu_model must be a string of at most 63 characters")
            labels = check_labels(spec.labels, field="node labels")
            cards = spec.gpus
            if spec.gpu_links:
                links = normalize_matrix(spec.gpu_links, cards, field="gpu_links")
            else:
                links = preset("pcie-2socket", cards)
            places, guessed = gpu_places(links=links, cores=spec.cpu_milli // 1000)
            model = spec.gpu_model or self.sim_spec["gpu_model"] or DEFAULT_GPU_MODEL
            memory = spec.gpu_memory_mib or (DEFAULT_GPU_MEMORY_MIB if cards else 0)
            capacity = ResourceVector(
                cpu=spec.cpu_milli,
                memory=spec.memory_mib,
                local_disk=spec.local_disk_gib,
                bandwidth=spec.bandwidth_mbps,
                gpu=cards * 100,
                gpu_memory=cards * memory,
            )
            node = self._add_record(
                name=spec.name,
                capacity=capacity,
                gpus=_gpu_tuple(model, memory, places) if cards else (),
                links=links,
                zone=spec.zone or self.sim_spec["zone"] or self.zone,
                labels=labels,
            )
            if guessed and cards and spec.gpu_links:
                self._say_affinity_derived(now, node)
            self._node_event(
                now,
                node,
                "RegisteredNode",
                f"Node {node.name} event: Registered Node {node.name} in Controller",
            )
            self._node_event(now, node, "NodeReady", f"Node {node.name} status is now: NodeReady")
            return node_view(node)

    async def set_schedulable(self, name: str, schedulable: bool) -> Node:
        with self._lock:
            now = self._enter()
            node = self._node(name)
            self._set_schedulable(now, node, schedulable)
            return node_view(node)

    def _set_schedulable(self, t: float, node: NodeRecord, schedulable: bool) -> None:
        if node.schedulable == schedulable:
            return
        node.schedulable = schedulable
        status = "NodeSchedulable" if schedulable else "NodeNotSchedulable"
        self._node_event(t, node, status, f"Node {node.name} status is now: {status}")

    async def drain(self, name: str) -> list[str]:
        with self._lock:
            now = self._enter()
            node = self._node(name)
            self._set_schedulable(now, node, False)
            evicted = sorted(node.instances.values(), key=lambda r: (r.spec.namespace, r.name))
            self._node_event(
                now, node, "Drain", f"Draining node {name}: evicting {len(evicted)} instance(s)"
            )
            for rec in evicted:
                self._delete(now, rec, f"Stopping container {CONTAINER} (node {name} is drained)")
            return [rec.name for rec in evicted]

    async def remove_node(self, name: str) -> None:
        with self._lock:
            now = self._enter()
            node = self._node(name)
            if node.instances:
                bound = sorted(rec.name for rec in node.instances.values())
                shown = ", ".join(bound[:5]) + (", ..." if len(bound) > 5 else "")
                raise Conflict(
                    f"node {name} still has {len(bound)} instance(s) bound ({shown}); "
                    "drain it first",
                    details={"instances": bound},
                )
            node.removed = True
            node.images.lose()
            node.images.timer_token += 1
            del self._nodes[name]
            self._node_event(
                now,
                node,
                "RemovingNode",
                f"Node {name} event: Removing Node {name} from Controller",
            )

    # ------------------------------------------------------------ instances: reads

    def _instance(self, namespace: str, name: str) -> InstanceRecord:
        rec = self._by_ns.get(namespace, {}).get(name)
        if rec is None:
            raise NotFound(f"instance {namespace}/{name} does not exist in cluster {self.name}")
        return rec

    def _view(self, rec: InstanceRecord, t: float) -> Instance:
        return instance_view(rec, t=t, to_datetime=self._dt)

    async def instance_ids(self, *, namespace: str, app: str) -> set[int]:
        with self._lock:
            return {rec.spec.instance_id for rec in self._by_app.get((namespace, app), {}).values()}

    async def instance_states(self, *, namespace: str, app: str) -> dict[int, InstanceState]:
        with self._lock:
            self._enter()  # the phases as of now, as list_instances would report them
            return {
                rec.spec.instance_id: InstanceState(
                    phase=rec.phase, node=rec.node.name, version=rec.version, ready=rec.ready
                )
                for rec in self._by_app.get((namespace, app), {}).values()
            }

    async def list_instances(
        self,
        *,
        namespace: str | None = None,
        app: str | None = None,
        ids: Collection[int] | None = None,
    ) -> list[Instance]:
        wanted = None if ids is None else frozenset(ids)
        with self._lock:
            now = self._enter()
            pools: list[dict[str, InstanceRecord]]
            if app is not None:
                spaces = [namespace] if namespace is not None else sorted(self._by_ns)
                pools = [self._by_app.get((ns, app), {}) for ns in spaces]
            elif namespace is not None:
                pools = [self._by_ns.get(namespace, {})]
            else:
                pools = [self._by_ns[ns] for ns in sorted(self._by_ns)]
            out: list[Instance] = []
            for pool in pools:
                recs = sorted(
                    (r for r in pool.values() if wanted is None or r.spec.instance_id in wanted),
                    key=lambda r: (r.spec.app, r.spec.instance_id),
                )
                out.extend(self._view(rec, now) for rec in recs)
            return out

    # ------------------------------------------------------------ instances: create

    async def create_instance(self, spec: InstanceSpec) -> Instance:
        with self._lock:
            now = self._enter()
            _check_instance_spec(spec)
            name = spec.name
            if name in self._by_ns.get(spec.namespace, {}):
                raise Conflict(
                    f"instance {spec.namespace}/{name} already exists in cluster {self.name}; "
                    "delete it first or use another instance id"
                )
            node = self._nodes.get(spec.node)
            if node is None:
                raise InvalidRequest(f"node {spec.node} does not exist in cluster {self.name}")
            if not node.ready:
                raise InvalidRequest(f"node {node.name} is not ready; place {name} elsewhere")
            if not node.schedulable:
                raise InvalidRequest(
                    f"node {node.name} is cordoned (not schedulable); place {name} elsewhere"
                )
            self._check_fits(node, spec)
            profile = check_profile(spec.annotations)
            if spec.network_mode == NetworkMode.HOST:
                pod_ip: str | None = node.host_ip
            else:
                pod_ip = node.pods.take()
            if pod_ip is None:
                raise InvalidRequest(f"node {node.name} has no free pod IP; place {name} elsewhere")
            rec = InstanceRecord(
                spec=spec,
                name=name,
                node=node,
                image=spec.image,
                version=spec.version,
                labels=dict(spec.labels),
                profile=profile,
                seed=_seed(spec.namespace, name),
                shape=instance_shape(spec),
                pod_ip=pod_ip,
                created=now,
                token=next(self._tokens),
            )
            self._bind(rec)
            self._instance_event(
                now,
                rec,
                "Scheduled",
                f"Successfully assigned {spec.namespace}/{name} to {node.name}",
            )
            self._after(now + SANDBOX_S, rec, self._begin_pull)
            return self._view(rec, now)

    def _check_fits(self, node: NodeRecord, spec: InstanceSpec) -> None:
        free = node.capacity.minus(node.allocated)
        short = []
        for dim in _NODE_DIMENSIONS:
            ask, have = getattr(spec.resources, dim), getattr(free, dim)
            if ask > have:
                short.append(
                    f"{_LABEL[dim]}: asked {describe(dim, ask)}, {describe(dim, have)} free of "
                    f"{describe(dim, getattr(node.capacity, dim))}"
                )
        if short:
            raise InvalidRequest(
                f"node {node.name} cannot hold {spec.namespace}/{spec.name}: {'; '.join(short)}",
                details={"node": node.name, "insufficient": short},
            )
        gpu, ids = spec.resources.gpu, spec.gpu_ids
        where = f"node {node.name}"
        if gpu == 0:
            if ids:
                raise InvalidRequest("gpu_ids are listed but the instance requests no GPU")
            return
        for gid in ids:
            if not isinstance(gid, int) or not 0 <= gid < len(node.gpus):
                raise InvalidRequest(f"{where} has no GPU {gid!r} (it has {len(node.gpus)})")
        if len(set(ids)) != len(ids):
            raise InvalidRequest(f"gpu_ids {list(ids)} list a card twice")
        if gpu >= 100:
            if gpu % 100 or gpu != 100 * len(ids):
                raise InvalidRequest(
                    f"a request of {gpu / 100:g} GPU cards needs whole cards and as many gpu_ids "
                    f"(got {len(ids)})"
                )
            busy = [g for g in ids if node.gpu_used.get(g, 0) or node.gpu_memory_used.get(g, 0)]
            if busy:
                raise InvalidRequest(
                    f"GPU(s) {', '.join(map(str, busy))} on {where} are in use; a whole-card "
                    "request needs free cards"
                )
        else:
            if len(ids) != 1:
                raise InvalidRequest(
                    f"a fractional GPU request ({gpu / 100:g} card) lists exactly one card"
                )
            left = 100 - node.gpu_used.get(ids[0], 0)
            if gpu > left:
                raise InvalidRequest(
                    f"GPU {ids[0]} on {where} has {left / 100:g} of a card free, "
                    f"{gpu / 100:g} asked"
                )
            card = node.gpus[ids[0]].memory_mib
            memory_left = card - node.gpu_memory_used.get(ids[0], 0)
            if spec.resources.gpu_memory > memory_left:
                raise InvalidRequest(
                    f"GPU {ids[0]} on {where} has {memory_left} MiB of memory free, "
                    f"{spec.resources.gpu_memory} MiB asked"
                )

    def _bind(self, rec: InstanceRecord) -> None:
        spec, node = rec.spec, rec.node
        node.allocated = node.allocated + spec.resources
        if spec.gpu_ids:
            share = spec.resources.gpu // len(spec.gpu_ids)
            for gid in spec.gpu_ids:
                node.gpu_used[gid] = node.gpu_used.get(gid, 0) + share
                memory = _card_memory(spec, node.gpus[gid].memory_mib)
                node.gpu_memory_used[gid] = node.gpu_memory_used.get(gid, 0) + memory
        node.instances[(spec.namespace, rec.name)] = rec
        self._by_ns.setdefault(spec.namespace, {})[rec.name] = rec
        self._by_app.setdefault((spec.namespace, spec.app), {})[rec.name] = rec

    def _unbind(self, t: float, rec: InstanceRecord) -> None:
        spec, node = rec.spec, rec.node
        last = self._usage(rec, t, self._dt(t).timestamp())
        node.rx_base += last.rx_bytes_total
        node.tx_base += last.tx_bytes_total
        node.allocated = node.allocated.minus(spec.resources)
        if spec.gpu_ids:
            share = spec.resources.gpu // len(spec.gpu_ids)
            for gid in spec.gpu_ids:
                left = node.gpu_used.get(gid, 0) - share
                if left > 0:
                    node.gpu_used[gid] = left
                else:
                    node.gpu_used.pop(gid, None)
                memory = node.gpu_memory_used.get(gid, 0) - _card_memory(
                    spec, node.gpus[gid].memory_mib
                )
                if memory > 0:
                    node.gpu_memory_used[gid] = memory
                else:
                    node.gpu_memory_used.pop(gid, None)
        if spec.network_mode != NetworkMode.HOST:
            node.pods.release(rec.pod_ip)
        del node.instances[(spec.namespace, rec.name)]
        in_namespace = self._by_ns[spec.namespace]
        del in_namespace[rec.name]
        if not in_namespace:
            del self._by_ns[spec.namespace]
        app_key = (spec.namespace, spec.app)
        in_app = self._by_app[app_key]
        del in_app[rec.name]
        if not in_app:
            del self._by_app[app_key]
        rec.token = -1  # cancels whatever was pending
        self._changed(spec)

    # ------------------------------------------------------------ lifecycle transitions

    def _new_attempt(self, rec: InstanceRecord) -> None:
        rec.token = next(self._tokens)
        rec.ready = False
        rec.pull = None
        rec.started = None
        rec.liveness_failing = False
        rec.liveness_failures = 0

    def _begin_pull(self, t: float, rec: InstanceRecord) -> None:
        node = rec.node
        fetch = node.images.missing(self._catalog.layers(rec.image))
        if not fetch:
            self._instance_event(
                t, rec, "Pulled", f'Container image "{rec.image}" already present on machine'
            )
            self._after(t + CREATE_S, rec, self._create_container)
            return
        rec.phase = InstancePhase.PULLING
        self._instance_event(t, rec, "Pulling", f'Pulling image "{rec.image}"')
        if rec.image in self._failing_images or _registry_refuses(rec.spec):
            self._after(t + PULL_FAIL_S, rec, self._pull_failed)
            return
        pull = Pull(
            image=rec.image,
            fetch=fetch,
            started=t,
            on_layers_ready=partial(self._layers_ready, rec, rec.token),
        )
        rec.pull = pull
        node.images.begin(t, pull)
        self._schedule_downloads(node)

    def _schedule_downloads(self, node: NodeRecord) -> None:
        images = node.images
        images.timer_token += 1
        when = images.next_completion()
        if when is not None:
            self._timeline.at(when, self._downloads_due, node, images.timer_token)

    def _downloads_due(self, t: float, node: NodeRecord, token: int) -> None:
        if node.removed or token != node.images.timer_token:
            return
        for pull in node.images.advance_to(t):
            pull.on_layers_ready(t)
        self._schedule_downloads(node)

    def _layers_ready(self, rec: InstanceRecord, token: int, t: float) -> None:
        if rec.token == token and rec.pull is not None:
            self._after(t + rec.pull.unpack_s, rec, self._pulled)

    def _pulled(self, t: float, rec: InstanceRecord) -> None:
        pull = rec.pull
        took = _duration(t - pull.started) if pull is not None else "0s"
        size = sum(layer.size for layer in self._catalog.layers(rec.image))
        self._instance_event(
            t,
            rec,
            "Pulled",
            f'Successfully pulled image "{rec.image}" in {took} ({took} including waiting). '
            f"Image size: {size} bytes.",
        )
        self._after(t + CREATE_S, rec, self._create_container)

    def _pull_failed(self, t: float, rec: InstanceRecord) -> None:
        ref = rec.image
        reason = self._failing_images.get(ref) or (
            "pull access denied, repository does not exist or may require authorization: "
            "server message: insufficient_scope: authorization failed"
            if _registry_refuses(rec.spec)
            else "manifest unknown"
        )
        self._instance_event(
            t,
            rec,
            "Failed",
            f'Failed to pull image "{ref}": rpc error: code = NotFound desc = failed to pull and '
            f'unpack image "{ref}": failed to resolve reference "{ref}": {reason}',
            "Warning",
        )
        self._instance_event(t, rec, "Failed", "Error: ErrImagePull", "Warning")
        self._fail(t, rec, FailureCause.IMAGE_PULL, f'pulling image "{ref}" failed: {reason}')

    def _create_container(self, t: float, rec: InstanceRecord) -> None:
        rec.pull = None
        namespace = rec.spec.namespace
        mounted = []
        missing = []
        for ref in rec.spec.configs:
            data = self._configs.get((namespace, ref.secret, ref.name))
            if data is None:
                missing.append(ref)
            else:
                mounted.append((ref, data))
        if missing:
            names = []
            for ref in missing:
                what = "secret" if ref.secret else "configmap"
                names.append(f'{what} "{ref.name}"')
                self._instance_event(
                    t, rec, "Failed", f'Error: {what} "{ref.name}" not found', "Warning"
                )
            self._fail(
                t,
                rec,
                FailureCause.CONFIG,
                f"{', '.join(names)} not found in namespace {namespace}; create it, then restart",
            )
            return
        rec.mounted = tuple(mounted)
        rec.phase = InstancePhase.CREATED
        self._instance_event(t, rec, "Created", f"Created container {CONTAINER}")
        self._after(t + START_S, rec, self._start_container)

    def _start_container(self, t: float, rec: InstanceRecord) -> None:
        spec = rec.spec
        rec.phase = InstancePhase.RUNNING
        rec.container_started(t)
        self._instance_event(t, rec, "Started", f"Started container {CONTAINER}")
        for line in banner(
            profile=rec.profile,
            app=spec.app,
            version=rec.version,
            image=rec.image,
            ports=tuple(p.port for p in spec.ports),
            gpu_ids=spec.gpu_ids,
        ):
            rec.log(t, line)
        probe = spec.readiness
        if probe is not None and probe.initial_delay_s > 0:
            self._after(t + probe.initial_delay_s, rec, self._become_ready)
        else:
            rec.ready = True

    def _become_ready(self, t: float, rec: InstanceRecord) -> None:
        rec.ready = True
        self._changed(rec.spec)

    def _liveness_probe(self, t: float, rec: InstanceRecord) -> None:
        probe = rec.spec.liveness
        if not rec.liveness_failing or probe is None:
            return
        rec.liveness_failures += 1
        self._instance_event(
            t,
            rec,
            "Unhealthy",
            f"Liveness probe failed: {self._probe_error(rec, probe)}",
            "Warning",
        )
        if rec.liveness_failures < probe.failure_threshold:
            self._after(t + probe.period_s, rec, self._liveness_probe)
            return
        self._instance_event(
            t, rec, "Killing", f"Container {CONTAINER} failed liveness probe, will be restarted"
        )
        rec.log(t, "received SIGTERM, shutting down", "stderr")
        self._fail(
            t,
            rec,
            FailureCause.LIVENESS,
            f"liveness probe failed {rec.liveness_failures} times in a row",
            exit_code=137,
        )

    @staticmethod
    def _probe_error(rec: InstanceRecord, probe: ProbeSpec) -> str:
        port = probe.port or (rec.spec.ports[0].port if rec.spec.ports else 8080)
        if probe.kind == ProbeKind.HTTP:
            return (
                f'Get "http://{rec.pod_ip}:{port}{probe.path}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )
        if probe.kind == ProbeKind.TCP:
            return f"dial tcp {rec.pod_ip}:{port}: i/o timeout"
        return f'command "{" ".join(probe.command)}" timed out'

    def _fail(
        self,
        t: float,
        rec: InstanceRecord,
        cause: FailureCause,
        message: str,
        exit_code: int | None = None,
    ) -> None:
        rec.container_stopped(t)
        started = rec.started
        self._new_attempt(rec)
        rec.started = started  # the failed container's start stays visible
        rec.phase = InstancePhase.FAILED
        rec.failure = Failure(cause=cause, at=self._dt(t), message=message, exit_code=exit_code)

    # ------------------------------------------------------------ instances: changes

    async def replace_image(
        self, *, namespace: str, name: str, image: str, version: str
    ) -> Instance:
        with self._lock:
            now = self._enter()
            if not isinstance(image, str) or not image.strip():
                raise InvalidRequest("image must be a non-empty image reference")
            if not isinstance(version, str):
                raise InvalidRequest("version must be a string")
            rec = self._instance(namespace, name)
            self._require_node_ready(rec, "upgrade it in place")
            if rec.phase in (InstancePhase.CREATED, InstancePhase.RUNNING):
                self._instance_event(
                    now,
                    rec,
                    "Killing",
                    f"Container {CONTAINER}'s hash changed, it will be killed and re-created.",
                )
                rec.log(now, "received SIGTERM, shutting down")
                rec.container_stopped(now)
            rec.image = image
            rec.version = version
            # the platform's version label, kept in step with the version
            if VERSION_LABEL in rec.labels:
                rec.labels[VERSION_LABEL] = version
            rec.restarts += 1
            self._new_attempt(rec)
            rec.phase = InstancePhase.SCHEDULED
            self._after(now + WATCH_S, rec, self._begin_pull)
            return self._view(rec, now)

    async def restart_instance(self, *, namespace: str, name: str) -> Instance:
        with self._lock:
            now = self._enter()
            rec = self._instance(namespace, name)
            if rec.phase not in (InstancePhase.FAILED, InstancePhase.RUNNING):
                raise Conflict(
                    f"instance {namespace}/{name} is {rec.phase.value}: it is starting already; "
                    "only a Failed or Running instance can be restarted"
                )
            self._require_node_ready(rec, "restart it")
            # after an image pull failure (or a node lost mid-pull) the image is not all there
            repull = bool(rec.node.images.missing(self._catalog.layers(rec.image)))
            if rec.phase == InstancePhase.RUNNING:
                self._instance_event(now, rec, "Killing", f"Stopping container {CONTAINER}")
                rec.log(now, "received SIGTERM, shutting down")
                rec.container_stopped(now)
            rec.restarts += 1
            self._new_attempt(rec)
            rec.phase = InstancePhase.SCHEDULED
            if repull:
                self._after(now + WATCH_S, rec, self._begin_pull)
            else:
                self._after(now + CREATE_S, rec, self._create_container)
            return self._view(rec, now)

    # ------------------------------------------------------------ images: pre-pull

    async def prewarm_image(
        self, *, namespace: str, owner: str, image: str, nodes: Collection[str]
    ) -> None:
        """Keep ``image`` pulled on ``nodes`` for ``owner`` (``ImagePrewarmer``): the call says
        the whole wish and replaces the owner's last one. A node that lacks some of the image's
        layers starts fetching them now, sharing its link and any download in flight as an
        instance's pull does; a node that left the wish (or every node, with no nodes or
        another image) has its pull called off, so layers only the pre-pull wanted stop
        downloading. Best effort: unknown, lost or removed nodes and an image the registry
        refuses are skipped (the instance's own pull will say what is wrong)."""
        if not isinstance(image, str):
            raise InvalidRequest("image must be an image reference")
        with self._lock:
            now = self._enter()
            key = (namespace, owner)
            wanted = frozenset(nodes) if image.strip() else frozenset()
            old = self._prewarms.pop(key, None)
            kept: dict[str, Pull] = {}
            if old is not None:
                for name, pull in old.pulls.items():
                    node = self._nodes.get(name)
                    if node is None or node.removed:
                        continue
                    if old.image == image and name in wanted and node.images.in_flight(pull):
                        kept[name] = pull
                        continue
                    node.images.cancel(now, pull)
                    self._schedule_downloads(node)
            if not wanted:
                return
            prewarm = self._prewarms[key] = _Prewarm(image=image, nodes=wanted, pulls=kept)
            if image in self._failing_images:
                return
            # a node already told of this image keeps its turn: a wish sent again (it grows
            # pass by pass while an app comes up) must not push its nodes' pulls back each time
            told = old.pending if old is not None and old.image == image else {}
            prewarm.pending = {
                name: told.get(name, now + WATCH_S) for name in sorted(wanted - kept.keys())
            }
            for at in sorted(set(prewarm.pending.values())):
                self._timeline.at(at, self._begin_prewarm, key, prewarm)

    def _begin_prewarm(self, t: float, key: tuple[str, str], prewarm: _Prewarm) -> None:
        # the nodes learn of the wish: each fetches what it lacks (unless the wish was replaced)
        if self._prewarms.get(key) is not prewarm:
            return
        due = sorted(name for name, at in prewarm.pending.items() if at <= t)
        for name in due:
            del prewarm.pending[name]
            node, fetch = self._prewarm_fetch(name, prewarm.image)
            if node is None or not fetch:
                continue  # gone, or all there already: the cache is respected
            pull = Pull(image=prewarm.image, fetch=fetch, started=t, on_layers_ready=_ignore)
            pull.on_layers_ready = partial(self._prewarmed, prewarm, name, pull)
            prewarm.pulls[name] = pull
            node.images.begin(t, pull)
            self._schedule_downloads(node)

    def _prewarm_fetch(self, name: str, image: str) -> tuple[NodeRecord | None, tuple[Layer, ...]]:
        """The node a pre-pull of ``image`` would run on (None: unknown, removed or not ready)
        and the layers it lacks."""
        node = self._nodes.get(name)
        if node is None or node.removed or not node.ready:
            return None, ()
        return node, node.images.missing(self._catalog.layers(image))

    @staticmethod
    def _prewarmed(prewarm: _Prewarm, node: str, pull: Pull, t: float) -> None:
        # the layers are in the node's cache: the next instance pull finds them there
        if prewarm.pulls.get(node) is pull:
            del prewarm.pulls[node]

    def _require_node_ready(self, rec: InstanceRecord, what: str) -> None:
        if not rec.node.ready:
            raise Conflict(
                f"node {rec.node.name} of instance {rec.spec.namespace}/{rec.name} is not ready; "
                f"cannot {what}: delete it and create it on another node"
            )

    async def delete_instance(self, *, namespace: str, name: str) -> None:
        with self._lock:
            now = self._enter()
            rec = self._by_ns.get(namespace, {}).get(name)
            if rec is not None:
                self._delete(now, rec, f"Stopping container {CONTAINER}")

    def _delete(self, t: float, rec: InstanceRecord, message: str) -> None:
        self._instance_event(t, rec, "Killing", message)
        rec.container_stopped(t)
        self._unbind(t, rec)

    # ------------------------------------------------------------ services

    async def apply_service(self, spec: ServiceSpec) -> Service:
        with self._lock:
            self._enter()
            for field in ("namespace", "name", "app"):
                value = getattr(spec, field)
                if not isinstance(value, str) or not value:
                    raise InvalidRequest(f"service {field} must be a non-empty string")
            key = (spec.namespace, spec.name)
            known = self._services.get(key)
            ip = known[1] if known is not None else self._service_ips.take()
            self._services[key] = (spec, ip)
            return self._service_view(spec, ip)

    async def get_service(self, *, namespace: str, name: str) -> Service:
        with self._lock:
            self._enter()
            known = self._services.get((namespace, name))
            if known is None:
                raise NotFound(f"service {namespace}/{name} does not exist in cluster {self.name}")
            return self._service_view(*known)

    async def delete_service(self, *, namespace: str, name: str) -> None:
        with self._lock:
            self._enter()
            known = self._services.pop((namespace, name), None)
            if known is not None:
                self._service_ips.release(known[1])

    def _service_view(self, spec: ServiceSpec, ip: str) -> Service:
        recs = sorted(
            self._by_app.get((spec.namespace, spec.app), {}).values(),
            key=lambda r: r.spec.instance_id,
        )
        return Service(
            namespace=spec.namespace,
            name=spec.name,
            app=spec.app,
            cluster_ip=ip,
            ports=spec.ports,
            domain=spec.domain,
            endpoints=tuple(
                Endpoint(instance=r.name, ip=r.pod_ip, node=r.node.name, ready=r.ready)
                for r in recs
                if r.pod_ip
            ),
        )

    # ------------------------------------------------------------ configs and secrets

    async def apply_config(self, config: ConfigData) -> None:
        with self._lock:
            self._enter()
            for field in ("namespace", "name"):
                value = getattr(config, field)
                if not isinstance(value, str) or not value:
                    raise InvalidRequest(f"config {field} must be a non-empty string")
            if not isinstance(config.data, dict):
                raise InvalidRequest("config data must be an object of string keys and values")
            for key, value in config.data.items():
                if not isinstance(key, str) or not key or "/" in key:
                    raise InvalidRequest(
                        f"config key {key!r} is invalid: a key is a file name (no '/')"
                    )
                if not isinstance(value, str):
                    raise InvalidRequest(f"config value of {key!r} must be a string")
            self._configs[(config.namespace, bool(config.secret), config.name)] = ConfigData(
                namespace=config.namespace,
                name=config.name,
                secret=bool(config.secret),
                data=dict(config.data),
            )

    async def delete_config(self, *, namespace: str, name: str, secret: bool) -> None:
        with self._lock:
            self._enter()
            self._configs.pop((namespace, bool(secret), name), None)

    async def apply_quota(self, *, namespace: str, hard: ResourceVector) -> None:
        """Recorded only: the sim's instances come from the platform, which has admitted them."""
        with self._lock:
            self._quotas[namespace] = hard

    async def get_quota(self, *, namespace: str) -> ResourceVector | None:
        with self._lock:
            return self._quotas.get(namespace)

    async def list_configs(self, *, namespace: str) -> list[ConfigData]:
        with self._lock:
            self._enter()
            found = [c for (ns, _, _), c in self._configs.items() if ns == namespace]
            found.sort(key=lambda c: (c.name, c.secret))
            return [ConfigData(c.namespace, c.name, c.secret, dict(c.data)) for c in found]

    # ------------------------------------------------------------ observation

    async def events(self, *, since: int = 0, limit: int = 1000) -> list[ClusterEvent]:
        with self._lock:
            self._enter()
            return self._events.since(since, limit)

    def _usage(self, rec: InstanceRecord, t: float, unix: float) -> Usage:
        spec = rec.spec
        share_memory = 0.0
        if spec.gpu_ids and rec.node.gpus:
            share_memory = rec.node.gpus[0].memory_mib * spec.resources.gpu / 100
        u = usage(
            profile=rec.profile,
            seed=rec.seed,
            request=spec.resources,
            card_share_memory_mib=share_memory,
            has_gpu=bool(spec.gpu_ids),
            t=unix,
            running_s=t - rec.started if rec.started is not None else 0.0,
            alive_s=t - rec.created,
        )
        if self._loads:
            load = self._loads.get((spec.namespace, spec.app))
            if load is not None:
                return overridden(u, load, seed=rec.seed, request=spec.resources, t=unix)
        return u

    def _instance_sample(self, rec: InstanceRecord, u: Usage, at: dt.datetime) -> MetricSample:
        return MetricSample(
            target=rec.name,
            kind="instance",
            at=at,
            cpu_milli=u.cpu_milli,
            memory_mib=u.memory_mib,
            network_rx_bytes_total=u.rx_bytes_total,
            network_tx_bytes_total=u.tx_bytes_total,
            disk_used_gib=u.disk_used_gib,
            gpu_util=u.gpu_util,
            gpu_memory_mib=u.gpu_memory_mib,
            namespace=rec.spec.namespace,
        )

    async def metrics(
        self, *, namespace: str | None = None, names: Sequence[str] | None = None
    ) -> list[MetricSample]:
        with self._lock:
            now = self._enter()
            at = self._dt(now)
            unix = at.timestamp()
            running = InstancePhase.RUNNING
            if namespace is not None or names is not None:
                return [
                    self._instance_sample(rec, self._usage(rec, now, unix), at)
                    for rec in self._select(namespace, names)
                    if rec.phase == running
                ]
            instances: list[MetricSample] = []
            nodes: list[MetricSample] = []
            for node in self._nodes.values():
                if not node.ready:
                    continue  # a lost node reports nothing
                cap = node.capacity
                cpu = 100.0 + 0.01 * cap.cpu
                memory = 512.0 + 0.02 * cap.memory
                rx, tx, disk = node.rx_base, node.tx_base, 20.0
                gpu_hundredths = gpu_memory = 0.0
                for rec in node.instances.values():
                    u = self._usage(rec, now, unix)
                    rx += u.rx_bytes_total
                    tx += u.tx_bytes_total
                    if rec.phase != running:
                        continue
                    instances.append(self._instance_sample(rec, u, at))
                    cpu += u.cpu_milli
                    memory += u.memory_mib
                    disk += u.disk_used_gib
                    gpu_hundredths += u.gpu_util * rec.spec.resources.gpu
                    gpu_memory += u.gpu_memory_mib
                nodes.append(
                    MetricSample(
                        target=node.name,
                        kind="node",
                        at=at,
                        cpu_milli=min(cpu, float(cap.cpu)),
                        memory_mib=min(memory, float(cap.memory)),
                        network_rx_bytes_total=rx,
                        network_tx_bytes_total=tx,
                        disk_used_gib=min(disk, float(cap.local_disk)),
                        gpu_util=gpu_hundredths / cap.gpu if cap.gpu else 0.0,
                        gpu_memory_mib=min(gpu_memory, float(cap.gpu_memory)),
                    )
                )
            return instances + nodes

    async def control_plane_metrics(self) -> list[ControlPlaneSample]:
        """Simulated, not measured (a sim cluster has no API server or etcd): plausible figures
        derived from the cluster's object counts and the calls made to it (``_control_plane``)."""
        with self._lock:
            now = self._enter()
            nodes = len(self._nodes)
            # every node posts its status and renews its lease every 10 s
            self._api_requests += 0.2 * nodes * max(0.0, now - self._api_counted_to)
            self._api_counted_to = now
            counts = _control_plane.ObjectCounts(
                pods=sum(len(pool) for pool in self._by_ns.values()),
                nodes=nodes,
                namespaces=len(set(self._by_ns) | set(self._quotas)),
                services=len(self._services),
                configmaps=sum(1 for (_, secret, _) in self._configs if not secret),
                secrets=sum(1 for (_, secret, _) in self._configs if secret),
                events=min(self._events.last_seq, self._events.capacity),
                resourcequotas=len(self._quotas),
            )
            return _control_plane.samples(
                counts,
                requests_total=self._api_requests,
                seed=_seed("", self.name),
                t=self._dt(now).timestamp(),
            )

    def _select(self, namespace: str | None, names: Sequence[str] | None) -> list[InstanceRecord]:
        pools = (
            [self._by_ns.get(namespace, {})]
            if namespace is not None
            else [self._by_ns[ns] for ns in sorted(self._by_ns)]
        )
        if names is None:
            return [rec for pool in pools for rec in pool.values()]
        wanted = list(dict.fromkeys(names))
        return [pool[n] for pool in pools for n in wanted if n in pool]

    async def logs(
        self, *, namespace: str, name: str, tail: int = 100, since: dt.datetime | None = None
    ) -> list[LogLine]:
        with self._lock:
            now = self._enter()
            rec = self._instance(namespace, name)
            if not isinstance(tail, int) or tail < 0:
                raise InvalidRequest("tail must be a non-negative integer")
            tail = min(tail, MAX_LOG_TAIL)
            if tail == 0:
                return []
            floor = (since - self._t0).total_seconds() if since is not None else -math.inf
            lines = [entry for entry in rec.logs if entry[0] >= floor]
            interval = log_interval_s(rec.profile, rec.seed)
            for start, stop in rec.runs:
                end = now if stop is None else stop
                seed = rec.seed ^ int(start * 1000)
                last = int((end - start) / interval)
                if start + last * interval >= end:
                    last -= 1
                first = max(1, math.ceil((floor - start) / interval) if floor > start else 1)
                for k in range(max(first, last - tail + 1), last + 1):
                    stream, text = periodic_line(rec.profile, seed, k)
                    lines.append((start + k * interval, stream, text))
            lines.sort(key=lambda entry: entry[0])  # stable: lifecycle lines first on ties
            return [LogLine(at=self._dt(t), text=text, stream=s) for t, s, text in lines[-tail:]]

    async def exec(
        self, *, namespace: str, name: str, command: Sequence[str], timeout: float = 10.0
    ) -> ExecResult:
        with self._lock:
            self._enter()
            rec = self._instance(namespace, name)
            if rec.phase != InstancePhase.RUNNING:
                raise Conflict(
                    f"cannot exec in {namespace}/{name}: it is {rec.phase.value}, not Running"
                )
            if isinstance(command, str) or not all(isinstance(a, str) for a in command):
                raise InvalidRequest("command must be a list of strings, e.g. ['hostname']")
            container = self._container(rec)
        return _exec.run(container, list(command))

    def _container(self, rec: InstanceRecord) -> _exec.Container:
        spec = rec.spec
        env: list[tuple[str, str]] = [
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ("HOSTNAME", rec.name),
            ("HOME", "/root"),
        ]
        env.extend(spec.env.items())
        files = {
            "/etc/hostname": rec.name + "\n",
            "/etc/hosts": f"127.0.0.1\tlocalhost\n{rec.pod_ip}\t{rec.name}\n",
            "/etc/resolv.conf": (
                f"search {spec.namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
                f"nameserver {CLUSTER_DNS_IP}\noptions ndots:5\n"
            ),
        }
        for ref, data in rec.mounted:
            if ref.mount_path:
                base = "/" + "/".join(p for p in ref.mount_path.split("/") if p and p != ".")
                for key, value in data.data.items():
                    files[f"{base.rstrip('/')}/{key}"] = value
            else:
                env.extend(sorted(data.data.items()))
        gpus = tuple(
            _exec.GpuCard(gid, rec.node.gpus[gid].model, _gpu_uuid(rec.node.name, gid))
            for gid in spec.gpu_ids
        )
        process = " ".join((*spec.command, *spec.args)) or f"/app/{spec.app}"
        return _exec.Container(
            hostname=rec.name, env=tuple(env), files=files, gpus=gpus, process=process
        )

    # ------------------------------------------------------------ sim-only: images

    def register_image(self, ref: str, layer_sizes_bytes: Sequence[int]) -> None:
        """Give ``ref`` exactly these layers (bottom first), instead of made-up ones."""
        with self._lock:
            self._catalog.register(ref, list(layer_sizes_bytes))

    def image_layers(self, ref: str) -> list[tuple[str, int]]:
        """The (digest, size) of each layer of ``ref``, bottom first."""
        with self._lock:
            return [(layer.digest, layer.size) for layer in self._catalog.layers(ref)]

    def image_present(self, *, node: str, image: str) -> bool:
        """Does ``node`` hold every layer of ``image`` (pulled or pre-pulled)?"""
        with self._lock:
            self._catch_up()
            images = self._node(node).images
            return not images.missing(self._catalog.layers(image))

    def prewarms_in_flight(self, *, namespace: str, owner: str) -> dict[str, str]:
        """The owner's pre-pulls still downloading, or about to begin: node -> image."""
        with self._lock:
            self._catch_up()
            prewarm = self._prewarms.get((namespace, owner))
            if prewarm is None:
                return {}
            nodes = set(prewarm.pulls)
            nodes.update(n for n in prewarm.pending if self._prewarm_fetch(n, prewarm.image)[1])
            return dict.fromkeys(sorted(nodes), prewarm.image)

    def image_bytes_missing(self, *, have: str, want: str) -> int:
        """Bytes of ``want`` that a node holding exactly ``have`` must fetch (an in-place
        upgrade from ``have`` to ``want`` pulls this much)."""
        with self._lock:
            held = {layer.digest for layer in self._catalog.layers(have)}
            return sum(
                layer.size for layer in self._catalog.layers(want) if layer.digest not in held
            )

    # ------------------------------------------------------------ sim-only: faults

    def _running(self, namespace: str, name: str, what: str) -> tuple[float, InstanceRecord]:
        now = self._catch_up()
        rec = self._instance(namespace, name)
        if rec.phase != InstancePhase.RUNNING:
            raise Conflict(
                f"cannot {what} {namespace}/{name}: it is {rec.phase.value}, not Running"
            )
        return now, rec

    def crash(self, namespace: str, name: str, exit_code: int = 1, message: str = "") -> None:
        """The process exits with ``exit_code``: FAILED, cause AppExit."""
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise InvalidRequest("exit_code must be an integer from 1 to 255")
        if not 1 <= exit_code <= 255:
            raise InvalidRequest("exit_code must be from 1 to 255 (0 is a clean exit)")
        with self._lock:
            now, rec = self._running(namespace, name, "crash")
            rec.log(now, message or "panic: runtime error: invalid memory address", "stderr")
            rec.log(now, f"exit status {exit_code}", "stderr")
            detail = f": {message}" if message else ""
            self._instance_event(
                now,
                rec,
                "Crashed",
                f"Container {CONTAINER} exited with code {exit_code}{detail}",
                "Warning",
            )
            self._fail(
                now, rec, FailureCause.APP_EXIT, message or f"exit code {exit_code}", exit_code
            )

    def oom_kill(self, namespace: str, name: str) -> None:
        """The kernel kills the container at its memory limit: FAILED, cause OOMKilled, 137."""
        with self._lock:
            now, rec = self._running(namespace, name, "OOM-kill")
            limit = rec.spec.resources.memory
            rec.log(now, f"WARN memory usage at 99% of the limit ({limit} MiB)", "stderr")
            rec.log(now, "Killed", "stderr")
            self._instance_event(
                now,
                rec,
                "OOMKilled",
                f"Container {CONTAINER} was killed by the kernel: out of memory "
                f"(limit {limit} MiB), exit code 137",
                "Warning",
            )
            self._fail(now, rec, FailureCause.OOM, f"out of memory (limit {limit} MiB)", 137)

    def fail_liveness(self, namespace: str, name: str) -> None:
        """The liveness probe fails from its next period on; after ``failure_threshold``
        failures in a row the container is killed (FAILED, cause LivenessFailed). A restart
        or upgrade starts a healthy container."""
        with self._lock:
            self._catch_up()
            rec = self._instance(namespace, name)
            probe = rec.spec.liveness
            if probe is None:
                raise InvalidRequest(
                    f"instance {namespace}/{name} has no liveness probe, so none can fail"
                )
            now, rec = self._running(namespace, name, "fail the liveness probe of")
            if rec.liveness_failing:
                return
            rec.liveness_failing = True
            rec.liveness_failures = 0
            rec.log(now, "WARN request handler stalled: all workers are busy", "stderr")
            first = (rec.started if rec.started is not None else now) + probe.initial_delay_s
            if now < first:
                due = first
            else:
                due = first + (math.floor((now - first) / probe.period_s) + 1) * probe.period_s
            self._after(due, rec, self._liveness_probe)

    def fail_image_pulls(self, image: str, message: str = "manifest unknown") -> None:
        """Pulls of ``image`` that start from now on fail (cause ImagePullError). A node that
        has every layer of it does not pull, so does not fail (pull policy IfNotPresent)."""
        if not isinstance(image, str) or not image.strip():
            raise InvalidRequest("image must be a non-empty image reference")
        with self._lock:
            self._failing_images[image] = message or "manifest unknown"

    def clear_image_failure(self, image: str) -> None:
        with self._lock:
            self._failing_images.pop(image, None)

    def lose_node(self, node: str) -> None:
        """The node stops answering: NotReady, and every instance on it FAILED (NodeLost)."""
        with self._lock:
            now = self._catch_up()
            rec_node = self._node(node)
            if not rec_node.ready:
                return
            rec_node.ready = False
            rec_node.message = "Kubelet stopped posting node status."
            rec_node.images.lose()
            rec_node.images.timer_token += 1
            self._node_event(
                now, rec_node, "NodeNotReady", f"Node {node} status is now: NodeNotReady", "Warning"
            )
            for rec in list(rec_node.instances.values()):
                self._instance_event(now, rec, "NodeNotReady", "Node is not ready", "Warning")
                self._fail(now, rec, FailureCause.NODE_LOST, f"node {node} stopped answering")

    def restore_node(self, node: str) -> None:
        """The node answers again (Ready); its failed instances stay failed."""
        with self._lock:
            now = self._catch_up()
            rec_node = self._node(node)
            if rec_node.ready:
                return
            rec_node.ready = True
            rec_node.message = ""
            self._node_event(now, rec_node, "NodeReady", f"Node {node} status is now: NodeReady")

    def set_load(
        self,
        namespace: str,
        app: str,
        *,
        cpu_percent: float | None = None,
        memory_percent: float | None = None,
    ) -> None:
        """From now on, the instances of ``namespace/app`` (those running and those started
        later) use ``cpu_percent`` of their CPU request and/or ``memory_percent`` of their
        memory request (jitter within one point), instead of their profile, until
        ``clear_load``. Setting it again replaces the override."""
        for field, value in (("namespace", namespace), ("app", app)):
            if not isinstance(value, str) or not value.strip() or len(value) > 253:
                raise InvalidRequest(
                    f"{field} must be a non-empty string of at most 253 characters"
                )
        cpu = check_load_percent(cpu_percent, "cpu_percent")
        memory = check_load_percent(memory_percent, "memory_percent")
        if cpu is None and memory is None:
            raise InvalidRequest("a load override needs cpu_percent, memory_percent or both")
        with self._lock:
            self._loads[(namespace, app)] = LoadOverride(cpu_percent=cpu, memory_percent=memory)

    def clear_load(self, namespace: str, app: str) -> None:
        """The app's instances follow their profile again (no override: nothing happens)."""
        with self._lock:
            self._loads.pop((namespace, app), None)

    def inject(self, fault: dict[str, Any]) -> None:
        """One fault from a JSON document (the playground's API passes user input here)::

        {"kind": "crash", "namespace": "ns", "instance": "web-0", "exit_code": 2, "message": ""}
        {"kind": "oom" | "liveness", "namespace": ..., "instance": ...}
        {"kind": "image_pull", "image": "repo:tag", "message": "manifest unknown"}
        {"kind": "clear_image_pull", "image": ...}
        {"kind": "node_lost" | "node_restored", "node": ...}
        {"kind": "load", "namespace": ..., "app": "web", "cpu_percent": 95, "memory_percent": 80}
        {"kind": "clear_load", "namespace": ..., "app": ...}
        """
        if not isinstance(fault, dict):
            raise InvalidRequest("a fault is an object with a 'kind' field")
        kinds = ", ".join(_FAULTS)
        kind = fault.get("kind")
        if kind is None:
            raise InvalidRequest(f"fault.kind is required: one of {kinds}")
        if not isinstance(kind, str) or kind not in _FAULTS:
            raise InvalidRequest(f"fault.kind must be one of {kinds}, got {kind!r}")
        required, optional = _FAULTS[kind]
        extra = set(fault) - required - optional - {"kind"}
        if extra:
            takes = ", ".join(sorted(required | optional))
            raise InvalidRequest(
                f"fault field(s) {', '.join(sorted(map(str, extra)))} do not apply to kind "
                f"'{kind}' (it takes {takes})"
            )
        for field in sorted(required):
            value = fault.get(field)
            if value is None:
                raise InvalidRequest(f"fault.{field} is required for kind '{kind}'")
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequest(f"fault.{field} must be a non-empty string")
        message = fault.get("message", "")
        if not isinstance(message, str) or len(message) > 1000:
            raise InvalidRequest("fault.message must be a string of at most 1000 characters")
        exit_code = fault.get("exit_code", 1)
        if (
            not isinstance(exit_code, int)
            or isinstance(exit_code, bool)
            or not 1 <= exit_code <= 255
        ):
            raise InvalidRequest("fault.exit_code must be an integer from 1 to 255")
        if kind == "crash":
            self.crash(fault["namespace"], fault["instance"], exit_code=exit_code, message=message)
        elif kind == "oom":
            self.oom_kill(fault["namespace"], fault["instance"])
        elif kind == "liveness":
            self.fail_liveness(fault["namespace"], fault["instance"])
        elif kind == "image_pull":
            self.fail_image_pulls(fault["image"], message or "manifest unknown")
        elif kind == "clear_image_pull":
            self.clear_image_failure(fault["image"])
        elif kind == "node_lost":
            self.lose_node(fault["node"])
        elif kind == "node_restored":
            self.restore_node(fault["node"])
        elif kind == "load":
            self.set_load(
                fault["namespace"],
                fault["app"],
                cpu_percent=fault.get("cpu_percent"),
                memory_percent=fault.get("memory_percent"),
            )
        else:
            self.clear_load(fault["namespace"], fault["app"])


# ---------------------------------------------------------------- helpers


def _ignore(t: float) -> None:
    return None


def _check_instance_spec(spec: InstanceSpec) -> None:
    if not isinstance(spec, InstanceSpec):
        raise InvalidRequest("create_instance takes an InstanceSpec")
    for field in ("namespace", "app", "image", "node"):
        value = getattr(spec, field)
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"instance {field} must be a non-empty string")
    if not isinstance(spec.version, str):
        raise InvalidRequest("instance version must be a string")
    if not isinstance(spec.instance_id, int) or spec.instance_id < 0:
        raise InvalidRequest("instance_id must be a non-negative integer")
    if not isinstance(spec.resources, ResourceVector):
        raise InvalidRequest("instance resources must be a ResourceVector")
    for which, probe in (("liveness", spec.liveness), ("readiness", spec.readiness)):
        if probe is None:
            continue
        if probe.period_s <= 0 or probe.initial_delay_s < 0 or probe.failure_threshold < 1:
            raise InvalidRequest(
                f"{which} probe: period_s must be > 0, initial_delay_s >= 0 and "
                "failure_threshold >= 1"
            )
    for ref in spec.configs:
        if not ref.name:
            raise InvalidRequest("every config reference needs a name")


def _gpu_tuple(model: str, memory_mib: int, places: Sequence[GpuPlace]) -> tuple[Gpu, ...]:
    """The cards of a node, each with its NUMA node and the cores next to it (``_spec``:
    from the nvidia-smi table, the spec's ``gpu_affinity``, or guessed from the matrix)."""
    return tuple(
        Gpu(
            index=i,
            model=model,
            memory_mib=memory_mib,
            numa_node=place.numa_node,
            cpu_ids=place.cpu_ids,
        )
        for i, place in enumerate(places)
    )


def _gpu_uuid(node: str, index: int) -> str:
    h = hashlib.blake2b(f"{node}/{index}".encode(), digest_size=16).hexdigest()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _seed(namespace: str, name: str) -> int:
    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _duration(seconds: float) -> str:
    """As Go prints a ``time.Duration``, which is what kubelet's messages show."""
    if seconds < 1:
        return f"{round(seconds * 1000, 3):g}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{round(rest, 3):g}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{round(rest, 3):g}s"


def _card_memory(spec: InstanceSpec, card_memory: int) -> int:
    """MiB of one card an instance holds: all of it for whole cards, its request for a share."""
    if spec.resources.gpu >= 100:
        return card_memory
    return spec.resources.gpu_memory


def _registry_refuses(spec: InstanceSpec) -> bool:
    """Whether the platform's registry would refuse this instance's pull: its image is in that
    registry (the host of its pull secret) and the business's pull account may not read the
    repository. The same rule Gaia's token endpoint applies (gaia.domain.registry), so a sim
    instance of another business's private image fails to pull as a real node's would."""
    secret = spec.pull_secret
    if secret is None:
        return False
    host, _, rest = spec.image.partition("/")
    if host != secret.registry or not rest:
        return False
    repository = rest.split("@", 1)[0]
    last = repository.rsplit("/", 1)
    if ":" in last[-1]:
        repository = repository[: repository.rindex(":")]
    caller = RegistryCaller(pull_account_of=spec.namespace)
    return "pull" not in grant(caller, Scope("repository", repository, ("pull",)))
