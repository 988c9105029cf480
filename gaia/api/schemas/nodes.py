"""Bodies of a cluster's hosts (``gaia.api.routes.nodes``): a node with its GPUs, what is bound
to it, scale out, drain, and the sim provider's fault injection.

A node's amounts travel as ``ResourceAmounts`` in API units; ``gpu_links`` is the node's GPU link
matrix as ``nvidia-smi topo -m`` prints it. See docs/architecture.md, "api".
"""

from __future__ import annotations

from pydantic import Field

from gaia.api.schemas.base import OneLineText, ResourceAmounts, Strict


class GpuOut(Strict):
    index: int
    model: str
    memory_mib: int
    numa_node: int
    used: float = Field(description="cards in use, 0..1")
    healthy: bool = Field(
        default=True,
        description="false when the node agent reports the card sick (XID, ECC, heat); nothing "
        "new is placed on it",
    )


class NodeOut(Strict):
    name: str
    ready: bool
    schedulable: bool
    zone: str
    labels: dict[str, str]
    host_ip: str
    capacity: ResourceAmounts
    allocated: ResourceAmounts
    gpus: list[GpuOut]
    gpu_links: list[list[str]]
    instances: int
    message: str


class BoundInstanceOut(Strict):
    """An instance bound to the node; ``business``/``app``/``name`` are null when it belongs to a
    business the caller is not a member of (platform admins see every one)."""

    business: str | None
    app: str | None
    name: str | None
    instance_id: int | None
    phase: str
    ready: bool
    resources: ResourceAmounts
    gpu_ids: list[int]
    gpu_share: float = Field(description="cards of each of its GPUs it holds, 0..1")


class NodeDetailOut(NodeOut):
    bound: list[BoundInstanceOut] = Field(description="instances bound to the node, by name")


class NodeIn(Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    cpu: int = Field(ge=1, le=1024, description="cores")
    memory_mib: int = Field(ge=256, le=16 * 1024 * 1024)
    local_disk_gib: int = Field(default=100, ge=1, le=1024 * 1024)
    bandwidth_mbps: int = Field(default=10_000, ge=1, le=400_000)
    gpus: int = Field(default=0, ge=0, le=16)
    gpu_model: OneLineText = Field(default="", max_length=63)
    gpu_memory_mib: int = Field(default=0, ge=0, le=1024 * 1024)
    gpu_links: list[list[OneLineText]] = Field(default_factory=list, max_length=16)
    zone: OneLineText = Field(default="", max_length=63)
    labels: dict[OneLineText, OneLineText] = Field(default_factory=dict, max_length=64)


class DrainOut(Strict):
    node: str
    evicted: list[str]


class FaultIn(Strict):
    kind: OneLineText = Field(
        description="crash | oom | liveness | image_pull | clear_image_pull | node_lost | "
        "node_restored | load | clear_load"
    )
    namespace: OneLineText | None = Field(default=None, max_length=63)
    instance: OneLineText | None = Field(default=None, max_length=253)
    app: OneLineText | None = Field(default=None, max_length=253, description="load, clear_load")
    cpu_percent: float | None = Field(
        default=None, ge=0, le=100, description="load: percent of the CPU request to use"
    )
    memory_percent: float | None = Field(
        default=None, ge=0, le=100, description="load: percent of the memory request to use"
    )
    node: OneLineText | None = Field(default=None, max_length=253)
    image: OneLineText | None = Field(default=None, max_length=512)
    exit_code: int | None = Field(default=None, ge=1, le=255)
    message: OneLineText | None = Field(default=None, max_length=500)
