"""The scheduler extender's decisions: which nodes can take a pod (filter) and how good each is
(prioritize), as pure functions of kube-scheduler's ``ExtenderArgs`` and a scheduler.

kube-scheduler places pods that are not the platform's (the platform binds its own instances
itself). Of the nodes that passed its own filters, **filter** keeps those that can take the pod;
for each that cannot it says why, and whether preemption could help (``FailedNodes``) or not
(``FailedAndUnresolvableNodes``: it would not fit on the node even if every GPU were free, or the
node is the wrong model). **Prioritize** scores the nodes that fit. The wire types are
``protocol``'s; choosing and recording the cards at bind is ``bind``'s.

**Pods.** The effective request is computed as kube-scheduler does (``gaia.kube.resources``,
which also gives the units of every GPU resource name: ``nvidia.com/gpu``, ``gaia.io/gpu-core`` /
``gaia.io/gpu-memory``, gpu-manager's ``tencent.com/vcuda-core`` / ``vcuda-memory``). GPU memory is
spread evenly over the cards of a whole-card request and lies on the one card of a share.
``spec.nodeSelector`` becomes the request's node selector; pod annotations choose the GPU model
(``gaia.io/gpu-model``, matched against the node's model) and the loosest link allowed between the
pod's cards (``gaia.io/gpu-link``: ``NV`` for any NVLink, ``NV<n>`` for at least n bonded links,
``PIX``, ``PXB``, ``PHB``, ``NODE`` or ``SOC``).

**Nodes** (``NodeView``) are read by ``gaia.kube.nodes`` (the same reader as the ``kubernetes``
provider's): allocatable CPU, memory and disk, which kube-scheduler's own ``NodeResourcesFit``
has already checked against the running pods, so the extender checks them against allocatable
only; the cards, their memory, model and link matrix (``gaia.io/gpu-topology``); and per card what
pods bound through this extender hold (``gaia.io/gpu-used``: the bind step adds to it; whoever
runs the node side rewrites it from the pods actually on the node, and GPU pods bound without this
extender are invisible to it). A node whose GPU annotations cannot be read is refused to GPU pods
(``problem``), not the whole call.

**Decisions** are the scheduler port's: each node is asked ``place`` on a one-node
``ClusterView``, so the reasons per node are the scheduler's own. Cards whose free memory cannot
hold the pod's share are shown to the scheduler as full, and the GPU model is checked here, so the
answer is right whatever scheduler sits behind the port (``ResourceFitScheduler`` checks neither).
Prioritize uses the scheduler's ``score(request, node, cluster) -> 0..1`` (the cluster being
the nodes that fit) when it has one; otherwise the node
``place`` picks among the fitting ones scores 10 and the others 0..9 by the share of GPU left free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from gaia.domain.gpu_links import InvalidLinkMatrix, canonical_link, check_link
from gaia.domain.resources import ResourceVector
from gaia.kube.fields import optional_object, string, string_map
from gaia.kube.labels import GPU_LINK_ANNOTATION, GPU_MODEL_ANNOTATION
from gaia.kube.nodes import NodeGpus, read_node
from gaia.kube.resources import pod_requests, resources_of
from gaia.scheduler.extender.protocol import (
    MAX_EXTENDER_PRIORITY,
    MIN_EXTENDER_PRIORITY,
    BadExtenderRequest,
    ExtenderArgs,
    ExtenderFilterResult,
    HostPriority,
)
from gaia.scheduler.port import (
    WHOLE_CARD,
    ClusterView,
    NodeView,
    Placement,
    PlacementRequest,
    Unschedulable,
)

# ------------------------------------------------------------------------------- pods


def _link(raw: str, what: str) -> str:
    link = canonical_link(raw)
    try:
        check_link(link)
    except InvalidLinkMatrix as exc:
        raise BadExtenderRequest(f"{what} is {raw!r}: {exc.message}") from None
    return link


def pod_request(pod: Mapping[str, Any]) -> PlacementRequest:
    """A core/v1 Pod as the scheduler port's ``PlacementRequest``."""
    meta = optional_object(pod.get("metadata"), "Pod.metadata")
    spec = optional_object(pod.get("spec"), "Pod.spec")
    annotations = string_map(meta.get("annotations"), "Pod.metadata.annotations")
    name = string(meta.get("name"), "Pod.metadata.name")
    namespace = string(meta.get("namespace"), "Pod.metadata.namespace") or "default"
    link = annotations.get(GPU_LINK_ANNOTATION, "")
    return PlacementRequest(
        name=f"{namespace}/{name}",
        resources=resources_of(pod_requests(pod)),
        node_selector=string_map(spec.get("nodeSelector"), "Pod.spec.nodeSelector"),
        gpu_model=annotations.get(GPU_MODEL_ANNOTATION, "").strip(),
        max_link=_link(link, f"the pod annotation {GPU_LINK_ANNOTATION}") if link else "",
    )


# ------------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class ExtenderNode:
    """A core/v1 Node as the extender reads it (``document`` is echoed back by filter)."""

    name: str
    ready: bool
    schedulable: bool
    allocatable: ResourceVector
    labels: Mapping[str, str]
    zone: str
    gpus: NodeGpus
    resource_version: str
    document: Mapping[str, Any]
    problem: str | None = None  # why the node's GPU annotations cannot be read


def parse_node(doc: Mapping[str, Any]) -> ExtenderNode:
    """A core/v1 Node (``gaia.kube.nodes.read_node``). GPU annotations that cannot be read make
    the node unusable for GPU pods (``problem``), not the whole call."""
    node = read_node(doc)
    unreadable = node.gpus.unreadable
    problem = None
    if unreadable:
        problem = f"node(s) with unreadable GPU annotations: {'; '.join(unreadable.values())}"
    return ExtenderNode(
        name=node.name,
        ready=node.ready,
        schedulable=node.schedulable,
        allocatable=replace(node.capacity, gpu=0, gpu_memory=0),
        labels=node.labels,
        zone=node.zone,
        gpus=node.gpus,
        resource_version=node.resource_version,
        document=node.document,
        problem=problem,
    )


def card_share(request: PlacementRequest) -> tuple[int, int, int]:
    """(cards, cores per card, MiB per card) that ``request`` takes."""
    gpu = request.resources.gpu
    if gpu <= 0:
        return 0, 0, 0
    cards = gpu // WHOLE_CARD if gpu >= WHOLE_CARD else 1
    return cards, gpu // cards, -(-request.resources.gpu_memory // cards)


def node_view(node: ExtenderNode, request: PlacementRequest, *, idle: bool = False) -> NodeView:
    """The ``NodeView`` that the scheduler decides ``request`` on; ``idle``: as if no GPU were
    used (to tell whether preemption could ever help)."""
    _, _, memory_share = card_share(request)
    gpu_free: dict[int, int] = {}
    memory_free: dict[int, int] = {}
    memory_total: dict[int, int] = {}
    per_card = node.gpus.memory_per_card
    unhealthy = node.gpus.unhealthy
    for card in range(node.gpus.cards):
        cores_used, memory_used = (0, 0) if idle else node.gpus.used.get(card, (0, 0))
        free_memory = max(0, per_card - memory_used)
        # A card that cannot hold the pod's memory share is shown as full, so that the choice is
        # right whatever scheduler is behind the port; so is a card the node agent reports
        # unhealthy (gaia.io/gpu-health), idle or not: freeing it would not make it usable.
        fits = memory_share <= free_memory and card not in unhealthy
        gpu_free[card] = WHOLE_CARD - cores_used if fits else 0
        if per_card:
            memory_free[card] = free_memory
            memory_total[card] = per_card
    return NodeView(
        name=node.name,
        ready=node.ready,
        schedulable=node.schedulable,
        free=replace(
            node.allocatable,
            gpu=sum(gpu_free.values()),
            gpu_memory=sum(memory_free.values()),
        ),
        zone=node.zone,
        labels=node.labels,
        gpu_free=gpu_free,
        gpu_links=node.gpus.links,
        gpu_memory_total=memory_total,
        gpu_memory_free=memory_free,
        gpu_model=node.gpus.model,
    )


# ------------------------------------------------------------------------------- decisions


class PlacementScheduler(Protocol):
    """What the extender needs of a scheduler: the port's ``place``."""

    def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
        """A node (and GPU ids) for ``request``; raises ``Unschedulable``."""
        ...


@runtime_checkable
class NodeScorer(Protocol):
    """A scheduler that can also score one node for a request (0 worst .. 1 best), among the
    other nodes of ``cluster`` (what is rare there is worth more)."""

    def score(self, request: PlacementRequest, node: NodeView, cluster: ClusterView) -> float: ...


def why_not_here(
    node: ExtenderNode, request: PlacementRequest, scheduler: PlacementScheduler, *, idle: bool
) -> str | None:
    """Why ``request`` cannot go to ``node`` (None: it can); ``idle``: as if no GPU were used."""
    if request.resources.gpu:
        if node.problem is not None:
            return node.problem
        if request.gpu_model and node.gpus.model != request.gpu_model:
            return f"node(s) without {request.gpu_model} GPUs"
    try:
        scheduler.place(request, ClusterView([node_view(node, request, idle=idle)]))
    except Unschedulable as exc:
        return next(iter(exc.reasons), None) or str(exc)
    return None


def _parse_call(args: Mapping[str, Any]) -> tuple[PlacementRequest, list[ExtenderNode]]:
    call = ExtenderArgs.from_wire(args)
    if call.nodes is None:
        raise BadExtenderRequest(
            "the extender needs Node objects: configure it with nodeCacheCapable: false"
        )
    if not call.pod:
        raise BadExtenderRequest("ExtenderArgs without a Pod")
    return pod_request(call.pod), [parse_node(doc) for doc in call.nodes]


def filter_nodes(args: Mapping[str, Any], scheduler: PlacementScheduler) -> dict[str, Any]:
    """Answer a filter call (``ExtenderArgs`` in, ``ExtenderFilterResult`` out, as JSON)."""
    try:
        request, nodes = _parse_call(args)
    except BadExtenderRequest as exc:
        return ExtenderFilterResult(error=str(exc)).to_wire()
    fits: list[Mapping[str, Any]] = []
    failed: dict[str, str] = {}
    unresolvable: dict[str, str] = {}
    for node in nodes:
        reason = why_not_here(node, request, scheduler, idle=False)
        if reason is None:
            fits.append(node.document)
        elif why_not_here(node, request, scheduler, idle=True) is None:
            failed[node.name] = reason  # freeing GPUs (preemption) would make room
        else:
            unresolvable[node.name] = reason
    return ExtenderFilterResult(
        nodes=fits, failed_nodes=failed, failed_and_unresolvable_nodes=unresolvable
    ).to_wire()


def _free_gpu_share(node: ExtenderNode) -> float:
    total = node.gpus.cards * WHOLE_CARD
    if not total:
        return 1.0
    used = sum(cores for cores, _ in node.gpus.used.values())
    return max(0.0, (total - used) / total)


def _scaled(score: float) -> int:
    if not math.isfinite(score):
        return MIN_EXTENDER_PRIORITY
    score = min(1.0, max(0.0, score))
    return round(score * MAX_EXTENDER_PRIORITY)


def _readable_names(args: Mapping[str, Any]) -> list[str]:
    try:
        call = ExtenderArgs.from_wire(args)
    except BadExtenderRequest:
        return []
    if call.nodes is None:
        return list(call.node_names or [])
    names = []
    for doc in call.nodes:
        meta = doc.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            names.append(meta["name"])
    return names


def prioritize_nodes(
    args: Mapping[str, Any], scheduler: PlacementScheduler
) -> list[dict[str, Any]]:
    """Answer a prioritize call (``ExtenderArgs`` in, ``HostPriorityList`` out, as JSON).

    The list has no error field, and kube-scheduler ignores a failed prioritize anyway: a call we
    cannot read scores every node it names 0, so that the extender abstains (filter has already
    reported what is wrong with the pod).
    """
    try:
        request, nodes = _parse_call(args)
    except BadExtenderRequest:
        return [
            HostPriority(name, MIN_EXTENDER_PRIORITY).to_wire() for name in _readable_names(args)
        ]
    fitting = [n for n in nodes if why_not_here(n, request, scheduler, idle=False) is None]
    scores: dict[str, int] = {}
    if isinstance(scheduler, NodeScorer):
        view = ClusterView(node_view(n, request) for n in fitting)
        for node in fitting:
            scores[node.name] = _scaled(scheduler.score(request, view.by_name[node.name], view))
    elif fitting:
        try:
            chosen = scheduler.place(
                request, ClusterView(node_view(n, request) for n in fitting)
            ).node
        except Unschedulable:
            chosen = ""
        for node in fitting:
            if node.name == chosen:
                scores[node.name] = MAX_EXTENDER_PRIORITY
            else:
                scores[node.name] = int((MAX_EXTENDER_PRIORITY - 1) * _free_gpu_share(node))
    return [
        HostPriority(n.name, scores.get(n.name, MIN_EXTENDER_PRIORITY)).to_wire() for n in nodes
    ]
