"""The ``sim`` provider: an in-process simulated cluster, the embedded default.

This is the first cut, enough for the platform core: a set of virtual nodes built from the
cluster's ``sim_spec`` and a switch that makes the cluster unreachable (fault injection for health
tests). The apps issue turns it into the full simulator of ARCHITECTURE.md (instance lifecycle,
image pulls, probes, faults, metrics, logs, a steppable clock).

``sim_spec``::

    {"nodes": 4, "cpu": 32, "memory_mib": 131072, "gpus": 8, "zone": "ap-beijing-1"}
"""

from __future__ import annotations

from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.providers.port import ClusterHealth, HealthState, NodeSummary

DEFAULT_SPEC: dict[str, Any] = {
    "nodes": 4,
    "cpu": 32,
    "memory_mib": 128 * 1024,
    "gpus": 8,
    "zone": "",
}
MAX_SIM_NODES = 5000


def validate_sim_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and reject nonsense with a message that names the field."""
    unknown = set(spec) - set(DEFAULT_SPEC)
    if unknown:
        raise InvalidRequest(
            f"unknown sim_spec field(s): {', '.join(sorted(unknown))}",
            details={"allowed": sorted(DEFAULT_SPEC)},
        )
    merged = {**DEFAULT_SPEC, **spec}
    limits = {"nodes": MAX_SIM_NODES, "cpu": 1024, "memory_mib": 16 * 1024 * 1024, "gpus": 16}
    for name, upper in limits.items():
        value = merged[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
            raise InvalidRequest(f"sim_spec.{name} must be an integer from 0 to {upper}")
    if not isinstance(merged["zone"], str) or len(merged["zone"]) > 63:
        raise InvalidRequest("sim_spec.zone must be a string of at most 63 characters")
    return merged


class SimCluster:
    kind = "sim"

    def __init__(self, *, name: str, spec: dict[str, Any], zone: str = "") -> None:
        self.name = name
        self.spec = validate_sim_spec(spec)
        self.reachable = True
        node_zone = self.spec["zone"] or zone
        self._nodes = [
            NodeSummary(
                name=f"{name}-node-{i}",
                ready=True,
                zone=node_zone,
                cpu_milli=self.spec["cpu"] * 1000,
                memory_mib=self.spec["memory_mib"],
                gpus=self.spec["gpus"],
            )
            for i in range(self.spec["nodes"])
        ]

    async def check_health(self, *, timeout: float) -> ClusterHealth:
        if not self.reachable:
            return ClusterHealth(HealthState.UNREACHABLE, "simulated cluster is cut off")
        return ClusterHealth(HealthState.HEALTHY, f"{len(self._nodes)} simulated nodes")

    async def list_nodes(self) -> list[NodeSummary]:
        if not self.reachable:
            raise ConnectionError("simulated cluster is cut off")
        return list(self._nodes)

    async def close(self) -> None:
        return None
