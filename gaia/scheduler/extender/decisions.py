"""The Kubernetes scheduler-extender protocol, as pure translation and decision functions.

kube-scheduler places pods that are not the platform's (the platform binds its own instances
itself); configured with this extender it asks us three questions per pod, each an HTTP POST whose
body is a type of ``k8s.io/kube-scheduler/extender/v1``:

- **filter** ``ExtenderArgs -> ExtenderFilterResult``: of the nodes that passed kube-scheduler's
  own filters, which can take the pod? For each that cannot, why, and whether preemption could help
  (``FailedNodes``) or not (``FailedAndUnresolvableNodes``: it would not fit on the node even if
  every GPU were free, or the node is the wrong model).
- **prioritize** ``ExtenderArgs -> HostPriorityList``: an integer score per node in
  ``0..MAX_EXTENDER_PRIORITY`` (10); kube-scheduler multiplies it by the extender's ``weight``.
- **bind** ``ExtenderBindingArgs -> ExtenderBindingResult``: bind the pod to the chosen node. The
  extender picks the GPU ids on that node, records them on the node, and binds with the ids as pod
  annotations so that the device plugin hands those cards to the containers.

**Wire format.** The upstream types carry no json tags, so Go's field names *are* the keys
(``Pod``, ``Nodes``, ``NodeNames``, ``FailedNodes``, ``FailedAndUnresolvableNodes``, ``Error``,
``Host``, ``Score``, ``PodName``, ``PodNamespace``, ``PodUID``, ``Node``) and Go omits none of
them. We write exactly that; we read keys case-insensitively, as Go's decoder does (the upstream
``TestCompatibility`` relies on it). ``Pod`` and the items of ``Nodes`` are core/v1 objects.

**Configuration.** ``nodeCacheCapable: false``: we keep no cache, so we need the full Node objects
and answer with ``Nodes`` (kube-scheduler reads ``NodeNames`` only from cache-capable extenders). A
filter call that carries only names is answered with an ``Error`` that says so. ``bindVerb`` must
be set for GPU pods: the bind step is where GPU ids are chosen and accounted. Example::

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    extenders:
    - urlPrefix: http://127.0.0.1:8888
      filterVerb: filter
      prioritizeVerb: prioritize
      bindVerb: bind
      weight: 1
      nodeCacheCapable: false
      httpTimeout: 30s             # bind reads and writes the API server (default 5s)
      managedResources:            # only pods asking for one of these are sent to us
      - {name: nvidia.com/gpu}
      - {name: tencent.com/vcuda-core}
      - {name: tencent.com/vcuda-memory}
      - {name: gaia.io/gpu-core}
      - {name: gaia.io/gpu-memory}

**Pods.** The effective request is computed as kube-scheduler does (component-helpers
``PodRequests``): containers summed, each init container's request (plus the sidecars started
before it) as a floor, sidecars (init containers with ``restartPolicy: Always``) added, pod-level
``spec.resources.requests`` for cpu and memory taking precedence, ``spec.overhead`` added. A
missing request falls back to the limit, as the API server's defaulting does. Units:

==========================  ==========================================  ======================
resource                    meaning                                     Gaia dimension
==========================  ==========================================  ======================
cpu                         cores                                       cpu (millicores, up)
memory                      bytes                                       memory (MiB, up)
ephemeral-storage           bytes                                       local_disk (GiB, up)
nvidia.com/gpu              whole cards                                 gpu (x 100)
tencent.com/vcuda-core      hundredths of a card (gpu-manager)          gpu
tencent.com/vcuda-memory    blocks of 256 MiB (gpu-manager)             gpu_memory (x 256)
gaia.io/gpu-core            hundredths of a card                        gpu
gaia.io/gpu-memory          MiB                                         gpu_memory
==========================  ==========================================  ======================

More than one card must be whole cards (gpu-manager's rule too); GPU memory is spread evenly over
the cards of a whole-card request and lies on the one card of a share. ``spec.nodeSelector``
becomes the request's node selector; pod annotations choose the GPU model (``gaia.io/gpu-model``,
matched against the node label ``gaia.io/gpu-model``, else GPU feature discovery's
``nvidia.com/gpu.product``) and the loosest link allowed between the pod's cards
(``gaia.io/gpu-link``: ``NV`` for any NVLink, ``NV<n>`` for at least n bonded links, ``PIX``,
``PXB``, ``PHB``, ``NODE`` or ``SOC``).

**Nodes** (``NodeView``). ``status.allocatable`` gives CPU, memory and disk; kube-scheduler's own
``NodeResourcesFit`` has already subtracted the running pods from those before it calls us, so
the extender checks them against allocatable only. GPU state, which kube-scheduler does not model
per card, comes from two node annotations defined here:

- ``gaia.io/gpu-topology``: the ``nvidia-smi topo -m`` link matrix as a JSON list of lists
  (``[["X","NV2"],["NV2","X"]]``; ``NV<n>`` keeps its link count, ``SYS`` reads as ``SOC``).
  Its size is the number of cards; without it the count comes from the allocatable
  GPU resources (``nvidia.com/gpu``, or ``gaia.io/gpu-core`` / ``tencent.com/vcuda-core`` over
  100) and the cards count as equally linked. Per-card memory is the allocatable
  ``gaia.io/gpu-memory`` (or ``tencent.com/vcuda-memory`` x 256 MiB) divided by the cards.
- ``gaia.io/gpu-used``: what pods bound through this extender hold, per card, as JSON
  ``{"<card index>": [cores used in hundredths, memory used in MiB]}``. The bind step adds to it
  (compare-and-swap on the node's ``resourceVersion``) before binding; a whole card counts as all
  of its memory. Nothing here subtracts when a pod ends: whoever runs the node side (the device
  plugin, or a reconciler over the pods' ``gaia.io/gpu-ids``) rewrites the annotation from the pods
  actually on the node. GPU pods bound without this extender are invisible to it.

Pods get ``gaia.io/gpu-ids`` (card indexes, ``"0,1"``) and, when the scheduler chose CPU cores
near the cards, ``gaia.io/cpu-set`` (a cpuset list, ``"0-3,8"``) through the Binding, which the API
server copies onto the pod in the same write that sets ``spec.nodeName``.

**Decisions** are the scheduler port's: each node is asked ``place`` on a one-node
``ClusterView``, so the reasons per node are the scheduler's own. Cards whose free memory cannot
hold the pod's share are shown to the scheduler as full, and the GPU model is checked here, so the
answer is right whatever scheduler sits behind the port (``ResourceFitScheduler`` checks neither).
Prioritize uses the scheduler's ``score(request, node, cluster) -> 0..1`` (the cluster being
the nodes that fit) when it has one; otherwise the node
``place`` picks among the fitting ones scores 10 and the others 0..9 by the share of GPU left free.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from typing import Any, Protocol, runtime_checkable

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import MAX_AMOUNT, ResourceVector
from gaia.scheduler.links import link_cost
from gaia.scheduler.port import (
    WHOLE_CARD,
    ClusterView,
    NodeView,
    Placement,
    PlacementRequest,
    Unschedulable,
)

MIN_EXTENDER_PRIORITY = 0
MAX_EXTENDER_PRIORITY = 10  # k8s.io/kube-scheduler/extender/v1.MaxExtenderPriority

# Extended resources (requests and node allocatable).
NVIDIA_GPU = "nvidia.com/gpu"
VCUDA_CORE = "tencent.com/vcuda-core"
VCUDA_MEMORY = "tencent.com/vcuda-memory"
GAIA_GPU_CORE = "gaia.io/gpu-core"
GAIA_GPU_MEMORY = "gaia.io/gpu-memory"
VCUDA_MEMORY_BLOCK_MIB = 256  # gpu-manager's MemoryBlockSize (268435456 bytes)
GPU_RESOURCES = (NVIDIA_GPU, VCUDA_CORE, VCUDA_MEMORY, GAIA_GPU_CORE, GAIA_GPU_MEMORY)

# Annotations (and the model label).
GPU_TOPOLOGY_ANNOTATION = "gaia.io/gpu-topology"  # node
GPU_USED_ANNOTATION = "gaia.io/gpu-used"  # node
GPU_MODEL_ANNOTATION = "gaia.io/gpu-model"  # pod annotation; node label of the same name
GPU_LINK_ANNOTATION = "gaia.io/gpu-link"  # pod
GPU_IDS_ANNOTATION = "gaia.io/gpu-ids"  # pod, written at bind
CPU_SET_ANNOTATION = "gaia.io/cpu-set"  # pod, written at bind
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery
ZONE_LABEL = "topology.kubernetes.io/zone"

_MIB = 2**20
_GIB = 2**30
_LINKS = ("X", "NV", "NV1..NV18", "PIX", "PXB", "PHB", "NODE", "SOC")
_LINK_ALIASES = {"SYS": "SOC"}
# Kubernetes' quantity grammar (k8s.io/apimachinery/pkg/api/resource): a signed decimal and a
# binary-SI suffix, a decimal-SI suffix (n u m "" k M G T P E) or a decimal exponent (e3, E-2).
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_BINARY_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIX = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_QUANTITY_MAX = Decimal(2**63 - 1)
_NANO = Decimal("1e-9")
_EXACT = Context(prec=80)


class BadExtenderRequest(ValueError):
    """A call we cannot answer as asked (a malformed pod, node or envelope); the message says what
    is wrong and lands in the result's ``Error`` field, where kube-scheduler reports it."""


class NodeChanged(Exception):
    """The node's ``resourceVersion`` moved between read and write (``Binder`` raises it)."""


class BindFailed(Exception):
    """The API server refused a step of the bind; the message says which and why."""


# ------------------------------------------------------------------------------- quantities


def parse_quantity(raw: object) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``, ``1.5``) as an exact ``Decimal``.

    As upstream (``k8s.io/apimachinery`` ``ParseQuantity``): the same grammar, numbers accepted
    as well as strings (``Quantity.UnmarshalJSON`` does), values finer than 1n rounded up (away
    from zero) to 1n. Unlike upstream, a magnitude above 2^63-1 is refused instead of capped or
    kept: no resource comes near it, and refusing keeps the arithmetic bounded.
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise BadExtenderRequest(f"{raw!r} is not a quantity")
    text = str(raw).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise BadExtenderRequest(
            f"{text!r} is not a quantity (a number with an optional suffix: 500m, 2Gi, 1e3)"
        )
    suffix = match["suffix"] or ""
    too_large = BadExtenderRequest(f"{text!r} is larger than a quantity can be (2^63-1)")
    with localcontext(_EXACT):
        number = Decimal(match["number"])
        if suffix in _BINARY_SUFFIX:
            exponent, base = _BINARY_SUFFIX[suffix], 2
        elif suffix in _DECIMAL_SUFFIX:
            exponent, base = _DECIMAL_SUFFIX[suffix], 10
        else:
            exponent, base = int(suffix[1:]), 10
        # Bound the work before doing it: an estimate of the decimal magnitude.
        magnitude = number.adjusted() + (exponent if base == 10 else exponent * 3 // 10)
        if number and magnitude > 25:
            raise too_large
        if number and magnitude < -30:
            return _NANO.copy_sign(number)  # anything that small rounds up to 1n
        try:
            value = number * 2**exponent if base == 2 else number.scaleb(exponent)
            if value:
                rounding = ROUND_CEILING if value > 0 else ROUND_FLOOR
                value = value.quantize(_NANO, rounding=rounding)
        except ArithmeticError:  # decimal.InvalidOperation: more digits than 80
            raise too_large from None
    if abs(value) > _QUANTITY_MAX:
        raise too_large
    return value.normalize(_EXACT) if value else Decimal(0)


def ceil_amount(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def floor_amount(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def clamp_amount(value: int) -> int:
    """An amount within 0..MAX_AMOUNT (what a ResourceVector accepts)."""
    return max(0, min(value, MAX_AMOUNT))


# ------------------------------------------------------------------------------- wire types


def _member(doc: Mapping[str, Any], name: str) -> Any:
    """``doc[name]``, matching keys case-insensitively as Go's encoding/json does."""
    if name in doc:
        return doc[name]
    folded = name.casefold()
    for key, value in doc.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadExtenderRequest(f"{what} must be a JSON object")
    return value


def _optional_object(value: Any, what: str) -> Mapping[str, Any]:
    return {} if value is None else _object(value, what)


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadExtenderRequest(f"{what} must be a string")
    return value


def _string_map(value: Any, what: str) -> dict[str, str]:
    doc = _optional_object(value, what)
    if not all(isinstance(v, str) for v in doc.values()):
        raise BadExtenderRequest(f"{what} must map strings to strings")
    return dict(doc)


def _node_items(nodes: Any) -> list[Mapping[str, Any]] | None:
    if nodes is None:
        return None
    items = _object(nodes, "Nodes (a NodeList)").get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadExtenderRequest("Nodes.items must be a list of nodes")
    return [_object(item, "each of Nodes.items") for item in items]


def _names(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadExtenderRequest(f"{what} must be a list of node names")
    return list(value)


def _node_list(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    # Go marshals an empty ListMeta as {} and keeps the (absent) TypeMeta out.
    return None if items is None else {"metadata": {}, "items": list(items)}


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """``ExtenderArgs``: the pod and its candidate nodes (``nodes`` when kube-scheduler sends
    Node objects, ``node_names`` when the extender is configured as cache-capable)."""

    pod: Mapping[str, Any]
    nodes: list[Mapping[str, Any]] | None = None
    node_names: list[str] | None = None

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderArgs:
        body = _object(doc, "the request body (ExtenderArgs)")
        pod = _member(body, "Pod")
        return cls(
            pod=_object(pod, "Pod") if pod is not None else {},
            nodes=_node_items(_member(body, "Nodes")),
            node_names=_names(_member(body, "NodeNames"), "NodeNames"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "Pod": dict(self.pod) if self.pod else None,
            "Nodes": _node_list(self.nodes),
            "NodeNames": self.node_names,
        }


@dataclass(frozen=True, slots=True)
class ExtenderFilterResult:
    """``ExtenderFilterResult``: the nodes that fit, and a message per node that does not."""

    nodes: list[Mapping[str, Any]] | None = None
    node_names: list[str] | None = None
    failed_nodes: dict[str, str] = field(default_factory=dict)
    failed_and_unresolvable_nodes: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderFilterResult:
        body = _object(doc, "ExtenderFilterResult")
        return cls(
            nodes=_node_items(_member(body, "Nodes")),
            node_names=_names(_member(body, "NodeNames"), "NodeNames"),
            failed_nodes=_string_map(_member(body, "FailedNodes"), "FailedNodes"),
            failed_and_unresolvable_nodes=_string_map(
                _member(body, "FailedAndUnresolvableNodes"), "FailedAndUnresolvableNodes"
            ),
            error=_string(_member(body, "Error"), "Error"),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "Nodes": _node_list(self.nodes),
            "NodeNames": self.node_names,
            "FailedNodes": dict(self.failed_nodes),
            "FailedAndUnresolvableNodes": dict(self.failed_and_unresolvable_nodes),
            "Error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HostPriority:
    """One entry of a ``HostPriorityList``: a node and its score, 0..10 (higher is better)."""

    host: str
    score: int

    @classmethod
    def list_from_wire(cls, doc: Any) -> list[HostPriority]:
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise BadExtenderRequest("a HostPriorityList must be a JSON list")
        out = []
        for item in doc:
            body = _object(item, "each HostPriority")
            score = _member(body, "Score")
            if score is None:
                score = 0
            if isinstance(score, bool) or not isinstance(score, int):
                raise BadExtenderRequest("HostPriority.Score must be an integer")
            out.append(cls(host=_string(_member(body, "Host"), "HostPriority.Host"), score=score))
        return out

    def to_wire(self) -> dict[str, Any]:
        return {"Host": self.host, "Score": self.score}


@dataclass(frozen=True, slots=True)
class ExtenderBindingArgs:
    """``ExtenderBindingArgs``: which pod (name, namespace, uid) goes to which node."""

    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderBindingArgs:
        body = _object(doc, "the request body (ExtenderBindingArgs)")
        args = cls(
            pod_name=_string(_member(body, "PodName"), "PodName"),
            pod_namespace=_string(_member(body, "PodNamespace"), "PodNamespace"),
            pod_uid=_string(_member(body, "PodUID"), "PodUID"),
            node=_string(_member(body, "Node"), "Node"),
        )
        if not args.pod_name or not args.node:
            raise BadExtenderRequest("ExtenderBindingArgs needs PodName and Node")
        return args

    def to_wire(self) -> dict[str, Any]:
        return {
            "PodName": self.pod_name,
            "PodNamespace": self.pod_namespace,
            "PodUID": self.pod_uid,
            "Node": self.node,
        }


@dataclass(frozen=True, slots=True)
class ExtenderBindingResult:
    """``ExtenderBindingResult``: empty ``error`` on success."""

    error: str = ""

    @classmethod
    def from_wire(cls, doc: Any) -> ExtenderBindingResult:
        body = _object(doc, "ExtenderBindingResult")
        return cls(error=_string(_member(body, "Error"), "Error"))

    def to_wire(self) -> dict[str, Any]:
        return {"Error": self.error}


# ------------------------------------------------------------------------------- pods

_POD_RESOURCES = ("cpu", "memory", "ephemeral-storage", *GPU_RESOURCES)
_POD_LEVEL = ("cpu", "memory")  # what spec.resources may set (hugepages aside)

ResourceAmounts = dict[str, Decimal]


def _resource_list(value: Any, what: str) -> ResourceAmounts:
    doc = _optional_object(value, what)
    out: ResourceAmounts = {}
    for name, raw in doc.items():
        if name not in _POD_RESOURCES:
            continue  # other resources are kube-scheduler's own business
        try:
            amount = parse_quantity(raw)
        except BadExtenderRequest as exc:
            raise BadExtenderRequest(f"{what}[{name}]: {exc}") from None
        if amount < 0:
            raise BadExtenderRequest(f"{what}[{name}] must not be negative")
        out[name] = amount
    return out


def _container_requests(container: Any, what: str) -> ResourceAmounts:
    body = _object(container, what)
    resources = _optional_object(body.get("resources"), f"{what}.resources")
    requests = _resource_list(resources.get("requests"), f"{what}.resources.requests")
    limits = _resource_list(resources.get("limits"), f"{what}.resources.limits")
    # The API server defaults a missing request to the limit; pods as stored already carry it,
    # documents written by hand may not.
    return {**limits, **requests}


def _add(into: ResourceAmounts, more: Mapping[str, Decimal]) -> None:
    for name, amount in more.items():
        into[name] = into.get(name, Decimal(0)) + amount


def _raise_to(into: ResourceAmounts, floor: Mapping[str, Decimal]) -> None:
    for name, amount in floor.items():
        if amount > into.get(name, Decimal(0)):
            into[name] = amount


def _containers(spec: Mapping[str, Any], key: str) -> list[Any]:
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadExtenderRequest(f"spec.{key} must be a list")
    return value


def pod_requests(pod: Mapping[str, Any]) -> ResourceAmounts:
    """The pod's effective requests, per resource name, as kube-scheduler computes them."""
    spec = _optional_object(pod.get("spec"), "Pod.spec")
    total: ResourceAmounts = {}
    for i, container in enumerate(_containers(spec, "containers")):
        _add(total, _container_requests(container, f"spec.containers[{i}]"))
    sidecars: ResourceAmounts = {}
    init_floor: ResourceAmounts = {}
    for i, container in enumerate(_containers(spec, "initContainers")):
        own = _container_requests(container, f"spec.initContainers[{i}]")
        if _object(container, "an init container").get("restartPolicy") == "Always":
            # A sidecar keeps running beside the containers, and beside later init containers.
            _add(total, own)
            _add(sidecars, own)
            while_running = dict(sidecars)
        else:
            while_running = dict(own)
            _add(while_running, sidecars)
        _raise_to(init_floor, while_running)
    _raise_to(total, init_floor)
    pod_level = _optional_object(spec.get("resources"), "spec.resources")
    for name, amount in _resource_list(
        pod_level.get("requests"), "spec.resources.requests"
    ).items():
        if name in _POD_LEVEL:
            total[name] = amount
    _add(total, _resource_list(spec.get("overhead"), "spec.overhead"))
    return total


def _whole(amounts: Mapping[str, Decimal], name: str) -> int:
    amount = amounts.get(name, Decimal(0))
    if amount != amount.to_integral_value():
        raise BadExtenderRequest(f"{name} must be a whole number, got {amount}")
    return int(amount)


def resources_of(amounts: Mapping[str, Decimal]) -> ResourceVector:
    """Kubernetes resource amounts as a request in Gaia units (rounded up, never down)."""
    gpu = _whole(amounts, NVIDIA_GPU) * WHOLE_CARD
    gpu += _whole(amounts, VCUDA_CORE) + _whole(amounts, GAIA_GPU_CORE)
    gpu_memory = _whole(amounts, VCUDA_MEMORY) * VCUDA_MEMORY_BLOCK_MIB
    gpu_memory += _whole(amounts, GAIA_GPU_MEMORY)
    if gpu > WHOLE_CARD and gpu % WHOLE_CARD:
        raise BadExtenderRequest(
            f"the pod asks for {gpu / WHOLE_CARD:g} GPUs: more than one card must be whole cards "
            "(a multiple of 100 GPU cores)"
        )
    if gpu_memory and not gpu:
        raise BadExtenderRequest(
            "the pod asks for GPU memory but no GPU cores; ask for gaia.io/gpu-core (or "
            "tencent.com/vcuda-core) too"
        )
    zero = Decimal(0)
    try:
        return ResourceVector(
            cpu=ceil_amount(amounts.get("cpu", zero) * 1000),
            memory=ceil_amount(amounts.get("memory", zero) / _MIB),
            local_disk=ceil_amount(amounts.get("ephemeral-storage", zero) / _GIB),
            gpu=gpu,
            gpu_memory=gpu_memory,
        )
    except InvalidRequest as exc:
        raise BadExtenderRequest(f"the pod's requests are out of range: {exc.message}") from None


def _link(raw: str, what: str) -> str:
    link = raw.strip().upper()
    link = _LINK_ALIASES.get(link, link)
    try:
        link_cost(link)
    except ValueError:
        raise BadExtenderRequest(f"{what} is {raw!r}; use one of {', '.join(_LINKS)}") from None
    return link


def pod_request(pod: Mapping[str, Any]) -> PlacementRequest:
    """A core/v1 Pod as the scheduler port's ``PlacementRequest``."""
    meta = _optional_object(pod.get("metadata"), "Pod.metadata")
    spec = _optional_object(pod.get("spec"), "Pod.spec")
    annotations = _string_map(meta.get("annotations"), "Pod.metadata.annotations")
    name = _string(meta.get("name"), "Pod.metadata.name")
    namespace = _string(meta.get("namespace"), "Pod.metadata.namespace") or "default"
    link = annotations.get(GPU_LINK_ANNOTATION, "")
    return PlacementRequest(
        name=f"{namespace}/{name}",
        resources=resources_of(pod_requests(pod)),
        node_selector=_string_map(spec.get("nodeSelector"), "Pod.spec.nodeSelector"),
        gpu_model=annotations.get(GPU_MODEL_ANNOTATION, "").strip(),
        max_link=_link(link, f"the pod annotation {GPU_LINK_ANNOTATION}") if link else "",
    )


# ------------------------------------------------------------------------------- nodes

GpuUse = Mapping[int, tuple[int, int]]  # card index -> (cores used in hundredths, MiB used)


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """A node's cards as its annotations and allocatable resources describe them."""

    cards: int = 0
    memory_per_card: int = 0  # MiB; 0 when the node advertises no GPU memory resource
    used: GpuUse = field(default_factory=dict)
    links: tuple[tuple[str, ...], ...] = ()
    model: str = ""


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


def _topology(raw: str) -> tuple[tuple[str, ...], ...]:
    what = f"the node annotation {GPU_TOPOLOGY_ANNOTATION}"
    try:
        matrix = json.loads(raw)
    except ValueError:
        raise BadExtenderRequest(f"{what} is not JSON") from None
    if not isinstance(matrix, list) or not all(isinstance(row, list) for row in matrix):
        raise BadExtenderRequest(f"{what} must be a JSON list of lists of link names")
    size = len(matrix)
    rows = []
    for a, row in enumerate(matrix):
        if len(row) != size:
            raise BadExtenderRequest(f"{what} must be square: row {a} has {len(row)} entries")
        cells = []
        for b, cell in enumerate(row):
            if not isinstance(cell, str):
                raise BadExtenderRequest(f"{what}[{a}][{b}] must be a link name such as PIX")
            link = _link(cell, f"{what}[{a}][{b}]")
            if (a == b) != (link == "X"):
                raise BadExtenderRequest(f"{what}: X belongs on the diagonal and only there")
            cells.append(link)
        rows.append(tuple(cells))
    for a in range(size):
        for b in range(a):
            if rows[a][b] != rows[b][a]:
                raise BadExtenderRequest(f"{what} must be symmetric ([{a}][{b}] != [{b}][{a}])")
    return tuple(rows)


def _gpu_used(raw: str, cards: int) -> dict[int, tuple[int, int]]:
    what = f"the node annotation {GPU_USED_ANNOTATION}"
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BadExtenderRequest(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise BadExtenderRequest(f'{what} must be a JSON object {{"<card>": [cores, MiB]}}')
    used: dict[int, tuple[int, int]] = {}
    for key, value in doc.items():
        if not (key.isascii() and key.isdigit()) or int(key) >= cards:
            raise BadExtenderRequest(f"{what} names card {key!r}; the node has {cards} cards")
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            raise BadExtenderRequest(f"{what}[{key}] must be [cores used, MiB used]")
        used[int(key)] = (min(value[0], WHOLE_CARD), value[1])
    return used


def encode_gpu_used(used: GpuUse) -> str:
    """The ``gaia.io/gpu-used`` value for ``used`` (idle cards left out)."""
    return json.dumps(
        {str(i): [c, m] for i, (c, m) in sorted(used.items()) if c or m}, separators=(",", ":")
    )


def _ready(status: Mapping[str, Any]) -> bool:
    conditions = status.get("conditions") or []
    if not isinstance(conditions, list):
        return False
    return any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


def parse_node(doc: Mapping[str, Any]) -> ExtenderNode:
    """A core/v1 Node. GPU annotations that cannot be read make the node unusable for GPU pods
    (``problem``), not the whole call."""
    node = _object(doc, "each node")
    meta = _optional_object(node.get("metadata"), "Node.metadata")
    spec = _optional_object(node.get("spec"), "Node.spec")
    status = _optional_object(node.get("status"), "Node.status")
    name = _string(meta.get("name"), "Node.metadata.name")
    if not name:
        raise BadExtenderRequest("a node without metadata.name")
    labels = _string_map(meta.get("labels"), f"node {name}: metadata.labels")
    annotations = _string_map(meta.get("annotations"), f"node {name}: metadata.annotations")
    raw_allocatable = status.get("allocatable")
    if raw_allocatable is None:
        raw_allocatable = status.get("capacity")
    allocatable = _resource_list(raw_allocatable, f"node {name}: status.allocatable")
    zero = Decimal(0)
    free = ResourceVector(
        cpu=clamp_amount(floor_amount(allocatable.get("cpu", zero) * 1000)),
        memory=clamp_amount(floor_amount(allocatable.get("memory", zero) / _MIB)),
        local_disk=clamp_amount(floor_amount(allocatable.get("ephemeral-storage", zero) / _GIB)),
    )
    gpus = NodeGpus(model=labels.get(GPU_MODEL_ANNOTATION) or labels.get(GPU_PRODUCT_LABEL, ""))
    problem = None
    try:
        gpus = _node_gpus(annotations, allocatable, gpus.model)
    except BadExtenderRequest as exc:
        problem = f"node(s) with unreadable GPU annotations: {exc}"
    return ExtenderNode(
        name=name,
        ready=_ready(status),
        schedulable=not spec.get("unschedulable", False),
        allocatable=free,
        labels=labels,
        zone=labels.get(ZONE_LABEL, ""),
        gpus=gpus,
        resource_version=_string(meta.get("resourceVersion"), "Node.metadata.resourceVersion"),
        document=node,
        problem=problem,
    )


def _node_gpus(
    annotations: Mapping[str, str], allocatable: ResourceAmounts, model: str
) -> NodeGpus:
    zero = Decimal(0)
    links: tuple[tuple[str, ...], ...] = ()
    if GPU_TOPOLOGY_ANNOTATION in annotations:
        links = _topology(annotations[GPU_TOPOLOGY_ANNOTATION])
        cards = len(links)
    else:
        cards = max(
            floor_amount(allocatable.get(NVIDIA_GPU, zero)),
            floor_amount(allocatable.get(GAIA_GPU_CORE, zero)) // WHOLE_CARD,
            floor_amount(allocatable.get(VCUDA_CORE, zero)) // WHOLE_CARD,
        )
    memory = floor_amount(allocatable.get(GAIA_GPU_MEMORY, zero))
    if not memory:
        memory = floor_amount(allocatable.get(VCUDA_MEMORY, zero)) * VCUDA_MEMORY_BLOCK_MIB
    used = {}
    if GPU_USED_ANNOTATION in annotations:
        used = _gpu_used(annotations[GPU_USED_ANNOTATION], cards)
    return NodeGpus(
        cards=cards,
        memory_per_card=clamp_amount(memory // cards) if cards else 0,
        used=used,
        links=links,
        model=model,
    )


def _card_share(request: PlacementRequest) -> tuple[int, int, int]:
    """(cards, cores per card, MiB per card) that ``request`` takes."""
    gpu = request.resources.gpu
    if gpu <= 0:
        return 0, 0, 0
    cards = gpu // WHOLE_CARD if gpu >= WHOLE_CARD else 1
    return cards, gpu // cards, -(-request.resources.gpu_memory // cards)


def node_view(node: ExtenderNode, request: PlacementRequest, *, idle: bool = False) -> NodeView:
    """The ``NodeView`` that the scheduler decides ``request`` on; ``idle``: as if no GPU were
    used (to tell whether preemption could ever help)."""
    _, _, memory_share = _card_share(request)
    gpu_free: dict[int, int] = {}
    memory_free: dict[int, int] = {}
    memory_total: dict[int, int] = {}
    per_card = node.gpus.memory_per_card
    for card in range(node.gpus.cards):
        cores_used, memory_used = (0, 0) if idle else node.gpus.used.get(card, (0, 0))
        free_memory = max(0, per_card - memory_used)
        # A card that cannot hold the pod's memory share is shown as full, so that the choice is
        # right whatever scheduler is behind the port.
        gpu_free[card] = WHOLE_CARD - cores_used if memory_share <= free_memory else 0
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


def _why_not_here(
    node: ExtenderNode, request: PlacementRequest, scheduler: PlacementScheduler, *, idle: bool
) -> str | None:
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
        reason = _why_not_here(node, request, scheduler, idle=False)
        if reason is None:
            fits.append(node.document)
        elif _why_not_here(node, request, scheduler, idle=True) is None:
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
    fitting = [n for n in nodes if _why_not_here(n, request, scheduler, idle=False) is None]
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


# ------------------------------------------------------------------------------- bind


class Binder(Protocol):
    """The API-server side of the bind step (``KubernetesBinder`` in ``extender_server``).

    ``ExtenderBindingArgs`` names the pod but does not carry it, so the binder also reads the pod
    and the node, and writes the node's GPU annotation with a ``resourceVersion`` precondition."""

    def read_pod(self, *, namespace: str, name: str) -> Mapping[str, Any]:
        """The pod as stored; ``BindFailed`` when it is gone."""
        ...

    def read_node(self, *, name: str) -> Mapping[str, Any]:
        """The node as stored; ``BindFailed`` when it is gone."""
        ...

    def update_node_annotations(
        self, *, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> None:
        """Set these annotations if the node is still at ``resource_version``, else raise
        ``NodeChanged``."""
        ...

    def bind(
        self, *, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        """Bind the pod to ``node``, setting ``annotations`` on it in the same write."""
        ...


NODE_UPDATE_ATTEMPTS = 5


def cpuset(cpus: Iterable[int]) -> str:
    """Cores as a Linux cpuset list: ``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        a, b = ordered[start], ordered[end]
        ranges.append(f"{a}-{b}" if b > a else str(a))
        start = end + 1
    return ",".join(ranges)


def gpu_use_after(
    used: GpuUse,
    *,
    gpu_ids: Sequence[int],
    request: PlacementRequest,
    memory_per_card: int,
    sign: int = 1,
) -> dict[int, tuple[int, int]]:
    """``used`` with the request's share added on ``gpu_ids`` (``sign=-1``: taken away).

    A whole card counts as all of its memory: its owner may use all of it."""
    _, cores, memory = _card_share(request)
    if cores >= WHOLE_CARD:
        memory = max(memory, memory_per_card)
    out = dict(used)
    for card in gpu_ids:
        c, m = out.get(card, (0, 0))
        out[card] = (max(0, min(WHOLE_CARD, c + sign * cores)), max(0, m + sign * memory))
    return out


def _update_gpu_use(
    binder: Binder,
    *,
    node_name: str,
    request: PlacementRequest,
    decide: Callable[[ExtenderNode], tuple[Placement, int]],
) -> Placement:
    """Read the node, ``decide`` (placement, +1 to take / -1 to give back), write the node's
    ``gaia.io/gpu-used`` if nobody changed the node meanwhile; on a race, read and decide again."""
    for _ in range(NODE_UPDATE_ATTEMPTS):
        node = parse_node(binder.read_node(name=node_name))
        if node.problem is not None:
            raise BindFailed(f"node {node_name}: {node.problem}")
        placement, sign = decide(node)
        used = gpu_use_after(
            node.gpus.used,
            gpu_ids=placement.gpu_ids,
            request=request,
            memory_per_card=node.gpus.memory_per_card,
            sign=sign,
        )
        try:
            binder.update_node_annotations(
                name=node_name,
                annotations={GPU_USED_ANNOTATION: encode_gpu_used(used)},
                resource_version=node.resource_version,
            )
        except NodeChanged:
            continue  # another bind on the same node won the race
        return placement
    raise BindFailed(
        f"node {node_name} changed {NODE_UPDATE_ATTEMPTS} times while binding {request.name}; "
        "kube-scheduler will retry the pod"
    )


def _take_gpus(
    binder: Binder, *, node_name: str, request: PlacementRequest, scheduler: PlacementScheduler
) -> Placement:
    def decide(node: ExtenderNode) -> tuple[Placement, int]:
        reason = _why_not_here(node, request, scheduler, idle=False)
        if reason is not None:
            raise BindFailed(f"{request.name} no longer fits on {node_name}: {reason}")
        return scheduler.place(request, ClusterView([node_view(node, request)])), 1

    return _update_gpu_use(binder, node_name=node_name, request=request, decide=decide)


def _give_back_gpus(binder: Binder, *, placement: Placement, request: PlacementRequest) -> None:
    _update_gpu_use(
        binder, node_name=placement.node, request=request, decide=lambda _: (placement, -1)
    )


def bind_pod(
    args: Mapping[str, Any], *, binder: Binder, scheduler: PlacementScheduler
) -> dict[str, Any]:
    """Answer a bind call (``ExtenderBindingArgs`` in, ``ExtenderBindingResult`` out, as JSON).

    Order: read the pod; for a GPU pod choose cards on the node and record them on the node; then
    bind with the ids as annotations. A failed bind gives the cards back; if giving back fails too
    the node over-counts until the annotation is rewritten from the pods, which errs on the safe
    side (a card shown as used is never handed out twice).
    """
    try:
        call = ExtenderBindingArgs.from_wire(args)
        namespace = call.pod_namespace or "default"
        pod = binder.read_pod(namespace=namespace, name=call.pod_name)
        meta = _optional_object(pod.get("metadata"), "Pod.metadata")
        spec = _optional_object(pod.get("spec"), "Pod.spec")
        uid = _string(meta.get("uid"), "Pod.metadata.uid")
        if call.pod_uid and uid and uid != call.pod_uid:
            raise BindFailed(
                f"pod {namespace}/{call.pod_name} is now uid {uid}, not {call.pod_uid}: it was "
                "replaced while being scheduled"
            )
        bound_to = _string(spec.get("nodeName"), "Pod.spec.nodeName")
        if bound_to:
            if bound_to == call.node:
                return ExtenderBindingResult().to_wire()  # a retried call: already done
            raise BindFailed(f"pod {namespace}/{call.pod_name} is already bound to {bound_to}")
        request = pod_request(pod)
        annotations: dict[str, str] = {}
        placement: Placement | None = None
        if request.resources.gpu > 0:
            placement = _take_gpus(
                binder, node_name=call.node, request=request, scheduler=scheduler
            )
            annotations[GPU_IDS_ANNOTATION] = ",".join(str(i) for i in placement.gpu_ids)
            if placement.cpu_ids:
                annotations[CPU_SET_ANNOTATION] = cpuset(placement.cpu_ids)
        try:
            binder.bind(
                namespace=namespace,
                name=call.pod_name,
                uid=call.pod_uid or uid,
                node=call.node,
                annotations=annotations,
            )
        except BindFailed:
            if placement is not None and placement.gpu_ids:
                # over-counting is the safe side; the bind's own error is what to report
                with contextlib.suppress(BindFailed):
                    _give_back_gpus(binder, placement=placement, request=request)
            raise
    except (BadExtenderRequest, BindFailed, Unschedulable) as exc:
        return ExtenderBindingResult(error=str(exc)).to_wire()
    return ExtenderBindingResult().to_wire()
