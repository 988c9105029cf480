"""Could one instance of a shape ever run in this cluster? A capacity check, not a placement.

An app whose instance fits no node (9 GPUs per instance on 8-GPU nodes, more memory than any
node has) would be admitted against the quota and then wait forever, holding that quota. The
API asks ``fits_nowhere`` when an app or a new version arrives: it takes the cluster's nodes,
empties each one (free = capacity, every card whole and free), and asks the very filter the
placement uses (``GaiaScheduler.explain``: resources, node selector, zone, GPU model, the GPU
tree with card memory and the required link level) whether at least one empty node could take
one instance. Full nodes are fine (they may free up); readiness and cordons are ignored for the
same reason (a node comes back). A budget per GPU model is the quota's business, not capacity.

The answer, when nothing fits, is a sentence for a person: the first dimension no node has
enough of ("needs 9 GPUs per instance; the largest node of cluster gpu-1 has 8"), or, when every
dimension fits somewhere but never together, the scheduler's per-node reasons.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from gaia.domain.resources import describe
from gaia.scheduler.placement import GaiaScheduler
from gaia.scheduler.port import WHOLE_CARD, ClusterView, NodeView, PlacementRequest

# Node capacity dimensions in the order a person reads a shape, with their words.
_DIMENSIONS = (
    ("cpu", "CPU"),
    ("memory", "memory"),
    ("local_disk", "local disk"),
    ("bandwidth", "bandwidth"),
    ("gpu", "GPUs"),
)


def empty_node(node: NodeView) -> NodeView:
    """``node`` with nothing on it: every card whole and free, CPU and memory free up to the
    node's capacity (``free`` plus what is used). Local disk and bandwidth are taken from
    ``free`` as they are, since a ``NodeView`` does not say what is used of them: give a view
    built from the node's capacity (``gaia.controllers.apps.node_view(..., empty=True)``)."""
    return dataclasses.replace(
        node,
        ready=True,
        schedulable=True,
        free=dataclasses.replace(
            node.free,
            cpu=node.free.cpu + node.used_cpu,
            memory=node.free.memory + node.used_memory,
            gpu=max(node.free.gpu, WHOLE_CARD * len(node.gpu_free)),
            gpu_memory=max(node.free.gpu_memory, sum(node.gpu_memory_total.values())),
        ),
        gpu_free=dict.fromkeys(node.gpu_free, WHOLE_CARD),
        gpu_memory_free=dict(node.gpu_memory_total),
        used_cpu=0,
        used_memory=0,
        exclusive_cpus=set(),
    )


def fits_nowhere(
    request: PlacementRequest, nodes: Sequence[NodeView], *, cluster: str
) -> str | None:
    """None when one instance of ``request`` fits at least one of ``nodes`` emptied; otherwise
    why not, naming the resource and the largest node's capacity.

    ``nodes`` are emptied with ``empty_node`` first, so a view of the cluster as it is now
    serves, best one built from each node's capacity."""
    if not nodes:
        return f"cluster {cluster} has no nodes; one instance needs a node to run on"
    request = dataclasses.replace(request, avoid_nodes=frozenset(), gpu_model_budget={})
    # Clusters are mostly many nodes of a few shapes: ask once per shape, and stop at the
    # first that fits (a 5,000-node cluster answers as fast as a 5-node one).
    shapes: dict[tuple[object, ...], NodeView] = {}
    keys = [_shape(node, request) for node in nodes]
    for key, node in zip(keys, nodes, strict=True):
        if key not in shapes:
            shapes[key] = empty_node(node)
    scheduler = GaiaScheduler()
    view = ClusterView(shapes.values())
    if any(scheduler.why_not(request, n, view) is None for n in view.nodes):
        return None
    reasons: Counter[str] = Counter()
    for key in keys:
        reasons[scheduler.why_not(request, shapes[key], view) or ""] += 1
    return _sentence(request, view.nodes, dict(reasons), cluster=cluster)


def _shape(node: NodeView, request: PlacementRequest) -> tuple[object, ...]:
    """What decides whether ``node``, emptied, fits ``request``: not its name, its use, or
    labels the request does not select on (every node has its own hostname label)."""
    free = node.free
    return (
        free.cpu + node.used_cpu,
        free.memory + node.used_memory,
        free.local_disk,
        free.bandwidth,
        len(node.gpu_free),
        node.zone,
        tuple(node.labels.get(key) for key in request.node_selector),
        node.gpu_model,
        node.gpu_links,
        tuple(sorted(node.gpu_memory_total.items())),
        tuple(sorted(node.gpu_cpus.items())),
    )


def _sentence(
    request: PlacementRequest, nodes: list[NodeView], reasons: dict[str, int], *, cluster: str
) -> str:
    """The clearest reason first: what no node matches, then the dimension no node is large
    enough for, then card memory and links, then the scheduler's own per-node reasons."""
    where = f"cluster {cluster}"
    for key, value in request.node_selector.items():
        nodes = [n for n in nodes if n.labels.get(key) == value]
        if not nodes:
            return f"no node of {where} has the label {key}={value} the node selector asks for"
    if request.zone:
        nodes = [n for n in nodes if n.zone == request.zone]
        if not nodes:
            return f"no node of {where} is in zone {request.zone}"
    need = request.resources
    if need.gpu and request.gpu_model:
        nodes = [n for n in nodes if n.gpu_model == request.gpu_model]
        if not nodes:
            return f"no node of {where} has {request.gpu_model} GPUs"
    for name, words in _DIMENSIONS:
        asked = getattr(need, name)
        largest = max(getattr(n.free, name) for n in nodes)
        if asked > largest:
            if name == "gpu":
                cards = largest // WHOLE_CARD
                return (
                    f"needs {_cards(asked)} per instance; the largest node of {where} has "
                    f"{cards} GPU{'' if cards == 1 else 's'}"
                )
            return (
                f"needs {describe(name, asked)} of {words} per instance; the largest node of "
                f"{where} has {describe(name, largest)}"
            )
    if need.gpu:
        cards = max(1, need.gpu // WHOLE_CARD)
        per_card = need.gpu_memory // cards if need.gpu >= WHOLE_CARD else need.gpu_memory
        largest_card = max((m for n in nodes for m in n.gpu_memory_total.values()), default=0)
        if per_card > largest_card:
            return (
                f"needs {per_card} MiB of GPU memory per card; the largest GPU of {where} has "
                f"{largest_card} MiB"
            )
        if request.max_link and cards > 1:
            return (
                f"needs {cards} GPUs linked by {request.max_link} or better; no node of {where} "
                f"has such a set even when empty"
            )
    parts = ", ".join(f"{count} {why}" for why, count in sorted(reasons.items()))
    return f"no node of {where} can hold one instance even when empty: {parts}"


def _cards(gpu: int) -> str:
    if gpu % WHOLE_CARD == 0:
        cards = gpu // WHOLE_CARD
        return f"{cards} GPU{'' if cards == 1 else 's'}"
    return f"{gpu / WHOLE_CARD:g} of a GPU"


__all__ = ["empty_node", "fits_nowhere"]
