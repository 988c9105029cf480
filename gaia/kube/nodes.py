"""The one reader of a core/v1 Node: capacity, readiness and the GPU facts, for the ``kubernetes``
provider (``Node`` on the port) and the scheduler extender (``NodeView`` for the scheduler).

What flows in is a Node as the API server returns it; what flows out is a ``KubeNode``: what
both readers need, read one way. Each adds only its own: the provider the bandwidth and what
its pods hold, the extender the free share of each card.

**Capacity** is ``status.allocatable`` (``capacity`` when absent): cpu millicores, memory MiB,
disk GiB, all rounded down (a node never promises more than it has). **Cards** come from the
allocatable GPU resources (``nvidia.com/gpu``, or ``gaia.io/gpu-core`` / ``tencent.com/vcuda-core``
over 100); GPU memory is the allocatable ``gaia.io/gpu-memory`` (or ``tencent.com/vcuda-memory``
x 256 MiB), spread evenly over the cards. The **model** is the label ``gaia.io/gpu-model``, else
GPU feature discovery's ``nvidia.com/gpu.product``.

Two annotations carry what Kubernetes does not model per card:

- ``gaia.io/gpu-topology``: the ``nvidia-smi topo -m`` link matrix as a JSON list of lists
  (``[["X","NV2"],["NV2","X"]]``; ``NV<n>`` keeps its link count, ``SYS`` reads as ``SOC``),
  checked by the domain's one rule set (``gaia.domain.gpu_links.read_matrix``). It must describe
  exactly the node's cards; without it the cards count as equally linked.
  ``encode_gpu_topology`` writes it.
- ``gaia.io/gpu-used``: what pods bound through the scheduler extender hold, per card, as JSON
  ``{"<card index>": [cores used in hundredths, memory used in MiB]}`` (``encode_gpu_used``).

The node agent (``gaia.node.publish``) writes two more, read into ``NodeGpus``:

- ``gaia.io/gpu-health``: the cards that are not healthy and why, as JSON
  ``{"<card index>": ["XID 79 (GPU has fallen off the bus)", ...]}``; ``{}`` when every card is
  healthy (``encode_gpu_health``). Those cards are ``NodeGpus.unhealthy``: nothing new is placed
  on them.
- ``gaia.io/gpu-numa``: each card's NUMA node and nearest cores, as JSON
  ``{"<card index>": [<NUMA node or null>, "<cpuset>"]}`` (``{"0": [0, "0-55,112-167"]}``;
  ``encode_gpu_numa``): ``NodeGpus.numa_node`` and ``NodeGpus.cpus``, so that an instance can be
  bound to the cores next to its cards.

Both describe the machine's cards, which may be more than the allocatable ones (a card the device
plugin reports unhealthy leaves the allocatable count): entries for cards past the count are
ignored, not refused.

An annotation that cannot be read is left out and said why in ``NodeGpus.unreadable`` (annotation
-> reason, naming the annotation): the provider shows it in the node's message and the extender
keeps GPU pods off the node, but neither refuses the whole node for it. A Node whose structure is
wrong (labels that are not strings, a quantity that is not one) raises ``UnreadableObject``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from gaia.domain.gpu_links import InvalidLinkMatrix, LinkMatrix, read_matrix
from gaia.domain.resources import ResourceVector
from gaia.kube.errors import UnreadableObject
from gaia.kube.fields import json_object, optional_object, string, string_map
from gaia.kube.labels import (
    GPU_HEALTH_ANNOTATION,
    GPU_MODEL_LABEL,
    GPU_NUMA_ANNOTATION,
    GPU_PRODUCT_LABEL,
    GPU_TOPOLOGY_ANNOTATION,
    GPU_USED_ANNOTATION,
    ZONE_LABEL,
    cpuset,
    parse_cpuset,
)
from gaia.kube.quantities import GIB, MIB, clamp_amount, floor_amount
from gaia.kube.resources import (
    GAIA_GPU_CORE,
    GAIA_GPU_MEMORY,
    NVIDIA_GPU,
    VCUDA_CORE,
    VCUDA_MEMORY,
    VCUDA_MEMORY_BLOCK_MIB,
    WHOLE_CARD,
    ResourceAmounts,
    resource_list,
)

GpuUse = Mapping[int, tuple[int, int]]  # card index -> (cores used in hundredths, MiB used)


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """A node's cards as its allocatable resources, labels and annotations describe them."""

    cards: int = 0
    memory_per_card: int = 0  # MiB; 0 when the node advertises no GPU memory resource
    used: GpuUse = field(default_factory=dict)  # gaia.io/gpu-used
    links: LinkMatrix = ()  # gaia.io/gpu-topology; () when absent or unreadable
    model: str = ""
    unreadable: Mapping[str, str] = field(default_factory=dict)  # annotation -> why it was left out
    # gaia.io/gpu-health: the cards nothing new may use, and why (card -> reasons)
    unhealthy: frozenset[int] = frozenset()
    health_reasons: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    # gaia.io/gpu-numa: per card, its NUMA node and nearest cores (cards the agent knew)
    numa_node: Mapping[int, int] = field(default_factory=dict)
    cpus: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KubeNode:
    """A core/v1 Node as Gaia reads it (``document``: the object itself, as given)."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    ready: bool
    ready_message: str  # the Ready condition's message, "" when it has none
    schedulable: bool
    zone: str
    host_ip: str  # the InternalIP address, "" when none
    resource_version: str
    capacity: ResourceVector  # cpu, memory, local_disk, gpu (cards) and gpu_memory
    gpus: NodeGpus
    document: Mapping[str, Any]


def _items(value: Any, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UnreadableObject(f"{what} must be a list")
    return [json_object(item, f"each of {what}") for item in value]


def read_node(doc: Any) -> KubeNode:
    """A core/v1 Node (see the module docstring)."""
    node = json_object(doc, "a Node")
    meta = optional_object(node.get("metadata"), "Node.metadata")
    spec = optional_object(node.get("spec"), "Node.spec")
    status = optional_object(node.get("status"), "Node.status")
    name = string(meta.get("name"), "Node.metadata.name")
    if not name:
        raise UnreadableObject("a node without metadata.name")
    where = f"node {name}"
    labels = string_map(meta.get("labels"), f"{where}: metadata.labels")
    annotations = string_map(meta.get("annotations"), f"{where}: metadata.annotations")
    raw = status.get("allocatable")
    if raw is None:
        raw = status.get("capacity")
    allocatable = resource_list(raw, f"{where}: status.allocatable")
    # the cards a node has are its capacity: a card the device plugin reports unhealthy leaves
    # the allocatable, but it is still there (the topology matrix still has its row), and
    # gaia.io/gpu-health says which one it is
    installed = allocatable
    if status.get("capacity") is not None:
        installed = resource_list(status.get("capacity"), f"{where}: status.capacity")
    gpus = _node_gpus(installed, allocatable, labels=labels, annotations=annotations)
    zero = Decimal(0)
    capacity = ResourceVector(
        cpu=clamp_amount(floor_amount(allocatable.get("cpu", zero) * 1000)),
        memory=clamp_amount(floor_amount(allocatable.get("memory", zero) / MIB)),
        local_disk=clamp_amount(floor_amount(allocatable.get("ephemeral-storage", zero) / GIB)),
        gpu=clamp_amount(gpus.cards * WHOLE_CARD),
        gpu_memory=clamp_amount(_gpu_memory(allocatable)),
    )
    ready, ready_message = False, ""
    for condition in _items(status.get("conditions"), f"{where}: status.conditions"):
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
            message = condition.get("message")
            ready_message = message if isinstance(message, str) else ""
            break
    host_ip = ""
    for address in _items(status.get("addresses"), f"{where}: status.addresses"):
        if address.get("type") == "InternalIP":
            host_ip = string(address.get("address"), f"{where}: address")
            break
    return KubeNode(
        name=name,
        labels=labels,
        annotations=annotations,
        ready=ready,
        ready_message=ready_message,
        schedulable=not spec.get("unschedulable", False),
        zone=labels.get(ZONE_LABEL, ""),
        host_ip=host_ip,
        resource_version=string(meta.get("resourceVersion"), "Node.metadata.resourceVersion"),
        capacity=capacity,
        gpus=gpus,
        document=node,
    )


def _gpu_memory(allocatable: ResourceAmounts) -> int:
    """All the node's GPU memory, in MiB."""
    zero = Decimal(0)
    memory = floor_amount(allocatable.get(GAIA_GPU_MEMORY, zero))
    if not memory:
        memory = floor_amount(allocatable.get(VCUDA_MEMORY, zero)) * VCUDA_MEMORY_BLOCK_MIB
    return memory


def _card_count(amounts: ResourceAmounts) -> int:
    zero = Decimal(0)
    return max(
        floor_amount(amounts.get(NVIDIA_GPU, zero)),
        floor_amount(amounts.get(GAIA_GPU_CORE, zero)) // WHOLE_CARD,
        floor_amount(amounts.get(VCUDA_CORE, zero)) // WHOLE_CARD,
    )


def _node_gpus(
    installed: ResourceAmounts,
    allocatable: ResourceAmounts,
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> NodeGpus:
    # a node whose capacity lists fewer cards than its allocatable was patched by hand: the
    # larger count is the one pods were admitted against
    cards = max(_card_count(installed), _card_count(allocatable))
    memory = max(_gpu_memory(installed), _gpu_memory(allocatable))
    unreadable: dict[str, str] = {}
    links: LinkMatrix = ()
    if GPU_TOPOLOGY_ANNOTATION in annotations:
        try:
            links = read_gpu_topology(annotations[GPU_TOPOLOGY_ANNOTATION], cards=cards)
        except UnreadableObject as exc:
            unreadable[GPU_TOPOLOGY_ANNOTATION] = str(exc)
    used: GpuUse = {}
    if GPU_USED_ANNOTATION in annotations:
        try:
            used = read_gpu_used(annotations[GPU_USED_ANNOTATION], cards=cards)
        except UnreadableObject as exc:
            unreadable[GPU_USED_ANNOTATION] = str(exc)
    health: dict[int, tuple[str, ...]] = {}
    if GPU_HEALTH_ANNOTATION in annotations:
        try:
            health = read_gpu_health(annotations[GPU_HEALTH_ANNOTATION], cards=cards)
        except UnreadableObject as exc:
            unreadable[GPU_HEALTH_ANNOTATION] = str(exc)
    numa: dict[int, tuple[int | None, tuple[int, ...]]] = {}
    if GPU_NUMA_ANNOTATION in annotations:
        try:
            numa = read_gpu_numa(annotations[GPU_NUMA_ANNOTATION], cards=cards)
        except UnreadableObject as exc:
            unreadable[GPU_NUMA_ANNOTATION] = str(exc)
    return NodeGpus(
        cards=cards,
        memory_per_card=clamp_amount(memory // cards) if cards else 0,
        used=used,
        links=links,
        model=labels.get(GPU_MODEL_LABEL) or labels.get(GPU_PRODUCT_LABEL, ""),
        unreadable=unreadable,
        unhealthy=frozenset(health),
        health_reasons=health,
        numa_node={i: n for i, (n, _) in numa.items() if n is not None},
        cpus={i: c for i, (_, c) in numa.items() if c},
    )


def read_gpu_topology(raw: str, *, cards: int) -> LinkMatrix:
    """The ``gaia.io/gpu-topology`` value of a node with ``cards`` cards."""
    what = f"the node annotation {GPU_TOPOLOGY_ANNOTATION}"
    try:
        doc = json.loads(raw)
    except ValueError:
        raise UnreadableObject(f"{what} is not JSON") from None
    if not isinstance(doc, list) or not all(isinstance(row, list) for row in doc):
        raise UnreadableObject(f"{what} must be a JSON list of lists of link names")
    if len(doc) != cards:
        raise UnreadableObject(f"{what} describes {len(doc)} cards, the node has {cards}")
    try:
        return read_matrix(doc, field=what)
    except InvalidLinkMatrix as exc:
        raise UnreadableObject(exc.message) from None


def encode_gpu_topology(links: Sequence[Sequence[str]]) -> str:
    """The ``gaia.io/gpu-topology`` value for ``links``."""
    return json.dumps([list(row) for row in links])


def read_gpu_used(raw: str, *, cards: int) -> dict[int, tuple[int, int]]:
    """The ``gaia.io/gpu-used`` value of a node with ``cards`` cards."""
    what = f"the node annotation {GPU_USED_ANNOTATION}"
    doc = _per_card_object(raw, what, shape='{"<card>": [cores, MiB]}')
    used: dict[int, tuple[int, int]] = {}
    for key, value in doc.items():
        if not (key.isascii() and key.isdigit()) or int(key) >= cards:
            raise UnreadableObject(f"{what} names card {key!r}; the node has {cards} cards")
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            raise UnreadableObject(f"{what}[{key}] must be [cores used, MiB used]")
        used[int(key)] = (min(value[0], WHOLE_CARD), value[1])
    return used


def encode_gpu_used(used: GpuUse) -> str:
    """The ``gaia.io/gpu-used`` value for ``used`` (idle cards left out)."""
    return json.dumps(
        {str(i): [c, m] for i, (c, m) in sorted(used.items()) if c or m}, separators=(",", ":")
    )


def _per_card_object(raw: str, what: str, *, shape: str) -> dict[str, Any]:
    """A per-card annotation's JSON object; ``UnreadableObject`` naming ``what`` and ``shape``."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise UnreadableObject(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise UnreadableObject(f"{what} must be a JSON object {shape}")
    return doc


def _card_key(key: str, what: str) -> int:
    if not (key.isascii() and key.isdigit()):
        raise UnreadableObject(f"{what} names card {key!r}, which is not a card index")
    return int(key)


def read_gpu_health(raw: str, *, cards: int) -> dict[int, tuple[str, ...]]:
    """The ``gaia.io/gpu-health`` value: card -> reasons, for the node's first ``cards`` cards."""
    what = f"the node annotation {GPU_HEALTH_ANNOTATION}"
    doc = _per_card_object(raw, what, shape='{"<card>": ["reason", ...]}')
    health: dict[int, tuple[str, ...]] = {}
    for key, reasons in doc.items():
        card = _card_key(key, what)
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise UnreadableObject(f"{what}[{key}] must be a list of reasons")
        if card < cards:
            health[card] = tuple(reasons) or ("unhealthy",)
    return health


def encode_gpu_health(unhealthy: Mapping[int, Sequence[str]]) -> str:
    """The ``gaia.io/gpu-health`` value: the unhealthy cards and why (``{}``: all healthy)."""
    return json.dumps(
        {str(i): list(reasons) for i, reasons in sorted(unhealthy.items())},
        separators=(",", ":"),
    )


def read_gpu_numa(raw: str, *, cards: int) -> dict[int, tuple[int | None, tuple[int, ...]]]:
    """The ``gaia.io/gpu-numa`` value: card -> (NUMA node or None, cores)."""
    what = f"the node annotation {GPU_NUMA_ANNOTATION}"
    doc = _per_card_object(raw, what, shape='{"<card>": [numa, "cpuset"]}')
    out: dict[int, tuple[int | None, tuple[int, ...]]] = {}
    for key, value in doc.items():
        card = _card_key(key, what)
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not (value[0] is None or (isinstance(value[0], int) and value[0] >= 0))
            or isinstance(value[0], bool)
            or not isinstance(value[1], str)
        ):
            raise UnreadableObject(f'{what}[{key}] must be [NUMA node or null, "cpuset"]')
        try:
            cores = parse_cpuset(value[1])
        except ValueError as exc:
            raise UnreadableObject(f"{what}[{key}]: {exc}") from None
        if card < cards:
            out[card] = (value[0], cores)
    return out


def encode_gpu_numa(numa: Mapping[int, tuple[int | None, Sequence[int]]]) -> str:
    """The ``gaia.io/gpu-numa`` value for card -> (NUMA node or None, cores)."""
    return json.dumps(
        {str(i): [node, cpuset(cores)] for i, (node, cores) in sorted(numa.items())},
        separators=(",", ":"),
    )
