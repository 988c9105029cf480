"""The ClusterProvider contract for ``control_plane_metrics``: the API server's and etcd's health
in figures, named as the platform's metric catalogue names them.

On ``kubernetes`` the figures are the real kube-apiserver's ``/metrics`` and its etcd readiness
check; on ``sim`` they are simulated from the cluster's objects. Either way: every figure is a
catalogue name of the control-plane area with exactly its labels (``cluster`` aside, which the
collector adds), etcd is up, and the counters move forward as the cluster is used.
"""

from __future__ import annotations

from gaia.domain.resources import ResourceVector
from gaia.monitor.metrics import catalogue
from gaia.providers.port import ControlPlaneSample, InstanceSpec, PortSpec
from tests.contract.conftest import Harness, contract

ALWAYS = {
    "gaia_etcd_up",
    "gaia_etcd_objects",
    "gaia_etcd_db_size_bytes",
    "gaia_etcd_request_latency_seconds",
    "gaia_etcd_requests_total",
    "gaia_apiserver_requests_total",
    "gaia_apiserver_errors_total",
    "gaia_apiserver_request_latency_seconds",
    "gaia_apiserver_inflight_requests",
}


def one(samples: list[ControlPlaneSample], name: str) -> float:
    found = [s.value for s in samples if s.name == name]
    assert len(found) == 1, (name, found)
    return found[0]


@contract
async def test_control_plane_figures_are_catalogue_metrics(provider_harness: Harness) -> None:
    h = provider_harness
    first = await h.provider.control_plane_metrics()
    for s in first:
        entry = catalogue.lookup(s.name)
        assert entry is not None and entry.area == "control-plane", s.name
        assert h.kind in entry.adapters, s.name
        assert set(s.labels) == set(entry.labels) - {"cluster"}, s
        assert s.value >= 0, s
    assert {s.name for s in first} >= ALWAYS
    assert one(first, "gaia_etcd_up") == 1.0
    assert one(first, "gaia_etcd_db_size_bytes") > 0
    resources = {s.labels["resource"] for s in first if s.name == "gaia_etcd_objects"}
    assert {"pods", "nodes", "namespaces"} <= resources
    kinds = {s.labels["kind"] for s in first if s.name == "gaia_apiserver_inflight_requests"}
    assert {"readOnly", "mutating"} <= kinds


@contract
async def test_control_plane_counters_move_forward_as_the_cluster_is_used(
    provider_harness: Harness,
) -> None:
    h = provider_harness
    first = await h.provider.control_plane_metrics()
    node = (await h.provider.list_nodes())[0].name
    await h.provider.create_instance(
        InstanceSpec(
            namespace=h.namespace,
            app="web",
            instance_id=0,
            version="v1",
            image=h.images[0],
            node=node,
            resources=ResourceVector(cpu=100, memory=64),
            ports=(PortSpec(8080, "http"),),
            labels={"gaia.io/app": "web"},
        )
    )
    for _ in range(5):
        await h.provider.list_instances(namespace=h.namespace)

    async def counted() -> bool:
        later = await h.provider.control_plane_metrics()
        return one(later, "gaia_apiserver_requests_total") > one(
            first, "gaia_apiserver_requests_total"
        )

    await h.settle(counted, timeout_s=30)
    second = await h.provider.control_plane_metrics()
    for counter in ("gaia_etcd_requests_total", "gaia_apiserver_errors_total"):
        assert one(second, counter) >= one(first, counter)
    assert 0 <= one(second, "gaia_etcd_request_latency_seconds") < 5
    assert 0 <= one(second, "gaia_apiserver_request_latency_seconds") < 60
    await h.provider.delete_instance(namespace=h.namespace, name="web-0")
