"""The ClusterProvider port: what the platform needs from a cluster, in domain terms.

This first cut carries what the platform core uses: health and a summary of nodes. The apps
issue grows it (instances, services, configs and secrets, events, metrics, logs, exec) and one
contract suite will run against every adapter. Adapters are the only code that knows a wire
format; everything above speaks these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class HealthState(StrEnum):
    UNKNOWN = "Unknown"
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"  # answers, but says it is not ready
    UNREACHABLE = "Unreachable"  # does not answer at all


@dataclass(frozen=True, slots=True)
class ClusterHealth:
    state: HealthState
    message: str = ""


@dataclass(frozen=True, slots=True)
class NodeSummary:
    name: str
    ready: bool
    zone: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cpu_milli: int = 0
    memory_mib: int = 0
    gpus: int = 0


@runtime_checkable
class ClusterProvider(Protocol):
    """One registered cluster, as the platform sees it."""

    kind: str

    async def check_health(self, *, timeout: float) -> ClusterHealth:
        """Probe the cluster; must return within ``timeout`` seconds, never raise."""
        ...

    async def list_nodes(self) -> list[NodeSummary]: ...

    async def close(self) -> None: ...
