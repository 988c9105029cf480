"""The platform's own components (issue 21): replicas and their loops, the loop groups'
leaders, the database, the metric store, and registered clusters' control planes."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel


class LoopOut(BaseModel):
    """One loop as its replica reported it. Every field but the name has a default: a replica of
    another Gaia version (during a rolling upgrade) may report fewer or other fields."""

    name: str
    group: str = ""  # "" for loops every replica runs
    leads: bool | None = None  # None for loops every replica runs
    interval_s: float = 0.0
    passes: int = 0
    failures: int = 0
    last_pass_at: dt.datetime | None = None
    last_error: str = ""
    restarts: int = 0
    logger: str = ""  # where its log lines come from (GET /api/v1/system/logs?logger=)
    # what its work queue holds (the app controller: apps and clusters not yet as wished, to be
    # looked at again before anything is heard of them); None for a loop without one
    queued: int | None = None


class ReplicaOut(BaseModel):
    name: str
    version: str
    host: str
    pid: int
    address: str
    schema_revision: str
    started_at: dt.datetime
    seen_at: dt.datetime
    state: str  # "up" or "gone" (no heartbeat for 30 s)
    this_replica: bool
    asked_restarts: list[str]
    loops: list[LoopOut]


class LeaderOut(BaseModel):
    group: str
    holder: str
    epoch: int
    acquired_at: dt.datetime
    expires_at: dt.datetime
    expired: bool


class StoreOut(BaseModel):
    kind: str
    healthy: bool
    detail: str
    latency_ms: float | None = None


class ComponentsOut(BaseModel):
    version: str
    this_replica: str
    replicas: list[ReplicaOut]
    leaders: list[LeaderOut]
    database: StoreOut
    metric_store: StoreOut


class ControlPlanePart(BaseModel):
    name: str  # "apiserver", "etcd"
    healthy: bool | None  # None: not known (no figure)
    detail: str


class ClusterComponentsOut(BaseModel):
    cluster: str
    kind: str
    health: str  # the cluster health loop's last verdict
    health_message: str
    health_checked_at: dt.datetime | None
    parts: list[ControlPlanePart]


class LoopRestartOut(BaseModel):
    replica: str
    loop: str
    state: str  # "asked": the replica restarts it at its next heartbeat (within 5 s)
