"""Kubernetes resource names and amounts <-> Gaia's ``ResourceVector``.

What flows in is a ``ResourceList`` (``{"cpu": "500m", "nvidia.com/gpu": "2"}``) or a whole Pod;
what flows out is exact amounts per resource name (``resource_list``, ``pod_requests``) and a
request in Gaia units (``resources_of``). The ``kubernetes`` provider reads its pods and nodes
with these and the scheduler extender reads kube-scheduler's, so both count a pod the same way.

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

The effective request of a pod is computed as kube-scheduler does (component-helpers
``PodRequests``): containers summed, each init container's request (plus the sidecars started
before it) as a floor, sidecars (init containers with ``restartPolicy: Always``) added, pod-level
``spec.resources.requests`` for cpu and memory taking precedence, ``spec.overhead`` added. A
missing request falls back to the limit, as the API server's defaulting does. More than one card
must be whole cards (gpu-manager's rule too).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import DIMENSIONS, ResourceVector
from gaia.kube.errors import UnreadableObject
from gaia.kube.fields import json_object, optional_object
from gaia.kube.quantities import GIB, MIB, ceil_amount, clamp_amount, parse_quantity

# one card in the domain's gpu unit (hundredths): what the scheduler's port calls WHOLE_CARD too
WHOLE_CARD = next(scale for name, scale, _, _ in DIMENSIONS if name == "gpu")

# Extended resources (requests and node allocatable).
NVIDIA_GPU = "nvidia.com/gpu"
VCUDA_CORE = "tencent.com/vcuda-core"
VCUDA_MEMORY = "tencent.com/vcuda-memory"
GAIA_GPU_CORE = "gaia.io/gpu-core"
GAIA_GPU_MEMORY = "gaia.io/gpu-memory"
VCUDA_MEMORY_BLOCK_MIB = 256  # gpu-manager's MemoryBlockSize (268435456 bytes)
GPU_RESOURCES = (NVIDIA_GPU, VCUDA_CORE, VCUDA_MEMORY, GAIA_GPU_CORE, GAIA_GPU_MEMORY)
POD_RESOURCES = ("cpu", "memory", "ephemeral-storage", *GPU_RESOURCES)
_POD_LEVEL = ("cpu", "memory")  # what spec.resources may set (hugepages aside)

ResourceAmounts = dict[str, Decimal]


def resource_list(value: Any, what: str) -> ResourceAmounts:
    """The amounts of a ``ResourceList`` that Gaia counts (other resources are kube-scheduler's
    own business); absent is empty, negative is refused."""
    doc = optional_object(value, what)
    out: ResourceAmounts = {}
    for name, raw in doc.items():
        if name not in POD_RESOURCES:
            continue
        try:
            amount = parse_quantity(raw)
        except UnreadableObject as exc:
            raise UnreadableObject(f"{what}[{name}]: {exc}") from None
        if amount < 0:
            raise UnreadableObject(f"{what}[{name}] must not be negative")
        out[name] = amount
    return out


def _container_requests(container: Any, what: str) -> ResourceAmounts:
    body = json_object(container, what)
    resources = optional_object(body.get("resources"), f"{what}.resources")
    requests = resource_list(resources.get("requests"), f"{what}.resources.requests")
    limits = resource_list(resources.get("limits"), f"{what}.resources.limits")
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
        raise UnreadableObject(f"spec.{key} must be a list")
    return value


def pod_requests(pod: Mapping[str, Any]) -> ResourceAmounts:
    """The pod's effective requests, per resource name, as kube-scheduler computes them."""
    spec = optional_object(pod.get("spec"), "Pod.spec")
    total: ResourceAmounts = {}
    for i, container in enumerate(_containers(spec, "containers")):
        _add(total, _container_requests(container, f"spec.containers[{i}]"))
    sidecars: ResourceAmounts = {}
    init_floor: ResourceAmounts = {}
    for i, container in enumerate(_containers(spec, "initContainers")):
        own = _container_requests(container, f"spec.initContainers[{i}]")
        if json_object(container, "an init container").get("restartPolicy") == "Always":
            # A sidecar keeps running beside the containers, and beside later init containers.
            _add(total, own)
            _add(sidecars, own)
            while_running = dict(sidecars)
        else:
            while_running = dict(own)
            _add(while_running, sidecars)
        _raise_to(init_floor, while_running)
    _raise_to(total, init_floor)
    pod_level = optional_object(spec.get("resources"), "spec.resources")
    for name, amount in resource_list(pod_level.get("requests"), "spec.resources.requests").items():
        if name in _POD_LEVEL:
            total[name] = amount
    _add(total, resource_list(spec.get("overhead"), "spec.overhead"))
    return total


def _whole(amounts: Mapping[str, Decimal], name: str) -> int:
    amount = amounts.get(name, Decimal(0))
    if amount != amount.to_integral_value():
        raise UnreadableObject(f"{name} must be a whole number, got {amount}")
    return int(amount)


def resources_of(amounts: Mapping[str, Decimal]) -> ResourceVector:
    """Kubernetes resource amounts as a request in Gaia units (rounded up, never down)."""
    gpu = _whole(amounts, NVIDIA_GPU) * WHOLE_CARD
    gpu += _whole(amounts, VCUDA_CORE) + _whole(amounts, GAIA_GPU_CORE)
    gpu_memory = _whole(amounts, VCUDA_MEMORY) * VCUDA_MEMORY_BLOCK_MIB
    gpu_memory += _whole(amounts, GAIA_GPU_MEMORY)
    if gpu > WHOLE_CARD and gpu % WHOLE_CARD:
        raise UnreadableObject(
            f"the pod asks for {gpu / WHOLE_CARD:g} GPUs: more than one card must be whole cards "
            "(a multiple of 100 GPU cores)"
        )
    if gpu_memory and not gpu:
        raise UnreadableObject(
            "the pod asks for GPU memory but no GPU cores; ask for gaia.io/gpu-core (or "
            "tencent.com/vcuda-core) too"
        )
    zero = Decimal(0)
    try:
        return ResourceVector(
            cpu=ceil_amount(amounts.get("cpu", zero) * 1000),
            memory=ceil_amount(amounts.get("memory", zero) / MIB),
            local_disk=ceil_amount(amounts.get("ephemeral-storage", zero) / GIB),
            gpu=gpu,
            gpu_memory=gpu_memory,
        )
    except InvalidRequest as exc:
        raise UnreadableObject(f"the pod's requests are out of range: {exc.message}") from None


def held_resources(amounts: Mapping[str, Decimal]) -> ResourceVector:
    """What a pod bound to a node holds there: ``resources_of``, or, for a pod that breaks its
    GPU rules (one that is not the platform's), its requests rounded up without them: it still
    holds what it asked for."""
    try:
        return resources_of(amounts)
    except UnreadableObject:
        pass
    zero = Decimal(0)
    return ResourceVector(
        cpu=clamp_amount(ceil_amount(amounts.get("cpu", zero) * 1000)),
        memory=clamp_amount(ceil_amount(amounts.get("memory", zero) / MIB)),
        local_disk=clamp_amount(ceil_amount(amounts.get("ephemeral-storage", zero) / GIB)),
        gpu=clamp_amount(
            ceil_amount(amounts.get(NVIDIA_GPU, zero)) * WHOLE_CARD
            + ceil_amount(amounts.get(GAIA_GPU_CORE, zero))
            + ceil_amount(amounts.get(VCUDA_CORE, zero))
        ),
        gpu_memory=clamp_amount(
            ceil_amount(amounts.get(GAIA_GPU_MEMORY, zero))
            + ceil_amount(amounts.get(VCUDA_MEMORY, zero)) * VCUDA_MEMORY_BLOCK_MIB
        ),
    )
