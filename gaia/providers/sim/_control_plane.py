"""Simulated control-plane figures: what a real cluster's API server and etcd would report.

A sim cluster has no API server and no etcd, so nothing here is measured. The figures are
plausible functions of what the cluster holds (objects per resource, as etcd would store them)
and of the requests made to it (the port calls the cluster counts, plus every node's status
and lease updates), so that the platform's control-plane metrics, dashboards and alerts have
something sensible to show and move when the cluster grows:

- objects per resource as ``resource[.group]``, like the ``kubernetes`` adapter's labels;
- the etcd database: about 1.5 MiB empty, plus each object's typical stored size;
- latencies: a couple of milliseconds, growing slowly with the object count, with jitter drawn
  per 15-second bucket (deterministic, like the workload metrics);
- the API server's memory follows its watch cache (every object), its CPU the node count.

A healthy simulation serves no 5xx errors; a cut-off one answers nothing (the caller raises).
"""

from __future__ import annotations

from dataclasses import dataclass

from gaia.providers.port import ControlPlaneSample
from gaia.providers.sim._workload import unit

MIB = 1024 * 1024
# typical bytes one object takes in etcd (protobuf, with managed fields)
_STORED_BYTES = {"pods": 5_000, "nodes": 8_000, "events": 1_000}
_DEFAULT_STORED_BYTES = 1_500


@dataclass(frozen=True, slots=True)
class ObjectCounts:
    pods: int
    nodes: int
    namespaces: int  # the businesses' namespaces; the four system ones are added
    services: int
    configmaps: int
    secrets: int
    events: int
    resourcequotas: int


def samples(
    counts: ObjectCounts, *, requests_total: float, seed: int, t: float
) -> list[ControlPlaneSample]:
    """The figures at Unix time ``t`` (see the module docstring)."""
    objects = {
        "pods": counts.pods,
        "nodes": counts.nodes,
        "leases.coordination.k8s.io": counts.nodes,  # one heartbeat lease per node
        "namespaces": counts.namespaces + 4,  # default, kube-system, kube-public, kube-node-lease
        "services": counts.services + 1,  # the "kubernetes" service
        "endpointslices.discovery.k8s.io": counts.services + 1,
        "configmaps": counts.configmaps + counts.namespaces + 4,  # kube-root-ca.crt in each
        "secrets": counts.secrets,
        "events": counts.events,
        "resourcequotas": counts.resourcequotas,
    }
    total = sum(objects.values())
    bucket = int(t // 15.0)
    jitter = unit(seed, 70_000 + bucket) - 0.5  # -0.5 .. 0.5
    etcd_latency = 0.0015 * (1.0 + total / 40_000) * (1.0 + 0.2 * jitter)
    api_latency = 0.004 + 1.5 * etcd_latency * (1.0 + 0.2 * (unit(seed, 80_000 + bucket) - 0.5))
    db_bytes = 1.5 * MIB + sum(
        n * _STORED_BYTES.get(resource, _DEFAULT_STORED_BYTES) for resource, n in objects.items()
    )

    def sample(name: str, value: float, **labels: str) -> ControlPlaneSample:
        return ControlPlaneSample(name=name, labels=labels, value=float(value))

    out = [sample("gaia_etcd_up", 1.0)]
    out.extend(sample("gaia_etcd_objects", n, resource=r) for r, n in sorted(objects.items()))
    out += [
        sample("gaia_etcd_db_size_bytes", db_bytes),
        sample("gaia_etcd_request_latency_seconds", etcd_latency),
        # reads are served from the watch cache; writes and quorum reads reach etcd
        sample("gaia_etcd_requests_total", round(requests_total * 0.6)),
        sample("gaia_etcd_request_errors_total", 0.0),
        sample("gaia_apiserver_requests_total", round(requests_total)),
        sample("gaia_apiserver_errors_total", 0.0),
        sample("gaia_apiserver_request_latency_seconds", api_latency),
        sample("gaia_apiserver_inflight_requests", 1.0, kind="readOnly"),  # this very read
        sample("gaia_apiserver_inflight_requests", 0.0, kind="mutating"),
        sample("gaia_apiserver_watches", 12 + 4 * counts.nodes),  # controllers + each kubelet
        sample("gaia_apiserver_memory_bytes", 180 * MIB + 6_000 * total),
        sample("gaia_apiserver_cpu_usage_millicores", 40.0 + 0.4 * counts.nodes + 0.01 * total),
    ]
    return out
