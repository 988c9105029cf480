"""The metric collector and the catalogue: what is read from each cluster becomes the catalogue's
series, with the right labels and values.

The mapping is tested as pure functions over hand-made provider data; the loop end to end over
sim clusters registered through the API (apps created and run by the app controller, quotas
set), writing into the real embedded store, on both databases.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest

from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.domain.resources import ResourceVector
from gaia.monitor.alerting.builtin_rules import BUILTIN_RULES
from gaia.monitor.metrics import catalogue
from gaia.monitor.metrics.collector import (
    ClusterReading,
    CounterRates,
    DesiredApp,
    MetricCollector,
    QuotaFigures,
    cluster_samples,
    database_samples,
)
from gaia.monitor.metrics.series import Sample
from gaia.monitor.metrics.tsdb import EmbeddedStore
from gaia.platform import Platform
from gaia.providers.kubernetes.control_plane import ApiServerMetrics
from gaia.providers.port import (
    ControlPlaneSample,
    Gpu,
    Instance,
    InstancePhase,
    MetricSample,
    Node,
)
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.paths import REPO

ROOT = REPO
MIB = 1024 * 1024
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


# ---------------------------------------------------------------- the catalogue


def test_catalogue_names_are_unique_prometheus_names_with_known_kinds() -> None:
    names = [m.name for m in catalogue.METRICS]
    assert len(names) == len(set(names))
    for m in catalogue.METRICS:
        assert m.name.startswith("gaia_"), m.name
        assert m.type in catalogue.TYPES and m.source in catalogue.SOURCES, m
        assert m.area in catalogue.AREA_NAMES, m
        # counters end in _total; the GPU card counts (``gaia_node_gpus_total``) are gauges
        # named so before this catalogue existed
        if m.type == catalogue.COUNTER:
            assert m.name.endswith("_total"), m.name
        assert len(set(m.labels)) == len(m.labels) and m.help.endswith("."), m.name
        if m.source in ("provider", "control-plane") and not m.planned:
            assert m.adapters and set(m.adapters) <= set(catalogue.ADAPTERS), m.name
        else:
            assert m.adapters == (), m.name
    assert catalogue.lookup("gaia_instance_cpu_usage_percent") is not None
    assert catalogue.lookup("gaia_nope") is None
    # the talk collects 87 metrics; the catalogue covers at least as many, over all its areas
    assert len(catalogue.collected()) >= 87
    assert {m.area for m in catalogue.METRICS} == set(catalogue.AREA_NAMES)


def test_docs_metrics_md_is_generated_from_the_catalogue() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == catalogue.markdown(), (
        "docs/metrics.md is stale: run python -m gaia.monitor.metrics.catalogue --markdown "
        "> docs/metrics.md"
    )


def test_builtin_alert_rules_watch_catalogue_metrics() -> None:
    for rule in BUILTIN_RULES:
        m = catalogue.lookup(rule.metric)
        assert m is not None and not m.planned, rule.key


# ---------------------------------------------------------------- counters to rates


def test_counter_rates_between_readings_resets_and_forgetting() -> None:
    rates = CounterRates()
    assert rates.per_second(("a",), 100.0, 10.0) is None  # nothing to compare with yet
    assert rates.per_second(("b",), 5.0, 10.0) is None
    rates.end_round()
    assert rates.per_second(("a",), 400.0, 25.0) == 20.0
    rates.end_round()  # "b" was not seen: forgotten
    assert len(rates) == 1
    assert rates.per_second(("a",), 30.0, 40.0) == 2.0  # went back: a new container, from 0
    rates.end_round()
    assert rates.per_second(("a",), 90.0, 40.0) is None  # the same instant: no rate
    rates.end_round()
    assert rates.per_second(("a",), 60.0, 70.0) == 1.0  # against the reading kept at 40 s


# ---------------------------------------------------------------- mapping (pure)


def node(name: str, **kw: Any) -> Node:
    args: dict[str, Any] = {
        "name": name,
        "ready": True,
        "schedulable": True,
        "zone": "z1",
        "labels": {},
        "host_ip": "10.0.0.1",
        "capacity": ResourceVector(cpu=8000, memory=16384, local_disk=100, bandwidth=1000),
        "allocated": ResourceVector(cpu=2000, memory=4096, local_disk=25, bandwidth=100),
        "instance_count": 2,
    }
    args.update(kw)
    return Node(**args)


def instance(name: str, **kw: Any) -> Instance:
    app, _, iid = name.rpartition("-")
    args: dict[str, Any] = {
        "namespace": "alpha",
        "name": name,
        "app": app,
        "instance_id": int(iid),
        "version": "v1",
        "image": "img:v1",
        "node": "n1",
        "phase": InstancePhase.RUNNING,
        "ready": True,
        "resources": ResourceVector(cpu=1000, memory=1024),
        "pod_ip": "10.1.0.7",
    }
    args.update(kw)
    return Instance(**args)


def usage(target: str, kind: str = "instance", at: dt.datetime = T0, **kw: Any) -> MetricSample:
    args: dict[str, Any] = {
        "target": target,
        "kind": kind,
        "at": at,
        "cpu_milli": 500.0,
        "memory_mib": 256.0,
        "namespace": "alpha" if kind == "instance" else "",
    }
    args.update(kw)
    return MetricSample(**args)


def by_series(samples: list[Sample]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for s in samples:
        key = (s.metric, frozenset(s.labels.items()))
        assert key not in out, f"{key} written twice"
        out[key] = s.value
    return out


def value(samples: list[Sample], metric: str, **labels: str) -> float:
    found = [s.value for s in samples if s.metric == metric and labels.items() <= s.labels.items()]
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def test_instance_app_node_and_cluster_figures_from_one_reading() -> None:
    gpu_node = node(
        "n2",
        capacity=ResourceVector(cpu=8000, memory=16384, gpu=200, gpu_memory=2 * 16384),
        allocated=ResourceVector(cpu=1000, memory=1024, gpu=150, gpu_memory=16384 + 8192),
        gpus=(Gpu(0, "T4", 16384), Gpu(1, "T4", 16384)),
        gpu_used={0: 100, 1: 50},
        gpu_memory_used={0: 16384, 1: 8192},
    )
    reading = ClusterReading(
        cluster="c1",
        adapter="sim",
        nodes=[node("n1"), gpu_node],
        instances=[
            instance("web-0"),
            instance("web-1", resources=ResourceVector(memory=512)),  # no CPU request
            instance("web-2", phase=InstancePhase.FAILED, ready=False, restarts=3),
            instance("ocr-0", node="n2", resources=ResourceVector(cpu=1000, gpu=100), gpu_ids=(0,)),
        ],
        usage=[
            usage("web-0", cpu_milli=800.0, memory_mib=512.0),
            usage("web-1", cpu_milli=50.0, memory_mib=128.0),
            usage("ocr-0", gpu_util=0.75, gpu_memory_mib=4096.0),
            usage("stray-0"),  # not listed: not the platform's
            usage("n1", "node", cpu_milli=4000.0, memory_mib=4096.0, disk_used_gib=10.0),
            usage("n2", "node", cpu_milli=2000.0, memory_mib=8192.0, gpu_util=0.5),
        ],
        control_plane=[ControlPlaneSample("gaia_etcd_objects", {"resource": "pods"}, 4.0)],
    )
    out = cluster_samples(
        reading,
        apps=[DesiredApp("alpha", "web", 4), DesiredApp("alpha", "idle", 0)],
        rates=CounterRates(),
        at=1000.0,
    )
    series = by_series(out)  # no series twice
    assert all(s.at == 1000.0 for s in out)
    assert all(catalogue.lookup(s.metric) for s in out)
    web0 = {
        "cluster": "c1",
        "business": "alpha",
        "app": "web",
        "instance": "web-0",
        "node": "n1",
        "version": "v1",
    }
    assert series[("gaia_instance_cpu_usage_millicores", frozenset(web0.items()))] == 800.0
    assert value(out, "gaia_instance_cpu_usage_percent", instance="web-0") == 80.0
    assert value(out, "gaia_instance_cpu_usage_percent", instance="web-1") == 50.0  # of 100 m
    assert value(out, "gaia_instance_memory_usage_percent", instance="web-1") == 25.0
    assert value(out, "gaia_instance_memory_usage_bytes", instance="web-0") == 512 * MIB
    assert value(out, "gaia_instance_ready", instance="web-2") == 0.0
    assert value(out, "gaia_instance_restarts_total", instance="web-2") == 3.0
    assert value(out, "gaia_instance_gpu_utilization_percent", instance="ocr-0") == 75.0
    assert value(out, "gaia_instance_gpus_allocated", instance="ocr-0") == 1.0
    assert not [s for s in out if s.labels.get("instance") == "stray-0"]
    assert not [s for s in out if "gpu" in s.metric and s.labels.get("instance") == "web-0"]
    # no series carries a pod IP or anything unbounded
    assert not [s for s in out if "10.1.0.7" in s.labels.values()]

    assert value(out, "gaia_app_cpu_usage_percent", app="web") == (80.0 + 50.0) / 2
    assert value(out, "gaia_app_memory_usage_percent", app="web") == (50.0 + 25.0) / 2
    assert value(out, "gaia_app_instances_desired", app="web") == 4.0
    assert value(out, "gaia_app_instances_running", app="web") == 2.0
    assert value(out, "gaia_app_instances_failed", app="web") == 1.0
    assert value(out, "gaia_app_available_percent", app="web") == 50.0
    assert value(out, "gaia_app_instances_desired", app="idle") == 0.0  # known, stopped
    assert value(out, "gaia_app_instances_running", app="idle") == 0.0
    assert not [
        s for s in out if s.metric == "gaia_app_available_percent" and s.labels["app"] == "idle"
    ]
    assert value(out, "gaia_business_instances", business="alpha") == 4.0
    assert value(out, "gaia_business_cpu_usage_millicores", business="alpha") == 1350.0

    assert value(out, "gaia_node_cpu_allocated_percent", node="n1") == 25.0
    assert value(out, "gaia_node_memory_allocated_percent", node="n1") == 25.0
    assert value(out, "gaia_node_cpu_usage_percent", node="n1") == 50.0
    assert value(out, "gaia_node_disk_usage_percent", node="n1") == 10.0
    assert value(out, "gaia_node_bandwidth_allocated_percent", node="n1") == 10.0
    assert value(out, "gaia_node_gpus_allocated", node="n2") == 1.5
    assert value(out, "gaia_node_gpu_utilization_percent", node="n2") == 50.0
    assert value(out, "gaia_gpu_allocated_percent", node="n2", gpu="1", model="T4") == 50.0
    assert not [s for s in out if s.metric == "gaia_node_gpus_total" and s.labels["node"] == "n1"]

    assert value(out, "gaia_cluster_nodes") == 2.0
    assert value(out, "gaia_cluster_cpu_allocated_percent") == 100 * 3000 / 16000
    assert value(out, "gaia_cluster_cpu_usage_percent") == 100 * 6000 / 16000
    assert value(out, "gaia_cluster_gpus_total") == 2.0
    assert value(out, "gaia_cluster_gpu_allocated_percent") == 75.0
    assert value(out, "gaia_cluster_instances", phase="Running") == 3.0
    assert value(out, "gaia_cluster_instances", phase="Failed") == 1.0
    assert value(out, "gaia_cluster_instances", phase="Pulling") == 0.0  # zeros are written
    assert value(out, "gaia_etcd_objects", cluster="c1", resource="pods") == 4.0


def test_network_rates_come_from_two_readings_and_vanished_series_are_forgotten() -> None:
    rates = CounterRates()

    def reading(at: dt.datetime, rx: float, names: list[str]) -> ClusterReading:
        return ClusterReading(
            cluster="c1",
            adapter="sim",
            nodes=[node("n1")],
            instances=[instance(n) for n in names],
            usage=[
                usage(n, at=at, network_rx_bytes_total=rx, network_tx_bytes_total=rx / 2)
                for n in names
            ]
            + [usage("n1", "node", at=at, network_rx_bytes_total=3 * rx)],
        )

    first = cluster_samples(reading(T0, 1000.0, ["web-0", "web-1"]), apps=[], rates=rates, at=1.0)
    assert not [s for s in first if "per_second" in s.metric]
    later = T0 + dt.timedelta(seconds=20)
    second = cluster_samples(reading(later, 5000.0, ["web-0"]), apps=[], rates=rates, at=2.0)
    assert (
        value(second, "gaia_instance_network_receive_bytes_per_second", instance="web-0") == 200.0
    )
    assert (
        value(second, "gaia_instance_network_transmit_bytes_per_second", instance="web-0") == 100.0
    )
    assert value(second, "gaia_app_network_receive_bytes_per_second", app="web") == 200.0
    assert value(second, "gaia_node_network_receive_bytes_per_second", node="n1") == 600.0
    # web-1 vanished: its counters are gone, and only web-0's and the node's are kept
    assert len(rates) == 2 + 2


def test_kubernetes_clusters_get_no_figures_the_kubelet_cannot_give() -> None:
    reading = ClusterReading(
        cluster="k1",
        adapter="kubernetes",
        nodes=[node("n1", gpus=(Gpu(0, "T4", 16384),), gpu_used={0: 100})],
        instances=[instance("ocr-0", gpu_ids=(0,), resources=ResourceVector(gpu=100))],
        usage=[usage("ocr-0"), usage("n1", "node")],
    )
    rates = CounterRates()
    cluster_samples(reading, apps=[], rates=rates, at=1.0)
    out = cluster_samples(reading, apps=[], rates=rates, at=2.0)
    written = {s.metric for s in out}
    sim_only = {m.name for m in catalogue.METRICS if m.adapters == catalogue.SIM_ONLY}
    assert not written & sim_only
    assert {"gaia_instance_cpu_usage_percent", "gaia_node_gpus_allocated"} <= written


def test_quota_figures_in_api_units_and_apps_per_business() -> None:
    out = database_samples(
        [
            QuotaFigures(
                business="alpha",
                cluster="c1",
                hard=ResourceVector(cpu=10_000, memory=10240, gpu=400),
                used=ResourceVector(cpu=2_500, memory=1024, gpu=150, bandwidth=10),
            )
        ],
        {"c1": [DesiredApp("alpha", "web", 3), DesiredApp("alpha", "ocr", 1)]},
        at=5.0,
    )
    assert value(out, "gaia_business_quota_hard", resource="cpu") == 10.0  # cores
    assert value(out, "gaia_business_quota_used", resource="gpu") == 1.5  # cards
    assert value(out, "gaia_business_quota_used_percent", resource="cpu") == 25.0
    assert value(out, "gaia_business_quota_used_percent", resource="gpu") == 37.5
    assert value(out, "gaia_business_quota_used", resource="bandwidth") == 10.0
    assert not [
        s for s in out if s.metric.endswith("_percent") and s.labels["resource"] == "bandwidth"
    ]
    assert not [s for s in out if s.labels.get("resource") == "cloud_disk"]  # neither set nor used
    assert value(out, "gaia_business_apps", business="alpha", cluster="c1") == 2.0


# ---------------------------------------------------------------- kube-apiserver's /metrics

# lines as kube-apiserver v1.37.2 writes them (labels abridged where long)
APISERVER_METRICS = """\
# HELP apiserver_resource_objects [ALPHA] Number of stored objects at the time of last check.
# TYPE apiserver_resource_objects gauge
apiserver_resource_objects{{group="",resource="pods"}} {pods}
apiserver_resource_objects{{group="",resource="nodes"}} 3
apiserver_resource_objects{{group="coordination.k8s.io",resource="leases"}} 3
apiserver_resource_objects{{group="",resource="secrets"}} -1
apiserver_storage_size_bytes{{storage_cluster_id="etcd-0"}} 249856
etcd_request_duration_seconds_sum{{group="",operation="create",resource="pods"}} {etcd_sum}
etcd_request_duration_seconds_count{{group="",operation="create",resource="pods"}} {etcd_count}
etcd_request_duration_seconds_bucket{{group="",operation="create",resource="pods",le="0.005"}} 1
apiserver_request_total{{code="200",component="apiserver",resource="nodes",verb="LIST"}} {ok}
apiserver_request_total{{code="503",component="apiserver",resource="pods",verb="GET"}} 2
apiserver_request_duration_seconds_sum{{component="apiserver",resource="nodes",verb="LIST"}} 0.5
apiserver_request_duration_seconds_count{{component="apiserver",resource="nodes",verb="LIST"}} 10
apiserver_request_duration_seconds_sum{{component="apiserver",resource="pods",verb="WATCH"}} 900
apiserver_request_duration_seconds_count{{component="apiserver",resource="pods",verb="WATCH"}} 2
apiserver_current_inflight_requests{{request_kind="mutating"}} 1
apiserver_current_inflight_requests{{request_kind="readOnly"}} 0
apiserver_longrunning_requests{{component="apiserver",resource="pods",verb="WATCH"}} 2
apiserver_longrunning_requests{{component="apiserver",resource="nodes",verb="WATCH"}} 3
process_cpu_seconds_total {cpu}
process_resident_memory_bytes 2.78196224e+08
process_start_time_seconds 1000
"""


def test_kube_apiserver_metrics_become_control_plane_figures() -> None:
    reader = ApiServerMetrics()

    def read(now: float, **figures: float) -> dict[tuple[str, str], float]:
        text = APISERVER_METRICS.format(**figures)
        return {
            (s.name, ",".join(f"{k}={v}" for k, v in s.labels.items())): s.value
            for s in reader.samples(text, now_s=now, etcd_ready=True)
        }

    first = read(1100.0, pods=7, etcd_sum=0.02, etcd_count=5, ok=40, cpu=10.0)
    assert first[("gaia_etcd_up", "")] == 1.0
    assert first[("gaia_etcd_objects", "resource=pods")] == 7
    assert first[("gaia_etcd_objects", "resource=leases.coordination.k8s.io")] == 3
    assert ("gaia_etcd_objects", "resource=secrets") not in first  # -1: could not be counted
    assert first[("gaia_etcd_db_size_bytes", "")] == 249856
    assert first[("gaia_etcd_request_latency_seconds", "")] == pytest.approx(0.004)  # 0.02 / 5
    assert first[("gaia_apiserver_requests_total", "")] == 42
    assert first[("gaia_apiserver_errors_total", "")] == 2
    assert first[("gaia_apiserver_request_latency_seconds", "")] == 0.05  # watches left out
    assert first[("gaia_apiserver_inflight_requests", "kind=mutating")] == 1
    assert first[("gaia_apiserver_watches", "")] == 5
    assert first[("gaia_apiserver_cpu_usage_millicores", "")] == 100.0  # 10 s over 100 s
    # the next reading: means over what happened in between, not since the start
    second = read(1120.0, pods=9, etcd_sum=1.02, etcd_count=7, ok=50, cpu=12.0)
    assert second[("gaia_etcd_request_latency_seconds", "")] == pytest.approx(0.5)  # 1 s / 2
    assert second[("gaia_apiserver_cpu_usage_millicores", "")] == pytest.approx(100.0)
    third = read(1135.0, pods=9, etcd_sum=1.02, etcd_count=7, ok=50, cpu=12.0)
    assert third[("gaia_etcd_request_latency_seconds", "")] == 0.0  # no request in between
    for name, _ in first:
        assert catalogue.lookup(name) is not None, name
    # the names before Kubernetes 1.34 are read too
    older = (
        APISERVER_METRICS.format(pods=7, etcd_sum=0, etcd_count=0, ok=1, cpu=1)
        .replace("apiserver_resource_objects", "apiserver_storage_objects")
        .replace("apiserver_storage_size_bytes", "etcd_db_total_size_in_bytes")
    )
    figures = {
        (s.name, tuple(s.labels.values())): s.value
        for s in reader.samples(older, now_s=2000.0, etcd_ready=False)
    }
    assert figures[("gaia_etcd_objects", ("pods",))] == 7
    assert figures[("gaia_etcd_db_size_bytes", ())] == 249856
    assert figures[("gaia_etcd_up", ())] == 0.0


# ---------------------------------------------------------------- the loop, end to end


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


def collector(platform: Platform, store: EmbeddedStore) -> MetricCollector:
    return MetricCollector(
        db=platform.db,
        providers=platform.providers,
        store=store,
        clock=platform.clock,
        interval=15.0,
    )


async def latest(store: EmbeddedStore, metric: str, at: float, **labels: str) -> float:
    found = await store.latest(metric, labels, at=at)
    assert len(found) == 1, (metric, labels, [s.labels for s in found])
    point = found[0].last
    assert point is not None
    return point[1]


def test_collector_writes_the_catalogue_series_of_a_sim_cluster(h: AppsHarness) -> None:
    platform = h.platform
    local = {"cpu": 1, "memory": 1024, "gpu": 0, "local_disk": 5, "bandwidth": 10}
    h.post(
        f"{BIZ}/apps",
        {
            "name": "web",
            "cluster": "sim-1",
            "templates": [template("v1", "r.local/a/web:v1", resources=local)],
            "replicas": 3,
        },
        status=201,
    )
    h.post(
        f"{BIZ}/apps",
        {
            "name": "ocr",
            "cluster": "sim-1",
            "templates": [template("v1", "r.local/a/ocr:v1", gpu=1)],
            "replicas": 1,
        },
        status=201,
    )
    h.settle(lambda: h.ready("web", 3)() and h.ready("ocr", 1)())
    asyncio.run(
        ClusterHealthLoop(
            db=platform.db, providers=platform.providers, interval=1, timeout=1
        ).run_once()
    )
    sim = h.sim("sim-1")
    sim.set_load("alpha", "web", cpu_percent=60)  # a known CPU figure
    store = EmbeddedStore(clock=platform.clock)
    loop = collector(platform, store)

    first_at = h.clock.now()
    asyncio.run(loop.run_once())
    before = {s.target: s for s in asyncio.run(sim.metrics())}
    h.clock.step(15)
    second_at = h.clock.now()
    asyncio.run(loop.run_once())
    after = {s.target: s for s in asyncio.run(sim.metrics())}  # the same instant: same figures
    assert loop.last.failed == [] and loop.last.clusters == 1
    t = second_at.timestamp()

    placed = {i.name: i.node for i in asyncio.run(sim.list_instances(namespace="alpha"))}

    async def check() -> None:
        web0 = await store.latest("gaia_instance_cpu_usage_millicores", {"instance": "web-0"}, at=t)
        assert web0[0].labels == {
            "cluster": "sim-1",
            "business": "alpha",
            "app": "web",
            "instance": "web-0",
            "node": placed["web-0"],
            "version": "v1",
        }
        assert web0[0].last == (t, after["web-0"].cpu_milli)
        percents = [after[f"web-{i}"].cpu_milli / 10 for i in range(3)]
        assert all(59 <= p <= 61 for p in percents)
        app_cpu = await latest(store, "gaia_app_cpu_usage_percent", t, app="web")
        assert app_cpu == pytest.approx(sum(percents) / 3)
        rx = await latest(
            store, "gaia_instance_network_receive_bytes_per_second", t, instance="web-1"
        )
        expected = (
            after["web-1"].network_rx_bytes_total - before["web-1"].network_rx_bytes_total
        ) / 15
        assert rx == pytest.approx(expected)
        assert first_at.timestamp() == t - 15
        # the node's allocation is the requests bound to it (all from the sim's own view)
        for n in await sim.list_nodes():
            allocated = await latest(store, "gaia_node_cpu_allocated_percent", t, node=n.name)
            assert allocated == pytest.approx(100 * n.allocated.cpu / n.capacity.cpu)
            assert await latest(store, "gaia_node_instances", t, node=n.name) == n.instance_count
        # alpha holds 4 cores of its 10: 3 web + 1 ocr (quota figures from the database)
        assert (
            await latest(
                store, "gaia_business_quota_used_percent", t, business="alpha", resource="cpu"
            )
            == 40.0
        )
        assert (
            await latest(store, "gaia_business_quota_hard", t, business="beta", resource="gpu")
            == 4.0
        )
        assert await latest(store, "gaia_app_instances_desired", t, app="web") == 3.0
        assert await latest(store, "gaia_app_available_percent", t, app="ocr") == 100.0
        assert await latest(
            store, "gaia_instance_gpu_utilization_percent", t, instance="ocr-0"
        ) == pytest.approx(100 * after["ocr-0"].gpu_util)
        assert await latest(store, "gaia_cluster_up", t, cluster="sim-1") == 1.0
        assert await latest(store, "gaia_cluster_collect_success", t, cluster="sim-1") == 1.0
        assert await latest(store, "gaia_etcd_objects", t, cluster="sim-1", resource="pods") == 4.0
        assert await latest(store, "gaia_cluster_instances", t, phase="Running") == 4.0

    asyncio.run(check())
    written = set(store.metric_names())
    assert written <= {m.name for m in catalogue.METRICS}
    # every collected figure that a sim cluster can yield was written by this pass
    expected_names = {
        m.name
        for m in catalogue.collected()
        if m.source in ("provider", "control-plane", "database", "collector")
        and (not m.adapters or "sim" in m.adapters)
    }
    assert expected_names - written == set()
    # what only a kubernetes cluster yields is marked so explicitly (none today)
    assert all(
        m.kubernetes_only for m in catalogue.collected() if m.adapters and "sim" not in m.adapters
    )


def test_a_cluster_that_fails_does_not_stop_the_others_and_is_logged_once(
    h: AppsHarness, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    platform = h.platform
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "sim-2", "kind": "sim", "sim": {"nodes": 2, "gpus": 0}},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    broken = h.sim("sim-2")
    broken.reachable = False
    store = EmbeddedStore(clock=platform.clock)
    loop = collector(platform, store)
    caplog.set_level(logging.INFO, logger="gaia.monitor.metrics.collector")
    for _ in range(3):
        h.clock.step(15)
        asyncio.run(loop.run_once())
    t = h.clock.now().timestamp()
    assert loop.last.failed == ["sim-2"]

    async def figures() -> tuple[float, float, float, int]:
        return (
            await latest(store, "gaia_cluster_collect_success", t, cluster="sim-2"),
            await latest(store, "gaia_cluster_collect_success", t, cluster="sim-1"),
            await latest(store, "gaia_cluster_nodes", t, cluster="sim-1"),
            len(await store.latest("gaia_cluster_nodes", {"cluster": "sim-2"}, at=t)),
        )

    assert asyncio.run(figures()) == (0.0, 1.0, 4.0, 0)
    warned = [r for r in caplog.records if "sim-2" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "cut off" in warned[0].getMessage()

    broken.reachable = True
    h.clock.step(15)
    asyncio.run(loop.run_once())
    assert loop.last.failed == []
    again = [r for r in caplog.records if "sim-2" in r.getMessage()]
    assert len(again) == 2 and "readable again" in again[1].getMessage()


def test_an_apps_load_raised_through_the_fault_api_shows_in_its_figures_then_drops(
    h: AppsHarness, world: World
) -> None:
    platform = h.platform
    h.post(
        f"{BIZ}/apps",
        {"name": "web", "cluster": "sim-1", "templates": [template("v1", "r.local/a/web:v1")]},
        status=201,
    )
    h.settle(h.ready("web", 1))
    store = EmbeddedStore(clock=platform.clock)
    loop = collector(platform, store)

    def app_cpu() -> float:
        h.clock.step(15)
        asyncio.run(loop.run_once())
        return asyncio.run(
            latest(store, "gaia_app_cpu_usage_percent", h.clock.now().timestamp(), app="web")
        )

    assert app_cpu() < 60
    faults = "/api/v1/clusters/sim-1/sim/faults"
    raise_load = {"kind": "load", "namespace": "alpha", "app": "web", "cpu_percent": 95}
    r = world.client.post(faults, json=raise_load, headers=world.admin)
    assert r.status_code == 202, r.text
    assert 94 <= app_cpu() <= 96
    r = world.client.post(
        faults, json={"kind": "load", "namespace": "alpha", "app": "web"}, headers=world.admin
    )
    assert r.status_code == 422 and "cpu_percent" in r.text
    r = world.client.post(faults, json={**raise_load, "cpu_percent": 120}, headers=world.admin)
    assert r.status_code == 422
    r = world.client.post(
        faults, json={"kind": "clear_load", "namespace": "alpha", "app": "web"}, headers=world.admin
    )
    assert r.status_code == 202, r.text
    assert app_cpu() < 60
