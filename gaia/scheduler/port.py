"""The scheduler port: a pure function of a request and a view of the cluster.

The controller builds one ``ClusterView`` per reconcile pass from the provider's nodes and asks
the scheduler to place each new instance in turn; ``ClusterView.bind`` records every placement
so that the next request of the same pass sees the node as fuller. Nothing here does I/O: the
same scheduler serves the ``sim`` provider, real clusters, and the scheduler extender.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gaia.domain.resources import DIMENSION_NAMES, DIMENSIONS, ResourceVector
from gaia.scheduler.cpus import MILLI, is_exclusive

# gpu amounts are hundredths of a card: the domain's gpu unit
WHOLE_CARD = next(scale for name, scale, _, _ in DIMENSIONS if name == "gpu")


@dataclass(slots=True)
class NodeView:
    name: str
    ready: bool
    schedulable: bool
    free: ResourceVector
    zone: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    gpu_free: dict[int, int] = field(default_factory=dict)  # card index -> hundredths free
    gpu_links: tuple[tuple[str, ...], ...] = ()
    gpu_memory_total: dict[int, int] = field(default_factory=dict)  # card index -> MiB
    gpu_memory_free: dict[int, int] = field(default_factory=dict)
    gpu_model: str = ""
    gpu_cpus: dict[int, tuple[int, ...]] = field(default_factory=dict)  # card -> nearest cores
    used_cpu: int = 0  # millicores already requested on the node (for binpack/spread)
    used_memory: int = 0
    # cores held by exclusive instances (whole-core requests), see gaia.scheduler.cpus
    exclusive_cpus: set[int] = field(default_factory=set)

    @property
    def free_cards(self) -> int:
        return sum(1 for f in self.gpu_free.values() if f >= WHOLE_CARD)


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    name: str
    resources: ResourceVector
    avoid_nodes: frozenset[str] = frozenset()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    policy: str = ""  # "binpack" | "spread"; empty: binpack for GPU requests, else spread
    zone: str = ""
    gpu_model: str = ""  # empty: any model
    max_link: str = ""  # e.g. "PIX": every pair of the GPUs at least this close; empty: any
    # GPU model -> hundredths of a card the business may still take (models not listed: no cap)
    gpu_model_budget: Mapping[str, int] = field(default_factory=dict)
    # floating-IP instances: the underlay subnets (CIDR) whose nodes may take it (its kept
    # address's, or those with a free pool address); None: any node
    subnets: frozenset[str] | None = None
    # zone spread, as kube-scheduler's topologySpreadConstraints on topology.kubernetes.io/zone
    # with whenUnsatisfiable: DoNotSchedule: no zone may hold more than ``max_zone_skew`` more of
    # the app's instances than the emptiest eligible zone. ``zone_counts``: the app's instances
    # per eligible zone (``eligible_zones``), zeros included. 0: no spread
    max_zone_skew: int = 0
    zone_counts: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    node: str
    gpu_ids: tuple[int, ...] = ()
    cpu_ids: tuple[int, ...] = ()  # cores to bind the instance to (gaia.scheduler.cpus)


class Unschedulable(Exception):
    """No node can take the request; ``str()`` says why, per node, as ``kubectl`` would."""

    def __init__(self, request: PlacementRequest, reasons: Mapping[str, int], total: int) -> None:
        self.reasons = dict(reasons)
        parts = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
        super().__init__(f"0/{total} nodes are available for {request.name}: {parts}")


class ClusterView:
    """The nodes of one cluster as a scheduler sees them during one pass (mutable: ``bind``).

    Schedulers may keep per-node caches here (``trees``: GPU topology trees; ``topologies``:
    parsed link matrices shared by identical nodes); ``by_free_cards`` indexes nodes by how
    many whole GPU cards they have free, ``shared`` the nodes with a card partly in use."""

    def __init__(self, nodes: Iterable[NodeView]) -> None:
        self.nodes: list[NodeView] = list(nodes)
        self.by_name: dict[str, NodeView] = {n.name: n for n in self.nodes}
        self.trees: dict[str, Any] = {}
        self.topologies: dict[Any, Any] = {}  # link matrix (and cores) -> GpuTopology
        self.by_free_cards: dict[int, dict[str, NodeView]] = {}
        self.shared: dict[str, NodeView] = {}  # nodes with a card that is partly in use
        self.notes: dict[str, Any] = {}  # schedulers' caches that depend on the nodes only
        for node in self.nodes:
            if node.gpu_free:
                self.by_free_cards.setdefault(node.free_cards, {})[node.name] = node
                if _partly_used(node):
                    self.shared[node.name] = node

    def copy(self) -> ClusterView:
        """A scratch copy for what-if placement (gang scheduling); trees are rebuilt lazily."""
        return ClusterView(
            NodeView(
                **{
                    **{f: getattr(n, f) for f in NodeView.__dataclass_fields__},
                    "gpu_free": dict(n.gpu_free),
                    "gpu_memory_free": dict(n.gpu_memory_free),
                    "exclusive_cpus": set(n.exclusive_cpus),
                }
            )
            for n in self.nodes
        )

    def _reindex(self, node: NodeView, before: int) -> None:
        if not node.gpu_free:
            return
        self.by_free_cards.get(before, {}).pop(node.name, None)
        self.by_free_cards.setdefault(node.free_cards, {})[node.name] = node
        if _partly_used(node):
            self.shared[node.name] = node
        else:
            self.shared.pop(node.name, None)

    def bind(self, placement: Placement, resources: ResourceVector) -> None:
        self._change(placement.node, resources, placement.gpu_ids, sign=-1)
        self.hold_cores(placement.node, resources, placement.cpu_ids)

    def release(
        self,
        node_name: str,
        resources: ResourceVector,
        gpu_ids: tuple[int, ...],
        cpu_ids: tuple[int, ...] = (),
    ) -> None:
        if node_name in self.by_name:
            self._change(node_name, resources, gpu_ids, sign=1)
            if is_exclusive(resources):
                self.by_name[node_name].exclusive_cpus.difference_update(cpu_ids)

    def hold_cores(self, node_name: str, resources: ResourceVector, cpu_ids: Iterable[int]) -> None:
        """Note the cores an instance of ``resources`` is bound to: held exclusively when it asks
        for whole cores and is bound to exactly that many (the controller calls this for every
        instance the cluster reports, which is how the allocation is rebuilt after a restart).
        A binding of another size was not made by this rule (an instance placed before it was
        bound to its GPUs' whole socket, shared with its neighbours): it holds nothing."""
        node = self.by_name.get(node_name)
        cores = set(cpu_ids)
        if node is not None and is_exclusive(resources) and len(cores) == resources.cpu // MILLI:
            node.exclusive_cpus.update(cores)

    def _change(
        self, name: str, resources: ResourceVector, gpu_ids: tuple[int, ...], *, sign: int
    ) -> None:
        node = self.by_name[name]
        before = node.free_cards
        if sign < 0:
            node.free = node.free.minus(resources)
        else:
            node.free = node.free + resources
        node.used_cpu -= sign * resources.cpu
        node.used_memory -= sign * resources.memory
        if gpu_ids:
            share = resources.gpu // len(gpu_ids)
            memory = resources.gpu_memory // len(gpu_ids)
            for gpu in gpu_ids:
                node.gpu_free[gpu] = node.gpu_free.get(gpu, 0) + sign * share
                if gpu in node.gpu_memory_free:
                    node.gpu_memory_free[gpu] += sign * memory
            # the node's topology tree (if a scheduler built one) is rebuilt from the view
            self.trees.pop(name, None)
        self._reindex(node, before)


def _partly_used(node: NodeView) -> bool:
    return any(0 < free < WHOLE_CARD for free in node.gpu_free.values())


NODE_CAPACITY = ("cpu", "memory", "local_disk", "bandwidth", "gpu", "gpu_memory")
# A new quota dimension must be added to why_not (or to the attached kinds below) on purpose.
assert set(DIMENSION_NAMES) == {*NODE_CAPACITY, "cloud_disk", "shared_disk"}


def why_not(node: NodeView, request: PlacementRequest) -> str | None:
    """The reason ``node`` cannot take ``request``, or None when it can (GPU ids aside)."""
    if node.name in request.avoid_nodes:
        return "node(s) avoided (blacklisted or failed here)"
    if not node.ready:
        return "node(s) not ready"
    if not node.schedulable:
        return "node(s) unschedulable"
    for key, value in request.node_selector.items():
        if node.labels.get(key) != value:
            return "node(s) didn't match the node selector"
    if request.zone and node.zone != request.zone:
        return "node(s) in another zone"
    if request.max_zone_skew:
        spread = zone_spread_refusal(request, node)
        if spread is not None:
            return spread
    # every dimension that is node capacity (cloud disks are attached volumes); spelt out, not
    # looped with getattr: this runs for every node of every decision
    need, free = request.resources, node.free
    if need.cpu > free.cpu:
        return "Insufficient cpu"
    if need.memory > free.memory:
        return "Insufficient memory"
    if need.local_disk > free.local_disk:
        return "Insufficient local_disk"
    if need.bandwidth > free.bandwidth:
        return "Insufficient bandwidth"
    if need.gpu > free.gpu:
        return "Insufficient gpu"
    if need.gpu_memory > free.gpu_memory:
        return "Insufficient gpu_memory"
    return None


def eligible_zones(
    cluster: ClusterView, *, node_selector: Mapping[str, str], avoid_nodes: frozenset[str]
) -> set[str]:
    """The zones a zone-spread request counts its skew over: those with a node that is ready,
    schedulable, not avoided and matches the selector (as kube-scheduler counts only the
    domains of nodes that pass the pod's node affinity). A zone whose nodes are all lost drops
    out, so its instances are placed again in the others."""
    return {
        n.zone
        for n in cluster.nodes
        if n.zone
        and n.ready
        and n.schedulable
        and n.name not in avoid_nodes
        and all(n.labels.get(k) == v for k, v in node_selector.items())
    }


def zone_spread_refusal(request: PlacementRequest, node: NodeView) -> str | None:
    """Why a zone-spread instance may not go to ``node``'s zone now."""
    if not request.max_zone_skew:
        return None
    if not node.zone:
        return "node(s) without a zone (topology.kubernetes.io/zone), which zone spread needs"
    here = request.zone_counts.get(node.zone)
    if here is None:
        return "node(s) in a zone the spread does not count"
    least = min(request.zone_counts.values())
    if here + 1 - least > request.max_zone_skew:
        return (
            f"node(s) in zones that would exceed the zone spread's max skew {request.max_zone_skew}"
        )
    return None


def pick_gpus(node: NodeView, gpu: int) -> tuple[int, ...] | None:
    """Lowest-index cards for ``gpu`` hundredths: whole free cards, or the fullest card that
    still fits a fraction (packing fractions leaves whole cards for whole-card jobs)."""
    if gpu <= 0:
        return ()
    if gpu >= WHOLE_CARD:
        if gpu % WHOLE_CARD:
            return None
        free = [i for i, f in sorted(node.gpu_free.items()) if f >= WHOLE_CARD]
        need = gpu // WHOLE_CARD
        return tuple(free[:need]) if len(free) >= need else None
    fits = [(f, i) for i, f in node.gpu_free.items() if f >= gpu]
    if not fits:
        return None
    return (min(fits)[1],)


class Scheduler(Protocol):
    def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
        """A node (and GPU ids) for ``request``; raises ``Unschedulable``. Does not bind."""
        ...
