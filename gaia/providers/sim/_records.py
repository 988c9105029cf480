"""The simulated cluster's internal records and how they look through the port.

``NodeRecord`` and ``InstanceRecord`` are mutable, slotted and private to the package: the
cluster changes them under its lock and hands out frozen ``gaia.providers.port`` values built by
``node_view`` / ``instance_view``, so a caller can never reach into the simulation's state.

Sizes matter here (20,000 instances in one process): records are slotted, everything that is
the same for many records (a node's capacity vector, its GPU tuple and link matrix, an
instance's spec) is shared rather than copied, and an instance's own log buffer is a plain list
trimmed to ``LOG_BUFFER`` lines.

``instance_shape`` is the digest that lets the platform see "only the image differs": it covers
everything in the spec that changes how the container runs, except the image and version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gaia.domain.gpu_links import LinkMatrix
from gaia.domain.resources import ResourceVector
from gaia.kube.labels import PROFILE_ANNOTATION
from gaia.providers.port import (
    ConfigData,
    ConfigRef,
    Failure,
    Gpu,
    Instance,
    InstancePhase,
    InstanceSpec,
    Node,
    PullProgress,
)
from gaia.providers.sim._images import NodeImages, Pull
from gaia.providers.sim._network import PodRange
from gaia.providers.sim._workload import DEFAULT_PROFILE

LOG_BUFFER = 200  # lifecycle lines kept per instance; periodic lines are generated on read
RUN_HISTORY = 3  # containers per instance whose periodic log lines can still be read

# (start, stop) of one container, in simulation seconds; stop is None while it runs
Run = tuple[float, float | None]
LogEntry = tuple[float, str, str]  # (time, stream, text)


@dataclass(slots=True, eq=False)
class NodeRecord:
    name: str
    index: int
    zone: str
    labels: dict[str, str]
    host_ip: str
    capacity: ResourceVector
    gpus: tuple[Gpu, ...]
    gpu_links: LinkMatrix
    images: NodeImages
    pods: PodRange
    allocated: ResourceVector = field(default_factory=ResourceVector)
    ready: bool = True
    schedulable: bool = True
    message: str = ""
    gpu_used: dict[int, int] = field(default_factory=dict)  # only cards in use
    gpu_memory_used: dict[int, int] = field(default_factory=dict)  # MiB, only cards in use
    instances: dict[tuple[str, str], InstanceRecord] = field(default_factory=dict)
    # network bytes of instances that left the node, so node counters never go down
    rx_base: float = 0.0
    tx_base: float = 0.0
    removed: bool = False


@dataclass(slots=True, eq=False)
class InstanceRecord:
    spec: InstanceSpec
    name: str
    node: NodeRecord
    image: str
    version: str
    labels: dict[str, str]
    profile: str
    seed: int
    shape: str
    pod_ip: str
    created: float
    phase: InstancePhase = InstancePhase.SCHEDULED
    ready: bool = False
    restarts: int = 0
    started: float | None = None
    failure: Failure | None = None
    pull: Pull | None = None
    # the current container attempt; pending timers of an older attempt see a different token
    token: int = 0
    liveness_failing: bool = False
    liveness_failures: int = 0
    mounted: tuple[tuple[ConfigRef, ConfigData], ...] = ()
    logs: list[LogEntry] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    def log(self, t: float, text: str, stream: str = "stdout") -> None:
        self.logs.append((t, stream, text))
        if len(self.logs) > LOG_BUFFER + LOG_BUFFER // 4:
            del self.logs[: len(self.logs) - LOG_BUFFER]

    def container_started(self, t: float) -> None:
        self.started = t
        self.runs.append((t, None))
        if len(self.runs) > RUN_HISTORY:
            del self.runs[0]

    def container_stopped(self, t: float) -> None:
        if self.runs and self.runs[-1][1] is None:
            self.runs[-1] = (self.runs[-1][0], t)


def instance_shape(spec: InstanceSpec) -> str:
    doc: dict[str, Any] = {
        "command": list(spec.command),
        "args": list(spec.args),
        "env": sorted(spec.env.items()),
        "resources": spec.resources.as_internal(),
        "gpus": len(spec.gpu_ids),
        "ports": [[p.port, p.name, p.protocol] for p in spec.ports],
        "liveness": dataclasses.asdict(spec.liveness) if spec.liveness else None,
        "readiness": dataclasses.asdict(spec.readiness) if spec.readiness else None,
        "configs": [[c.name, c.secret, c.mount_path] for c in spec.configs],
        "network_mode": spec.network_mode.value,
        "profile": spec.annotations.get(PROFILE_ANNOTATION, DEFAULT_PROFILE),
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def node_view(node: NodeRecord) -> Node:
    return Node(
        name=node.name,
        ready=node.ready,
        schedulable=node.schedulable,
        zone=node.zone,
        labels=dict(node.labels),
        host_ip=node.host_ip,
        capacity=node.capacity,
        allocated=node.allocated,
        gpus=node.gpus,
        gpu_links=node.gpu_links,
        gpu_used={g.index: node.gpu_used.get(g.index, 0) for g in node.gpus},
        gpu_memory_used={g.index: node.gpu_memory_used.get(g.index, 0) for g in node.gpus},
        instance_count=len(node.instances),
        message=node.message,
    )


def instance_view(
    rec: InstanceRecord, *, t: float, to_datetime: Callable[[float], dt.datetime]
) -> Instance:
    spec = rec.spec
    pull = None
    if rec.pull is not None and rec.phase == InstancePhase.PULLING:
        pull = PullProgress(
            done_bytes=rec.node.images.done_bytes(rec.pull, t), total_bytes=rec.pull.total_bytes
        )
    started = to_datetime(rec.started) if rec.started is not None else None
    return Instance(
        namespace=spec.namespace,
        name=rec.name,
        app=spec.app,
        instance_id=spec.instance_id,
        version=rec.version,
        image=rec.image,
        node=rec.node.name,
        phase=rec.phase,
        ready=rec.ready,
        resources=spec.resources,
        gpu_ids=spec.gpu_ids,
        cpu_ids=spec.cpu_ids,
        pod_ip=rec.pod_ip,
        host_ip=rec.node.host_ip,
        restarts=rec.restarts,
        created_at=to_datetime(rec.created),
        started_at=started,
        last_failure=rec.failure,
        pull=pull,
        labels=dict(rec.labels),
        shape=rec.shape,
    )
