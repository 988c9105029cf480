"""``sim_spec``: the document that describes a simulated cluster's nodes.

It is stored with the cluster row (JSON) and validated twice: when an administrator registers
the cluster (errors go back to them, naming the field) and when the provider is built from the
stored row. ``validate_sim_spec`` therefore fills every default and is idempotent:
``validate_sim_spec(validate_sim_spec(x)) == validate_sim_spec(x)``.

::

    {"nodes": 4, "cpu": 32, "memory_mib": 131072, "gpus": 8, "zone": "ap-beijing-1",
     "local_disk_gib": 500, "bandwidth_mbps": 10000, "gpu_model": "Tesla P40",
     "gpu_memory_mib": 24576, "gpu_topology": "pcie-2socket", "labels": {"rack": "r1"}}

``cpu`` is in cores here (an administrator's unit); nodes report millicores. ``gpu_topology`` is
a preset name (``pcie-2socket``, ``nvlink``) or an explicit ``gpus`` x ``gpus`` matrix of link
names as ``nvidia-smi topo -m`` prints it, checked by the domain's one set of rules for link
matrices (``gaia.domain.gpu_links.normalize_matrix``).

Where each GPU sits (its NUMA node and the CPU cores next to it, which decide the cores an
instance is bound to) comes, per GPU, from the first of:

1. ``nvidia_smi_topo``: the text of ``nvidia-smi topo -m`` of the board to simulate (its "CPU
   Affinity" and "NUMA Affinity" columns; it gives the link matrix too, which then replaces the
   preset of ``gpu_topology``). Old drivers print no NUMA column: GPUs with the same CPU
   affinity then share a NUMA node, numbered in order of appearance;
2. ``gpu_affinity``: one ``{"numa_node": 0, "cpus": "0-15,64-79"}`` per GPU, for a board whose
   table lacks the columns or for a matrix given without one;
3. only as a last resort, the link matrix: GPUs joined by anything but ``SOC`` share a socket,
   and the cores are split evenly over the sockets. That is right for the presets (built so)
   and wrong for most real boards (an NVLink board across two sockets reads as one NUMA node),
   so a node built so from an explicit matrix says it in a ``GpuAffinityDerived`` event.

Every core named must exist on the node (below ``cpu``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.domain.gpu_links import PRESETS, LinkMatrix, normalize_matrix, numa_nodes
from gaia.scheduler.links import GpuTopology, parse_cpu_list, parse_nvidia_smi_topo

MAX_SIM_NODES = 5000
MAX_GPUS_PER_NODE = 16
DEFAULT_GPU_MODEL = "Tesla P40"
DEFAULT_GPU_MEMORY_MIB = 24 * 1024

DEFAULT_SPEC: dict[str, Any] = {
    "nodes": 4,
    "cpu": 32,
    "memory_mib": 128 * 1024,
    "gpus": 8,
    "zone": "",
    "local_disk_gib": 500,
    "bandwidth_mbps": 10_000,
    "gpu_model": DEFAULT_GPU_MODEL,
    "gpu_memory_mib": DEFAULT_GPU_MEMORY_MIB,
    "gpu_topology": "pcie-2socket",
    "labels": {},
    "nvidia_smi_topo": "",
    "gpu_affinity": [],
}
MAX_TOPOLOGY_TEXT = 64 * 1024

# (lower, upper) for every integer field
_INT_LIMITS: dict[str, tuple[int, int]] = {
    "nodes": (0, MAX_SIM_NODES),
    "cpu": (0, 1024),
    "memory_mib": (0, 16 * 1024 * 1024),
    "gpus": (0, MAX_GPUS_PER_NODE),
    "local_disk_gib": (0, 1024 * 1024),
    "bandwidth_mbps": (1, 1_000_000),
    "gpu_memory_mib": (0, 1024 * 1024),
}
MAX_LABELS = 64


def validate_sim_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and reject nonsense with a message that names the field."""
    if not isinstance(spec, dict):
        raise InvalidRequest("sim_spec must be an object")
    unknown = set(spec) - set(DEFAULT_SPEC)
    if unknown:
        raise InvalidRequest(
            f"unknown sim_spec field(s): {', '.join(sorted(unknown))}",
            details={"allowed": sorted(DEFAULT_SPEC)},
        )
    merged = {**DEFAULT_SPEC, **spec}
    for name, (lower, upper) in _INT_LIMITS.items():
        value = merged[name]
        if not isinstance(value, int) or isinstance(value, bool) or not lower <= value <= upper:
            raise InvalidRequest(f"sim_spec.{name} must be an integer from {lower} to {upper}")
    if not isinstance(merged["zone"], str) or len(merged["zone"]) > 63:
        raise InvalidRequest("sim_spec.zone must be a string of at most 63 characters")

    model = merged["gpu_model"]
    if not isinstance(model, str) or len(model) > 63:
        raise InvalidRequest("sim_spec.gpu_model must be a string of at most 63 characters")
    if merged["gpus"] == 0 and "gpu_model" not in spec:
        merged["gpu_model"] = ""
    elif merged["gpus"] > 0 and not model:
        merged["gpu_model"] = DEFAULT_GPU_MODEL

    topology = merged["gpu_topology"]
    if isinstance(topology, str):
        if topology not in PRESETS:
            raise InvalidRequest(
                f"sim_spec.gpu_topology must be one of {', '.join(PRESETS)} or a "
                f"{merged['gpus']}x{merged['gpus']} matrix of link names, got {topology!r}"
            )
    else:
        matrix = normalize_matrix(topology, merged["gpus"], field="sim_spec.gpu_topology")
        merged["gpu_topology"] = [list(row) for row in matrix]  # JSON-friendly for the store

    merged["labels"] = check_labels(merged["labels"], field="sim_spec.labels")
    source = _check_topology_text(merged)
    merged["gpu_affinity"] = _check_affinity(merged["gpu_affinity"], merged)
    if source is not None:
        _check_cores(source.cpu_affinity, merged["cpu"], field="sim_spec.nvidia_smi_topo")
    return merged


def _check_topology_text(merged: dict[str, Any]) -> GpuTopology | None:
    """Parse ``nvidia_smi_topo`` (if given); its matrix becomes ``gpu_topology``."""
    text = merged["nvidia_smi_topo"]
    if not isinstance(text, str) or len(text) > MAX_TOPOLOGY_TEXT:
        raise InvalidRequest(
            f"sim_spec.nvidia_smi_topo must be the text of nvidia-smi topo -m, at most "
            f"{MAX_TOPOLOGY_TEXT} characters"
        )
    if not text.strip():
        return None
    try:
        source = parse_nvidia_smi_topo(text)
    except ValueError as exc:
        raise InvalidRequest(f"sim_spec.nvidia_smi_topo: {exc}") from None
    if source.count != merged["gpus"]:
        raise InvalidRequest(
            f"sim_spec.gpus is {merged['gpus']} but sim_spec.nvidia_smi_topo has "
            f"{source.count} GPUs"
        )
    matrix = [list(row) for row in normalize_matrix(source.links, source.count, field="links")]
    given = merged["gpu_topology"]
    if isinstance(given, list) and given != matrix:
        raise InvalidRequest(
            "sim_spec.gpu_topology and sim_spec.nvidia_smi_topo give different link matrices; "
            "give one of them"
        )
    merged["gpu_topology"] = matrix
    return source


def _check_affinity(raw: Any, merged: dict[str, Any]) -> list[dict[str, Any]]:
    field = "sim_spec.gpu_affinity"
    if not isinstance(raw, list):
        raise InvalidRequest(f"{field} must be a list with one entry per GPU")
    if raw and len(raw) != merged["gpus"]:
        raise InvalidRequest(f"{field} has {len(raw)} entries for {merged['gpus']} GPUs")
    out = []
    for index, entry in enumerate(raw):
        where = f"{field}[{index}]"
        if not isinstance(entry, dict) or not set(entry) <= {"numa_node", "cpus"}:
            raise InvalidRequest(f'{where} must be like {{"numa_node": 0, "cpus": "0-15,64-79"}}')
        numa = entry.get("numa_node")
        if numa is not None and (
            not isinstance(numa, int) or isinstance(numa, bool) or not 0 <= numa < 1024
        ):
            raise InvalidRequest(f"{where}.numa_node must be an integer from 0 to 1023")
        cpus = entry.get("cpus", "")
        if not isinstance(cpus, str):
            raise InvalidRequest(f'{where}.cpus must be a CPU list such as "0-15,64-79"')
        try:
            cores = parse_cpu_list(cpus, where=f"{where}.cpus")
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        _check_cores((cores,), merged["cpu"], field=f"{where}.cpus")
        out.append({"numa_node": numa, "cpus": cpus.strip()})
    return out


def _check_cores(affinity: Sequence[Sequence[int]], cores: int, *, field: str) -> None:
    for gpu, ids in enumerate(affinity):
        beyond = [c for c in ids if c >= cores]
        if beyond:
            raise InvalidRequest(
                f"{field}: GPU{gpu}'s CPU affinity names core {beyond[0]}, but the node has "
                f"{cores} cores (sim_spec.cpu)"
            )


@dataclass(frozen=True, slots=True)
class GpuPlace:
    """Where one GPU sits: its NUMA node and the CPU cores next to it."""

    numa_node: int
    cpu_ids: tuple[int, ...]


def gpu_places(
    *,
    links: LinkMatrix,
    cores: int,
    source: GpuTopology | None = None,
    affinity: Sequence[dict[str, Any]] = (),
) -> tuple[tuple[GpuPlace, ...], bool]:
    """Each GPU's NUMA node and cores, from ``source`` (a parsed ``nvidia-smi topo -m``), else
    ``affinity`` (``gpu_affinity``), else guessed (NUMA nodes from the matrix, cores split
    evenly over them); and whether anything was guessed, which the caller says in an event
    when the matrix is not a preset (built so). See the module docstring."""
    count = len(links)
    cpus: list[tuple[int, ...]] = []
    numa: list[int | None] = []
    for gpu in range(count):
        given = affinity[gpu] if affinity else {}
        from_source = source.cpu_affinity[gpu] if source is not None else ()
        cpus.append(from_source or parse_cpu_list(str(given.get("cpus") or "")))
        node = source.numa_node[gpu] if source is not None else None
        numa.append(node if node is not None else given.get("numa_node"))
    # no NUMA column (old drivers): GPUs with the same CPU affinity share a NUMA node
    if any(n is None for n in numa) and all(cpus):
        groups: dict[tuple[int, ...], int] = {}
        numa = [
            n if n is not None else groups.setdefault(c, len(groups))
            for n, c in zip(numa, cpus, strict=True)
        ]
    guessed = False
    if any(n is None for n in numa):  # the last resort: sockets read off the link matrix
        sockets = numa_nodes(links)
        numa = [n if n is not None else sockets[i] for i, n in enumerate(numa)]
        guessed = True
    if not all(cpus):  # the node's cores split evenly over its NUMA nodes, in order
        rank = {n: r for r, n in enumerate(sorted({n for n in numa if n is not None}))}
        per_node = cores // max(1, len(rank))
        cpus = [
            c or tuple(range(rank[n] * per_node, (rank[n] + 1) * per_node))
            for c, n in zip(cpus, numa, strict=True)
            if n is not None
        ]
        guessed = True
    places = tuple(GpuPlace(numa_node=n or 0, cpu_ids=c) for n, c in zip(numa, cpus, strict=True))
    return places, guessed


def check_labels(labels: Any, *, field: str) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise InvalidRequest(f"{field} must be an object of string keys and values")
    if len(labels) > MAX_LABELS:
        raise InvalidRequest(f"{field} may hold at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not 0 < len(key) <= 253:
            raise InvalidRequest(f"{field}: keys must be strings of 1 to 253 characters")
        if not isinstance(value, str) or len(value) > 63:
            raise InvalidRequest(f"{field}.{key} must be a string of at most 63 characters")
    return dict(labels)
