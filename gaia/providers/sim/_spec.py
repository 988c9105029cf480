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
"""

from __future__ import annotations

from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.domain.gpu_links import PRESETS, normalize_matrix

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
}

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
    return merged


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
