"""The built-in alert rules: what a platform team wants watched on every cluster from day one.

Each rule is a template over a metric of the catalogue (``gaia.monitor.metrics.catalogue``,
documented in docs/metrics.md), grouped by the talk's areas. Enabling rules on a cluster
(``POST /api/v1/clusters/{cluster}/alert-rules``) makes one ordinary platform policy per rule,
scoped to that cluster (``cluster=<name>``) and marked with ``builtin_key``; it can then be
tuned (threshold, for-duration, receivers, channels) like any policy. Enabling again is
idempotent: rules already enabled on the cluster are left as they are.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from gaia.domain.alerts import Comparison, ScopeKind, Severity
from gaia.store.models import AlertPolicy


@dataclass(frozen=True, slots=True)
class BuiltinRule:
    key: str
    area: str
    name: str
    metric: str
    comparison: Comparison
    threshold: float
    for_seconds: int
    severity: Severity
    summary: str
    scope: ScopeKind = ScopeKind.CLUSTER
    matchers: tuple[tuple[str, str], ...] = ()  # beyond the cluster's


GT, GE, LT, EQ = Comparison.GT, Comparison.GE, Comparison.LT, Comparison.EQ
CRIT, WARN, INFO = Severity.CRITICAL, Severity.WARNING, Severity.INFO

# fmt: off
BUILTIN_RULES: tuple[BuiltinRule, ...] = (
    # cluster
    BuiltinRule("cluster-down", "cluster", "Cluster unreachable", "gaia_cluster_up", EQ, 0, 60,
                CRIT, "The platform cannot reach the cluster's API."),
    BuiltinRule("cluster-nodes-unschedulable", "cluster", "Few schedulable nodes",
                "gaia_cluster_nodes_schedulable", LT, 1, 300, CRIT,
                "No node of the cluster accepts new instances."),
    BuiltinRule("cluster-cpu-allocated-high", "cluster", "Cluster CPU nearly allocated",
                "gaia_cluster_cpu_allocated_percent", GT, 90, 600, WARN,
                "Over 90% of the cluster's CPU is allocated: add nodes before apps fail to "
                "schedule."),
    BuiltinRule("cluster-memory-allocated-high", "cluster", "Cluster memory nearly allocated",
                "gaia_cluster_memory_allocated_percent", GT, 90, 600, WARN,
                "Over 90% of the cluster's memory is allocated."),
    BuiltinRule("cluster-cpu-usage-high", "cluster", "Cluster CPU busy",
                "gaia_cluster_cpu_usage_percent", GT, 85, 900, WARN,
                "The cluster's CPU usage has stayed above 85%."),
    BuiltinRule("cluster-instances-failed", "cluster", "Failed instances",
                "gaia_cluster_instances", GT, 0, 300, WARN,
                "Instances in the cluster are failing.", matchers=(("phase", "Failed"),)),
    # hosts (nodes)
    BuiltinRule("node-not-ready", "node", "Node not ready", "gaia_node_ready", EQ, 0, 120, CRIT,
                "A node stopped reporting ready; its instances will be moved."),
    BuiltinRule("node-cpu-high", "node", "Node CPU high", "gaia_node_cpu_usage_percent", GT, 90,
                600, WARN, "A node's CPU usage has stayed above 90%."),
    BuiltinRule("node-memory-high", "node", "Node memory high",
                "gaia_node_memory_usage_percent", GT, 90, 300, CRIT,
                "A node's memory usage is above 90%: the kernel may start killing containers."),
    BuiltinRule("node-cpu-overallocated", "node", "Node CPU fully allocated",
                "gaia_node_cpu_allocated_percent", GE, 100, 1800, INFO,
                "A node's CPU is fully allocated."),
    # apps and instances
    BuiltinRule("instance-cpu-high", "app", "Instance CPU near its limit",
                "gaia_instance_cpu_usage_percent", GT, 90, 600, WARN,
                "An instance uses over 90% of its CPU request."),
    BuiltinRule("instance-memory-high", "app", "Instance memory near its limit",
                "gaia_instance_memory_usage_percent", GT, 90, 300, CRIT,
                "An instance uses over 90% of its memory: it may be OOM-killed."),
    BuiltinRule("instance-not-ready", "app", "Instance not ready", "gaia_instance_ready", EQ, 0,
                300, WARN, "An instance has not been ready for 5 minutes."),
    BuiltinRule("instance-restarting", "app", "Instance restarting",
                "gaia_instance_restarts_total", GT, 5, 0, WARN,
                "An instance has restarted more than 5 times."),
    BuiltinRule("app-unavailable", "app", "App below its instance count",
                "gaia_app_available_percent", LT, 100, 600, WARN,
                "An app has had fewer ready instances than it wants for 10 minutes."),
    # GPUs
    BuiltinRule("node-gpu-busy", "gpu", "GPUs saturated", "gaia_node_gpu_utilization_percent",
                GT, 95, 1800, INFO, "A node's GPUs have been over 95% busy for 30 minutes."),
    BuiltinRule("cluster-gpus-exhausted", "gpu", "No free GPUs",
                "gaia_cluster_gpu_allocated_percent", GE, 100, 900, INFO,
                "Every GPU of the cluster is allocated."),
    # storage
    BuiltinRule("node-disk-high", "storage", "Node disk filling", "gaia_node_disk_usage_percent",
                GT, 85, 600, WARN, "A node's disk is over 85% full."),
    # etcd and the control plane
    BuiltinRule("etcd-latency-high", "etcd", "etcd slow", "gaia_etcd_request_latency_seconds",
                GT, 0.5, 300, WARN, "etcd requests take over 0.5 s on average."),
    BuiltinRule("etcd-db-large", "etcd", "etcd database large", "gaia_etcd_db_size_bytes", GT,
                1.5 * 1024**3, 600, WARN,
                "etcd's database is over 1.5 GiB, three quarters of its default 2 GiB quota: "
                "compact and defragment, or raise --quota-backend-bytes."),
    BuiltinRule("etcd-down", "etcd", "etcd unhealthy", "gaia_etcd_up", EQ, 0, 60, CRIT,
                "The API server reports its etcd unhealthy."),
    BuiltinRule("cluster-disk-high", "storage", "Cluster disks filling",
                "gaia_cluster_disk_usage_percent", GT, 80, 1800, INFO,
                "The cluster's node disks are over 80% full on average."),
)
# fmt: on

BY_KEY = {rule.key: rule for rule in BUILTIN_RULES}


def cluster_policy(
    rule: BuiltinRule,
    cluster: str,
    *,
    created_by: str,
    now: dt.datetime,
    receiver_ids: Sequence[int] = (),
    group_ids: Sequence[int] = (),
    channel_ids: Sequence[int] = (),
) -> AlertPolicy:
    """The platform policy that enables ``rule`` on ``cluster``."""
    return AlertPolicy(
        business_id=None,
        name=f"{rule.name} ({cluster})",
        scope=ScopeKind.CLUSTER.value,
        matchers={**dict(rule.matchers), "cluster": cluster},
        metric=rule.metric,
        comparison=rule.comparison.value,
        threshold=rule.threshold,
        for_seconds=rule.for_seconds,
        severity=rule.severity.value,
        repeat_seconds=0,
        enabled=True,
        receiver_ids=list(receiver_ids),
        group_ids=list(group_ids),
        channel_ids=list(channel_ids),
        templates={},
        summary=rule.summary,
        builtin_key=rule.key,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
