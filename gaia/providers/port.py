"""The ClusterProvider port: what the platform needs from a cluster, in domain terms.

Controllers never see a wire format. They speak these dataclasses to one ``ClusterProvider`` per
registered cluster; two adapters implement it (``sim``: in-process, the embedded default;
``kubernetes``: real clusters) and one contract suite (``tests/contract``) runs against both.

What flows through the port:

- **nodes**: capacity, what is allocated, GPUs with their link matrix (``GpuLink`` names, the
  domain's: ``gaia.domain.gpu_links``), zone, labels; add, cordon, drain and remove (cluster
  scale out/in).
- **instances**: the platform places an instance (node and GPU ids chosen by the Gaia scheduler)
  and the provider runs it. An instance is identified by ``(namespace, name)``; ``name`` is
  ``<app>-<instance id>`` and stays the same for the instance's whole life, across in-place
  upgrades and restarts. The provider reports the phase, readiness, restarts and the cause of the
  last failure; it does **not** restart failed instances on its own: the restart policy (local
  restart with back-off, reschedule, blacklist) is the platform's decision (``gaia.domain``).
- **services**: one per app, selecting the app's instances; endpoints list ready instances only.
- **configs and secrets**: key/value documents per namespace that instances reference.
- **events, metrics, control-plane metrics, logs, exec**: what operators look at.

A business maps to one namespace in each cluster. Everything here is plain data; adapters raise
``gaia.domain.errors`` (``NotFound``, ``Conflict``, ``InvalidRequest``) with messages that say what
to do, and ``ConnectionError`` when the cluster cannot be reached.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from gaia.domain.agent_identity import ReviewedToken
from gaia.domain.gpu_links import GpuLink as GpuLink  # the cells of Node.gpu_links
from gaia.domain.network import NetworkMode as NetworkMode  # the modes an app chooses (issue 19)
from gaia.domain.resources import ResourceVector

# ---------------------------------------------------------------- health


class HealthState(StrEnum):
    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"  # answers, but says it is not ready
    UNREACHABLE = "Unreachable"  # does not answer at all


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    state: HealthState
    message: str = ""


# ---------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    model: str
    memory_mib: int
    numa_node: int = 0
    cpu_ids: tuple[int, ...] = ()  # the CPU cores nearest the card (its NUMA node's), if known
    # False when the node side reports the card sick (gaia.io/gpu-health: XID, ECC, heat): the
    # scheduler places nothing new on it
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node to add (scale out). ``gpu_links`` is the square ``topo -m`` matrix, may be empty
    (then the adapter derives a two-socket PCIe tree)."""

    name: str
    cpu_milli: int
    memory_mib: int
    local_disk_gib: int = 100
    bandwidth_mbps: int = 10_000
    gpus: int = 0
    gpu_model: str = ""
    gpu_memory_mib: int = 0
    gpu_links: tuple[tuple[str, ...], ...] = ()
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    ready: bool
    schedulable: bool  # False once cordoned or while draining
    zone: str
    labels: dict[str, str]
    host_ip: str
    capacity: ResourceVector  # cpu, memory, local_disk, bandwidth, gpu, gpu_memory
    allocated: ResourceVector  # sum of the requests of the instances bound to the node
    gpus: tuple[Gpu, ...] = ()
    gpu_links: tuple[tuple[str, ...], ...] = ()
    # GPU index -> hundredths of that card in use (fractional vGPUs share a card)
    gpu_used: dict[int, int] = field(default_factory=dict)
    # GPU index -> MiB of that card's memory held (a whole card holds all of it)
    gpu_memory_used: dict[int, int] = field(default_factory=dict)
    instance_count: int = 0
    message: str = ""

    @property
    def free(self) -> ResourceVector:
        return self.capacity.minus(self.allocated)


# Kept for the platform core's cluster list; a view of ``Node``.
@dataclass(frozen=True, slots=True)
class NodeSummary:
    name: str
    ready: bool
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0


# ---------------------------------------------------------------- instances


class ProbeKind(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    kind: ProbeKind = ProbeKind.HTTP
    path: str = "/"
    port: int = 0
    command: tuple[str, ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1


@dataclass(frozen=True, slots=True)
class PortSpec:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ConfigRef:
    """A config or secret made visible to an instance: as files under ``mount_path`` or, when
    ``mount_path`` is empty, as environment variables."""

    name: str
    secret: bool = False
    mount_path: str = ""


@dataclass(frozen=True, slots=True)
class PullSecret:
    """Credentials the platform gives an instance to pull from its registry (the business's
    pull account, gaia.delivery.registry): on Kubernetes a ``kubernetes.io/dockerconfigjson``
    Secret that the configs API never lists, named in the pod's ``imagePullSecrets``."""

    registry: str  # host[:port]
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One instance to run, already placed. ``name`` is ``<app>-<instance_id>``."""

    namespace: str
    app: str
    instance_id: int
    version: str  # the app template this instance runs
    image: str
    node: str
    resources: ResourceVector
    gpu_ids: tuple[int, ...] = ()  # cards on ``node``; a fraction shares the one card listed
    cpu_ids: tuple[int, ...] = ()  # cores to bind to (nearest the GPUs); empty: not bound
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    liveness: ProbeSpec | None = None
    readiness: ProbeSpec | None = None
    configs: tuple[ConfigRef, ...] = ()
    network_mode: NetworkMode = NetworkMode.OVERLAY
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    pull_secret: PullSecret | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.app}-{self.instance_id}"


class InstancePhase(StrEnum):
    SCHEDULED = "Scheduled"  # bound to a node, nothing started yet
    PULLING = "Pulling"
    CREATED = "Created"
    RUNNING = "Running"
    FAILED = "Failed"  # the container stopped; waiting for the platform to restart or move it
    TERMINATING = "Terminating"


class FailureCause(StrEnum):
    APP_EXIT = "AppExit"  # the process exited non-zero
    OOM = "OOMKilled"
    LIVENESS = "LivenessFailed"
    IMAGE_PULL = "ImagePullError"
    NODE_LOST = "NodeLost"
    CONFIG = "ConfigError"  # a referenced config or secret is missing


@dataclass(frozen=True, slots=True)
class Failure:
    cause: FailureCause
    at: dt.datetime
    message: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class PullProgress:
    done_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class Instance:
    namespace: str
    name: str
    app: str
    instance_id: int
    version: str
    image: str
    node: str
    phase: InstancePhase
    ready: bool
    resources: ResourceVector
    gpu_ids: tuple[int, ...] = ()
    cpu_ids: tuple[int, ...] = ()
    pod_ip: str = ""
    host_ip: str = ""
    restarts: int = 0
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    last_failure: Failure | None = None
    pull: PullProgress | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # a digest of everything but the image: equal digests mean an in-place image swap is enough
    shape: str = ""


@dataclass(frozen=True, slots=True)
class InstanceState:
    """What a long list of instances is filtered and counted by (phase, node, running
    version, readiness), without the rest of the instance's view: ``instance_states`` answers
    one per instance, and only the page shown is listed in full (``list_instances(ids=...)``).
    An app's ready and running counts are read from these too."""

    phase: InstancePhase
    node: str
    version: str
    ready: bool


# ---------------------------------------------------------------- services, configs


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    namespace: str
    name: str
    app: str  # selects the app's instances
    ports: tuple[PortSpec, ...] = ()
    domain: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    instance: str
    ip: str
    node: str
    ready: bool


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    app: str
    cluster_ip: str
    ports: tuple[PortSpec, ...]
    domain: str
    endpoints: tuple[Endpoint, ...]

    @property
    def ready_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.ready)


@dataclass(frozen=True, slots=True)
class ConfigData:
    namespace: str
    name: str
    secret: bool
    data: dict[str, str]


# ---------------------------------------------------------------- observation


# What a provider's change notice (``watch_changes``) names: the (namespace, app) of the
# instance that changed, or None for a change that is no one app's (a node's): the app
# controller looks at that app alone, or at everything.
ChangeOf = tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    seq: int  # increasing per provider; ``events(since=seq)`` resumes after it
    at: dt.datetime
    namespace: str
    object_kind: str  # "Instance" | "Node" | "Service"
    object_name: str
    reason: str
    message: str
    type: str = "Normal"  # or "Warning"


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One observation of an instance or a node. Rates are per second; ``*_total`` counters."""

    target: str  # instance name or node name
    kind: str  # "instance" | "node"
    at: dt.datetime
    cpu_milli: float
    memory_mib: float
    network_rx_bytes_total: float = 0.0
    network_tx_bytes_total: float = 0.0
    disk_used_gib: float = 0.0
    gpu_util: float = 0.0  # 0..1 of the cards or share held
    gpu_memory_mib: float = 0.0
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class ControlPlaneSample:
    """One figure of the cluster's control plane (API server and etcd), under the name the
    platform's metric catalogue gives it (``gaia.monitor.metrics.catalogue``, area
    ``control-plane``: ``gaia_etcd_objects``, ``gaia_apiserver_errors_total``, ...) and its labels
    other than ``cluster``, which the collector adds."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class LogLine:
    at: dt.datetime
    text: str
    stream: str = "stdout"


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str = ""


@runtime_checkable
class ClusterProvider(Protocol):
    """One registered cluster, as the platform sees it."""

    kind: str

    async def check_health(self, *, timeout: float) -> ClusterHealth:
        """Probe the cluster; must return within ``timeout`` seconds, never raise."""
        ...

    async def close(self) -> None: ...

    # nodes
    async def list_nodes(self) -> list[Node]: ...

    async def add_node(self, spec: NodeSpec) -> Node: ...

    async def set_schedulable(self, name: str, schedulable: bool) -> Node:
        """Cordon (False) or uncordon (True)."""
        ...

    async def drain(self, name: str) -> list[str]:
        """Cordon the node and evict its instances; returns the evicted instance names. The
        platform's controllers recreate them elsewhere."""
        ...

    async def remove_node(self, name: str) -> None:
        """Remove a node; refused (``Conflict``) while instances are still bound to it."""
        ...

    # instances
    async def list_instances(
        self,
        *,
        namespace: str | None = None,
        app: str | None = None,
        ids: Collection[int] | None = None,
    ) -> list[Instance]:
        """The instances in ``namespace`` of ``app`` (each None: all), in (app, id) order;
        ``ids``: only those instance ids (one page of a long list: the views of the others are
        never built)."""
        ...

    async def instance_ids(self, *, namespace: str, app: str) -> set[int]:
        """The ids of ``app``'s instances in ``namespace``: what a list pages over, without
        building every instance's view."""
        ...

    async def instance_states(self, *, namespace: str, app: str) -> dict[int, InstanceState]:
        """Each of ``app``'s instances in ``namespace`` by id, with the phase, node, version and
        readiness its view (``list_instances``) would report: what a list filters, counts and
        pages over, and an app's ready count (the same ids as ``instance_ids``)."""
        ...

    async def create_instance(self, spec: InstanceSpec) -> Instance:
        """Bind and start; ``Conflict`` if the name exists, ``InvalidRequest`` if the node cannot
        hold it (gone, not schedulable, out of resources or GPUs)."""
        ...

    async def replace_image(
        self, *, namespace: str, name: str, image: str, version: str
    ) -> Instance:
        """In-place upgrade: kill the container and start it again with ``image`` on the same
        node, with the same IP and GPUs, keeping the name."""
        ...

    async def restart_instance(self, *, namespace: str, name: str) -> Instance:
        """Start the instance's container again where it is (a local restart)."""
        ...

    async def delete_instance(self, *, namespace: str, name: str) -> None:
        """Idempotent: deleting a missing instance is not an error."""
        ...

    # services
    async def apply_service(self, spec: ServiceSpec) -> Service: ...

    async def get_service(self, *, namespace: str, name: str) -> Service: ...

    async def delete_service(self, *, namespace: str, name: str) -> None: ...

    # configs and secrets
    async def apply_config(self, config: ConfigData) -> None: ...

    async def delete_config(self, *, namespace: str, name: str, secret: bool) -> None: ...

    async def list_configs(self, *, namespace: str) -> list[ConfigData]: ...

    # quotas (defence in depth: the platform admits against its own quota first)
    async def apply_quota(self, *, namespace: str, hard: ResourceVector) -> None:
        """Mirror a business's quota on this cluster into the cluster itself (Kubernetes: a
        ResourceQuota in the business's namespace), so that nothing bypassing the platform can
        exceed it either."""
        ...

    async def get_quota(self, *, namespace: str) -> ResourceVector | None:
        """The mirrored quota of ``namespace``, None when there is none."""
        ...

    # observation
    async def events(self, *, since: int = 0, limit: int = 1000) -> list[ClusterEvent]:
        """Events with ``seq > since``, oldest first."""
        ...

    async def metrics(
        self, *, namespace: str | None = None, names: Sequence[str] | None = None
    ) -> list[MetricSample]:
        """The current sample of each instance (filtered) and, without filters, of each node."""
        ...

    async def control_plane_metrics(self) -> list[ControlPlaneSample]:
        """The control plane's health in figures: etcd (reachable, objects per resource, database
        size, request latency and errors) and the API server (requests, 5xx errors, latency,
        requests in flight, watches, memory, CPU). Counters (``*_total``) count since the server
        started; latencies are means over the requests since the previous call (the first call:
        since the server started). Raises ``ConnectionError`` when the figures cannot be read."""
        ...

    async def logs(
        self, *, namespace: str, name: str, tail: int = 100, since: dt.datetime | None = None
    ) -> list[LogLine]: ...

    async def exec(
        self, *, namespace: str, name: str, command: Sequence[str], timeout: float = 10.0
    ) -> ExecResult: ...


@runtime_checkable
class TokenReviewer(Protocol):
    """A cluster that can tell who a token belongs to (Kubernetes' TokenReview): how the P2P
    agents prove their node (``gaia.domain.agent_identity``). The sim cluster has none."""

    async def review_token(self, token: str, *, audience: str) -> ReviewedToken:
        """The cluster's review of ``token`` for ``audience``, its bound node resolved; raises
        ``ConnectionError`` when the cluster cannot be asked (not an answer about the token)."""
        ...


@runtime_checkable
class ImagePrewarmer(Protocol):
    """An optional capability: pull an image onto nodes before any instance there needs it.

    The platform knows what comes next (a gray upgrade's later batches and their nodes) and
    says so here, so that an instance's pull, when its turn comes, finds the image on its node.
    Declarative and level-triggered: each call states the owner's whole wish and replaces the
    last one; nodes left out (or an empty ``nodes``) have their pre-pull called off. Best
    effort: the provider skips what it cannot do (a node gone, an image refused) without
    raising, since the instance's own pull remains the one that must succeed or say why.
    The sim implements it as pulls with no instance behind them; on a real cluster it maps to
    the P2P pre-warm of issue 17 (``gaia.controllers.swarm.SwarmCoordinator.create_prewarm``:
    the nodes' agents fetch the image into their cache), which the kubernetes adapter reaches
    through the ``PrewarmSink`` the platform gives it. A provider without it is simply not
    asked."""

    async def prewarm_image(
        self, *, namespace: str, owner: str, image: str, nodes: Collection[str]
    ) -> None: ...


class PrewarmSink(Protocol):
    """Where an adapter with no pull of its own sends ``ImagePrewarmer`` wishes: on a real
    cluster the P2P coordinator's prewarm jobs of that cluster (``gaia.controllers.swarm.
    SwarmPrewarms``), handed to the adapter by the platform (providers may not import
    controllers). Same contract: ``owner``'s whole wish, replacing the last; no nodes withdraws
    it; best effort, never raises. Called on the platform's event loop, where the coordinator
    lives."""

    def declare_prewarm(self, *, owner: str, image: str, nodes: Collection[str]) -> None: ...


def summarize(node: Node) -> NodeSummary:
    return NodeSummary(
        name=node.name,
        ready=node.ready,
        zone=node.zone,
        labels=dict(node.labels),
        cpu_milli=node.capacity.cpu,
        memory_mib=node.capacity.memory,
        gpus=len(node.gpus),
    )
