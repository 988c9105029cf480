"""The scheduler port: a pure function of a request and a view of the cluster.

The controller builds one ``ClusterView`` per reconcile pass from the provider's nodes and asks
the scheduler to place each new instance in turn; ``ClusterView.bind`` records every placement
so that the next request of the same pass sees the node as fuller. Nothing here does I/O: the
same scheduler serves the ``sim`` provider, real clusters, and later a scheduler extender.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gaia.domain.resources import DIMENSION_NAMES, ResourceVector

WHOLE_CARD = 100  # gpu amounts are hundredths of a card


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


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    name: str
    resources: ResourceVector
    avoid_nodes: frozenset[str] = frozenset()
    node_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    node: str
    gpu_ids: tuple[int, ...] = ()


class Unschedulable(Exception):
    """No node can take the request; ``str()`` says why, per node, as ``kubectl`` would."""

    def __init__(self, request: PlacementRequest, reasons: Mapping[str, int], total: int) -> None:
        self.reasons = dict(reasons)
        parts = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
        super().__init__(f"0/{total} nodes are available for {request.name}: {parts}")


class ClusterView:
    def __init__(self, nodes: Iterable[NodeView]) -> None:
        self.nodes: list[NodeView] = list(nodes)
        self.by_name: dict[str, NodeView] = {n.name: n for n in self.nodes}

    def bind(self, placement: Placement, resources: ResourceVector) -> None:
        node = self.by_name[placement.node]
        node.free = node.free.minus(resources)
        if placement.gpu_ids:
            share = resources.gpu // len(placement.gpu_ids)
            for gpu in placement.gpu_ids:
                node.gpu_free[gpu] = node.gpu_free.get(gpu, 0) - share

    def release(self, node_name: str, resources: ResourceVector, gpu_ids: tuple[int, ...]) -> None:
        node = self.by_name.get(node_name)
        if node is None:
            return
        node.free = node.free + resources
        if gpu_ids:
            share = resources.gpu // len(gpu_ids)
            for gpu in gpu_ids:
                node.gpu_free[gpu] = node.gpu_free.get(gpu, 0) + share


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
    for dim in DIMENSION_NAMES:
        if dim in ("cloud_disk", "shared_disk"):
            continue  # cloud disks are attached volumes, not node capacity
        if getattr(request.resources, dim) > getattr(node.free, dim):
            return f"Insufficient {dim}"
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
