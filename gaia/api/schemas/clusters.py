"""Bodies of cluster registration and its answer (``gaia.api.routes.clusters``).

A kubeconfig flows in only (``writeOnly``); the answer says ``has_kubeconfig``. ``SimSpec`` is
the shape of a simulated cluster, checked again by the sim provider when it is registered.
See docs/architecture.md, "api".
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from gaia.api.schemas.base import Description, Labels, Name, ShortText, Strict


class GpuAffinity(Strict):
    """Where one simulated GPU sits, for a board whose nvidia-smi table lacks the columns."""

    numa_node: int | None = Field(default=None, ge=0, le=1023)
    cpus: str = Field(
        default="",
        max_length=1024,
        pattern=r"^([0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)?$",
        description='the CPU cores next to the GPU, as Linux prints them: "0-15,64-79"',
    )


class SimSpec(Strict):
    nodes: Annotated[int, Field(ge=0, le=5000)] = 4
    cpu: Annotated[int, Field(ge=0, le=1024)] = 32
    memory_mib: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = 128 * 1024
    gpus: Annotated[int, Field(ge=0, le=16)] = 8
    zone: ShortText = ""
    local_disk_gib: Annotated[int, Field(ge=0, le=1024 * 1024)] = 500
    bandwidth_mbps: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    gpu_model: ShortText = "Tesla P40"
    gpu_memory_mib: Annotated[int, Field(ge=0, le=1024 * 1024)] = 24 * 1024
    gpu_topology: (
        Annotated[str, Field(max_length=32)]
        | list[Annotated[list[Annotated[str, Field(max_length=8)]], Field(max_length=16)]]
    ) = Field(
        default="pcie-2socket",
        description='"pcie-2socket", "nvlink", or an nvidia-smi topo -m style matrix',
    )
    labels: Labels = Field(default_factory=dict, max_length=64)
    nvidia_smi_topo: Annotated[str, Field(max_length=64 * 1024)] = Field(
        default="",
        description="the output of nvidia-smi topo -m of the board to simulate: the GPU links and "
        "each GPU's CPU and NUMA affinity come from it (gpus must match its GPU count)",
    )
    gpu_affinity: list[GpuAffinity] = Field(
        default_factory=list,
        max_length=16,
        description="one per GPU, where nvidia_smi_topo gives no CPU/NUMA affinity; with neither, "
        "NUMA nodes are derived from the link matrix (and the node says so in an event)",
    )


class ClusterCreate(Strict):
    name: Name
    kind: Literal["sim", "kubernetes"]
    region: ShortText = ""
    zone: ShortText = ""
    labels: Labels = Field(default_factory=dict, max_length=64)
    description: Description = ""
    kubeconfig: Annotated[str, Field(max_length=1_000_000)] | None = Field(
        default=None,
        description="kind=kubernetes only; stored encrypted and never returned",
        json_schema_extra={"writeOnly": True},
    )
    sim: SimSpec | None = Field(default=None, description="kind=sim only")


class ClusterUpdate(Strict):
    region: ShortText | None = None
    zone: ShortText | None = None
    labels: Labels | None = Field(default=None, max_length=64)
    description: Description | None = None
    kubeconfig: Annotated[str, Field(max_length=1_000_000)] | None = Field(
        default=None, json_schema_extra={"writeOnly": True}
    )


class ClusterOut(BaseModel):
    name: str
    kind: str
    region: str
    zone: str
    labels: dict[str, str]
    description: str
    has_kubeconfig: bool
    sim: dict[str, Any] | None
    health: str
    health_message: str
    health_checked_at: dt.datetime | None
    health_changed_at: dt.datetime | None
    node_count: int | None
    ready_node_count: int | None
    created_at: dt.datetime
