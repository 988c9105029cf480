"""The metric collector: every pass, read each cluster and the platform's database, write samples.

What flows in, per registered cluster (all clusters concurrently, at most ``concurrency`` at a
time, each bounded by ``timeout``): the provider's ``list_nodes``, ``list_instances``,
``metrics`` (usage) and ``control_plane_metrics``; and from the database, once per pass: the
clusters' health, the apps' desired instance counts, the businesses, the quotas. What flows
out: ``Sample``s named as ``gaia.monitor.metrics.catalogue`` lists them, all stamped with the pass's
instant, in one ``MetricStore.write``.

The shape follows the controllers: the mapping from what was read to samples is a set of pure
functions (``cluster_samples``, ``cluster_status_samples``, ``database_samples``), tested as
such; ``MetricCollector`` only observes, calls them and writes.

Decisions worth knowing:

- **Rates.** Providers report network bytes as counters; ``CounterRates`` keeps each series'
  previous reading and gives bytes per second between two collections (the provider's own
  sample times, not the pass's). A counter that went back (a new container) counts from zero.
  Series that were not seen in a pass are forgotten, so state does not grow with churn.
- **Partial answers.** Nodes and instances are required: without them a cluster's pass fails
  (``gaia_cluster_collect_success`` 0) and only the database figures are written for it. Usage
  and the control plane are optional: a kubelet proxy or ``/metrics`` that is forbidden costs
  those series, not the rest. A failure is logged when it starts and when it ends, not every
  pass (a dead cluster would otherwise fill the log every 15 s).
- **What an adapter cannot know is not written.** The kubelet's resource endpoint has no network,
  disk or GPU figures, and a ``kubernetes`` provider reports zeros there; the catalogue marks
  those ``sim``-only and the collector writes them only for the adapters listed.
- **Labels** come from data the platform manages: cluster, business (the namespace), app,
  instance (``<app>-<id>``), node, zone, version; never pod IPs or uids.
- **Cost.** The mapping runs in a worker thread (it is pure Python over up to tens of thousands
  of instances; the API's event loop keeps answering meanwhile). Each instance's label dict is
  built once and shared by its samples.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import select

from gaia.clock import Clock
from gaia.domain.resources import DIMENSION_NAMES, ResourceVector, to_api_amount
from gaia.loop import LoopService
from gaia.monitor.metrics import catalogue
from gaia.monitor.metrics.series import MetricStore, Sample
from gaia.providers.port import (
    ControlPlaneSample,
    HealthState,
    Instance,
    InstancePhase,
    MetricSample,
    Node,
)
from gaia.providers.registry import ProviderRegistry
from gaia.store.businesses import names_by_id
from gaia.store.database import Database
from gaia.store.models import App, Cluster, Quota

log = logging.getLogger(__name__)
T = TypeVar("T")

MIB = 1024 * 1024
GIB = 1024 * MIB
# what a best-effort instance's usage is measured against (as the sim does)
NOMINAL_CPU_MILLI = 100
NOMINAL_MEMORY_MIB = 256
_PENDING = (InstancePhase.SCHEDULED, InstancePhase.PULLING, InstancePhase.CREATED)


@functools.cache
def allowed_metrics(adapter: str) -> frozenset[str]:
    """The catalogue names a cluster of provider kind ``adapter`` gets written."""
    return frozenset(
        m.name
        for m in catalogue.collected()
        if not m.adapters or adapter in m.adapters or adapter not in catalogue.ADAPTERS
    )


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class ClusterReading:
    """What one pass read from one cluster's provider. ``usage`` and ``control_plane`` are None
    when they could not be read."""

    cluster: str
    adapter: str  # the provider's kind
    nodes: Sequence[Node]
    instances: Sequence[Instance]
    usage: Sequence[MetricSample] | None = None
    control_plane: Sequence[ControlPlaneSample] | None = None


@dataclass(frozen=True, slots=True)
class DesiredApp:
    business: str
    app: str
    desired: int  # 0 while the app is stopped


@dataclass(frozen=True, slots=True)
class QuotaFigures:
    business: str
    cluster: str
    hard: ResourceVector
    used: ResourceVector


@dataclass(frozen=True, slots=True)
class ClusterRow:
    id: int
    name: str
    healthy: bool
    row: Cluster  # what the provider registry builds the provider from


@dataclass(frozen=True, slots=True)
class DatabaseView:
    clusters: Sequence[ClusterRow]
    apps: Mapping[str, Sequence[DesiredApp]]  # cluster name -> its apps
    quotas: Sequence[QuotaFigures]


# ---------------------------------------------------------------- counters to rates


class CounterRates:
    """Per-second rates of counters between two readings, per series key.

    ``per_second`` answers from the readings of the previous round and records the current one;
    ``end_round`` makes this round's readings the previous ones, forgetting series not seen.
    """

    __slots__ = ("_current", "_previous")

    def __init__(self) -> None:
        self._previous: dict[tuple[str, ...], tuple[float, float]] = {}
        self._current: dict[tuple[str, ...], tuple[float, float]] = {}

    def per_second(self, key: tuple[str, ...], value: float, at: float) -> float | None:
        before = self._previous.get(key)
        if before is None:
            self._current[key] = (value, at)
            return None
        last_value, last_at = before
        if at <= last_at:
            self._current[key] = before  # the same reading again: nothing to measure yet
            return None
        self._current[key] = (value, at)
        # a counter that went back belongs to a new container: it counted up from zero
        increase = value - last_value if value >= last_value else value
        return increase / (at - last_at)

    def end_round(self) -> None:
        self._previous, self._current = self._current, {}

    def __len__(self) -> int:
        return len(self._previous)


# ---------------------------------------------------------------- mapping (pure)


class _Out:
    """Collects samples at one instant, dropping names the adapter does not yield."""

    __slots__ = ("allowed", "at", "items")

    def __init__(self, at: float, allowed: frozenset[str]) -> None:
        self.items: list[Sample] = []
        self.at = at
        self.allowed = allowed

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if name in self.allowed:
            self.items.append(Sample(name, labels, float(value), self.at))


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole


@dataclass(slots=True)
class _AppTally:
    instances: int = 0
    running: int = 0
    ready: int = 0
    failed: int = 0
    pending: int = 0
    measured: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    cpu_milli: float = 0.0
    memory_mib: float = 0.0
    rx: float | None = None
    tx: float | None = None


def _add_rate(total: float | None, rate: float | None) -> float | None:
    if rate is None:
        return total
    return rate if total is None else total + rate


def cluster_samples(
    reading: ClusterReading,
    *,
    apps: Sequence[DesiredApp],
    rates: CounterRates,
    at: float,
) -> list[Sample]:
    """The samples of one cluster's reading (everything but the status figures, see
    ``cluster_status_samples``). ``rates`` carries the cluster's counters from pass to pass;
    this call ends its round."""
    out = _Out(at, allowed_metrics(reading.adapter))
    cluster = reading.cluster
    add = out.add

    # ---- instances: state from the list, usage from the samples
    labels_of: dict[tuple[str, str], dict[str, str]] = {}
    by_key: dict[tuple[str, str], Instance] = {}
    tallies: dict[tuple[str, str], _AppTally] = defaultdict(_AppTally)
    phases: dict[str, int] = dict.fromkeys((p.value for p in InstancePhase), 0)
    business_instances: dict[str, int] = defaultdict(int)
    for inst in reading.instances:
        key = (inst.namespace, inst.name)
        labels = {
            "cluster": cluster,
            "business": inst.namespace,
            "app": inst.app,
            "instance": inst.name,
            "node": inst.node,
            "version": inst.version,
        }
        labels_of[key] = labels
        by_key[key] = inst
        running = inst.phase == InstancePhase.RUNNING
        add("gaia_instance_ready", labels, 1.0 if inst.ready else 0.0)
        add("gaia_instance_running", labels, 1.0 if running else 0.0)
        add("gaia_instance_restarts_total", labels, inst.restarts)
        if inst.resources.gpu:
            add("gaia_instance_gpus_allocated", labels, inst.resources.gpu / 100)
        phases[inst.phase.value] = phases.get(inst.phase.value, 0) + 1
        business_instances[inst.namespace] += 1
        tally = tallies[(inst.namespace, inst.app)]
        tally.instances += 1
        tally.running += running
        tally.ready += inst.ready
        tally.failed += inst.phase == InstancePhase.FAILED
        tally.pending += inst.phase in _PENDING

    usage = reading.usage or ()
    node_usage: dict[str, MetricSample] = {}
    business_cpu: dict[str, float] = defaultdict(float)
    business_memory: dict[str, float] = defaultdict(float)
    for s in usage:
        if s.kind == "node":
            node_usage[s.target] = s
            continue
        key = (s.namespace, s.target)
        inst_or_none = by_key.get(key)
        if inst_or_none is None:
            continue  # not one of the platform's instances (or gone since the list)
        inst = inst_or_none
        labels = labels_of[key]
        request = inst.resources
        sampled_at = s.at.timestamp()
        cpu_percent = _percent(s.cpu_milli, request.cpu or NOMINAL_CPU_MILLI)
        memory_percent = _percent(s.memory_mib, request.memory or NOMINAL_MEMORY_MIB)
        add("gaia_instance_cpu_usage_millicores", labels, s.cpu_milli)
        add("gaia_instance_cpu_usage_percent", labels, cpu_percent)
        add("gaia_instance_memory_usage_bytes", labels, s.memory_mib * MIB)
        add("gaia_instance_memory_usage_percent", labels, memory_percent)
        add("gaia_instance_disk_usage_bytes", labels, s.disk_used_gib * GIB)
        rx = rates.per_second(("i", *key, "rx"), s.network_rx_bytes_total, sampled_at)
        tx = rates.per_second(("i", *key, "tx"), s.network_tx_bytes_total, sampled_at)
        if rx is not None:
            add("gaia_instance_network_receive_bytes_per_second", labels, rx)
        if tx is not None:
            add("gaia_instance_network_transmit_bytes_per_second", labels, tx)
        if inst.gpu_ids:
            add("gaia_instance_gpu_utilization_percent", labels, 100.0 * s.gpu_util)
            add("gaia_instance_gpu_memory_usage_bytes", labels, s.gpu_memory_mib * MIB)
        tally = tallies[(inst.namespace, inst.app)]
        tally.measured += 1
        tally.cpu_percent += cpu_percent
        tally.memory_percent += memory_percent
        tally.cpu_milli += s.cpu_milli
        tally.memory_mib += s.memory_mib
        tally.rx = _add_rate(tally.rx, rx)
        tally.tx = _add_rate(tally.tx, tx)
        business_cpu[inst.namespace] += s.cpu_milli
        business_memory[inst.namespace] += s.memory_mib

    # ---- apps: every app the database knows in this cluster, and any other the cluster runs
    desired = {(a.business, a.app): a.desired for a in apps}
    for key in sorted(set(tallies) | set(desired)):
        business, app = key
        labels = {"cluster": cluster, "business": business, "app": app}
        tally = tallies.get(key) or _AppTally()
        add("gaia_app_instances_running", labels, tally.running)
        add("gaia_app_instances_ready", labels, tally.ready)
        add("gaia_app_instances_failed", labels, tally.failed)
        add("gaia_app_instances_pending", labels, tally.pending)
        wanted = desired.get(key)
        if wanted is not None:
            add("gaia_app_instances_desired", labels, wanted)
            if wanted > 0:
                add("gaia_app_available_percent", labels, _percent(tally.ready, wanted))
        if tally.measured:
            add("gaia_app_cpu_usage_percent", labels, tally.cpu_percent / tally.measured)
            add("gaia_app_memory_usage_percent", labels, tally.memory_percent / tally.measured)
            add("gaia_app_cpu_usage_millicores", labels, tally.cpu_milli)
            add("gaia_app_memory_usage_bytes", labels, tally.memory_mib * MIB)
        if tally.rx is not None:
            add("gaia_app_network_receive_bytes_per_second", labels, tally.rx)
        if tally.tx is not None:
            add("gaia_app_network_transmit_bytes_per_second", labels, tally.tx)

    # ---- businesses
    for business in sorted(set(business_instances) | {a.business for a in apps}):
        labels = {"business": business, "cluster": cluster}
        add("gaia_business_instances", labels, business_instances.get(business, 0))
        add("gaia_business_cpu_usage_millicores", labels, business_cpu.get(business, 0.0))
        add("gaia_business_memory_usage_bytes", labels, business_memory.get(business, 0.0) * MIB)

    # ---- nodes, and the cluster's totals over them
    cluster_labels = {"cluster": cluster}
    total = _ClusterTally()
    for node in reading.nodes:
        _node_samples(node, node_usage.get(node.name), cluster, out, rates, total)
    add("gaia_cluster_nodes", cluster_labels, len(reading.nodes))
    add("gaia_cluster_nodes_ready", cluster_labels, total.ready)
    add("gaia_cluster_nodes_schedulable", cluster_labels, total.schedulable)
    add("gaia_cluster_cpu_capacity_millicores", cluster_labels, total.cpu)
    add("gaia_cluster_memory_capacity_bytes", cluster_labels, total.memory * MIB)
    add("gaia_cluster_disk_capacity_bytes", cluster_labels, total.disk * GIB)
    if total.cpu:
        add(
            "gaia_cluster_cpu_allocated_percent",
            cluster_labels,
            _percent(total.cpu_alloc, total.cpu),
        )
    if total.memory:
        add(
            "gaia_cluster_memory_allocated_percent",
            cluster_labels,
            _percent(total.memory_alloc, total.memory),
        )
    if total.measured_cpu:
        add(
            "gaia_cluster_cpu_usage_percent",
            cluster_labels,
            _percent(total.cpu_used, total.measured_cpu),
        )
    if total.measured_memory:
        add(
            "gaia_cluster_memory_usage_percent",
            cluster_labels,
            _percent(total.memory_used, total.measured_memory),
        )
    if total.measured_disk:
        add(
            "gaia_cluster_disk_usage_percent",
            cluster_labels,
            _percent(total.disk_used, total.measured_disk),
        )
    add("gaia_cluster_gpus_total", cluster_labels, total.gpus)
    add("gaia_cluster_gpus_allocated", cluster_labels, total.gpu_hundredths / 100)
    if total.gpus:
        add(
            "gaia_cluster_gpu_allocated_percent",
            cluster_labels,
            _percent(total.gpu_hundredths / 100, total.gpus),
        )
    if total.measured_gpus:
        add(
            "gaia_cluster_gpu_utilization_percent",
            cluster_labels,
            100.0 * total.gpu_util_cards / total.measured_gpus,
        )
    for phase, count in phases.items():
        add("gaia_cluster_instances", {"cluster": cluster, "phase": phase}, count)

    # ---- control plane
    for cp in reading.control_plane or ():
        add(cp.name, {"cluster": cluster, **cp.labels}, cp.value)

    rates.end_round()
    return out.items


@dataclass(slots=True)
class _ClusterTally:
    ready: int = 0
    schedulable: int = 0
    cpu: int = 0
    memory: int = 0
    disk: int = 0
    cpu_alloc: int = 0
    memory_alloc: int = 0
    measured_cpu: int = 0  # capacity of the nodes that reported usage
    measured_memory: int = 0
    measured_disk: int = 0
    cpu_used: float = 0.0
    memory_used: float = 0.0
    disk_used: float = 0.0
    gpus: int = 0
    gpu_hundredths: int = 0
    measured_gpus: int = 0
    gpu_util_cards: float = 0.0


def _node_samples(
    node: Node,
    used: MetricSample | None,
    cluster: str,
    out: _Out,
    rates: CounterRates,
    total: _ClusterTally,
) -> None:
    add = out.add
    labels = {"cluster": cluster, "node": node.name, "zone": node.zone}
    cap, alloc = node.capacity, node.allocated
    add("gaia_node_ready", labels, 1.0 if node.ready else 0.0)
    add("gaia_node_schedulable", labels, 1.0 if node.schedulable else 0.0)
    add("gaia_node_instances", labels, node.instance_count)
    add("gaia_node_cpu_capacity_millicores", labels, cap.cpu)
    add("gaia_node_memory_capacity_bytes", labels, cap.memory * MIB)
    add("gaia_node_disk_capacity_bytes", labels, cap.local_disk * GIB)
    if cap.cpu:
        add("gaia_node_cpu_allocated_percent", labels, _percent(alloc.cpu, cap.cpu))
    if cap.memory:
        add("gaia_node_memory_allocated_percent", labels, _percent(alloc.memory, cap.memory))
    if cap.local_disk:
        add("gaia_node_disk_allocated_percent", labels, _percent(alloc.local_disk, cap.local_disk))
    if cap.bandwidth:
        add(
            "gaia_node_bandwidth_allocated_percent",
            labels,
            _percent(alloc.bandwidth, cap.bandwidth),
        )
    total.ready += node.ready
    total.schedulable += node.ready and node.schedulable
    total.cpu += cap.cpu
    total.memory += cap.memory
    total.disk += cap.local_disk
    total.cpu_alloc += alloc.cpu
    total.memory_alloc += alloc.memory

    cards = len(node.gpus)
    if cards:
        held = sum(node.gpu_used.values())
        add("gaia_node_gpus_total", labels, cards)
        add("gaia_node_gpus_allocated", labels, held / 100)
        add("gaia_node_gpu_memory_total_bytes", labels, sum(g.memory_mib for g in node.gpus) * MIB)
        add(
            "gaia_node_gpu_memory_allocated_bytes",
            labels,
            sum(node.gpu_memory_used.values()) * MIB,
        )
        for gpu in node.gpus:
            add(
                "gaia_gpu_allocated_percent",
                {"cluster": cluster, "node": node.name, "gpu": str(gpu.index), "model": gpu.model},
                node.gpu_used.get(gpu.index, 0),  # hundredths of a card are percent
            )
        total.gpus += cards
        total.gpu_hundredths += held

    if used is None:
        return
    sampled_at = used.at.timestamp()
    add("gaia_node_cpu_usage_millicores", labels, used.cpu_milli)
    add("gaia_node_memory_usage_bytes", labels, used.memory_mib * MIB)
    add("gaia_node_disk_usage_bytes", labels, used.disk_used_gib * GIB)
    if cap.cpu:
        add("gaia_node_cpu_usage_percent", labels, _percent(used.cpu_milli, cap.cpu))
        total.measured_cpu += cap.cpu
        total.cpu_used += used.cpu_milli
    if cap.memory:
        add("gaia_node_memory_usage_percent", labels, _percent(used.memory_mib, cap.memory))
        total.measured_memory += cap.memory
        total.memory_used += used.memory_mib
    if cap.local_disk:
        add("gaia_node_disk_usage_percent", labels, _percent(used.disk_used_gib, cap.local_disk))
        total.measured_disk += cap.local_disk
        total.disk_used += used.disk_used_gib
    rx = rates.per_second(("n", node.name, "rx"), used.network_rx_bytes_total, sampled_at)
    tx = rates.per_second(("n", node.name, "tx"), used.network_tx_bytes_total, sampled_at)
    if rx is not None:
        add("gaia_node_network_receive_bytes_per_second", labels, rx)
    if tx is not None:
        add("gaia_node_network_transmit_bytes_per_second", labels, tx)
    if cards:
        add("gaia_node_gpu_utilization_percent", labels, 100.0 * used.gpu_util)
        add("gaia_node_gpu_memory_usage_bytes", labels, used.gpu_memory_mib * MIB)
        total.measured_gpus += cards
        total.gpu_util_cards += used.gpu_util * cards


def cluster_status_samples(
    cluster: str, *, up: bool, collected: bool, seconds: float, apps: int, at: float
) -> list[Sample]:
    """What is known of a cluster even when it could not be read: the health loop's verdict,
    whether this pass read it and how long that took, and the apps deployed to it."""
    labels = {"cluster": cluster}
    return [
        Sample("gaia_cluster_up", labels, 1.0 if up else 0.0, at),
        Sample("gaia_cluster_collect_success", labels, 1.0 if collected else 0.0, at),
        Sample("gaia_cluster_collect_seconds", labels, seconds, at),
        Sample("gaia_cluster_apps", labels, float(apps), at),
    ]


def database_samples(
    quotas: Iterable[QuotaFigures], apps: Mapping[str, Sequence[DesiredApp]], *, at: float
) -> list[Sample]:
    """Quotas per business, cluster and dimension (in API units), and apps per business."""
    out: list[Sample] = []
    for q in quotas:
        for dim in DIMENSION_NAMES:
            hard, used = getattr(q.hard, dim), getattr(q.used, dim)
            if not hard and not used:
                continue
            labels = {"business": q.business, "cluster": q.cluster, "resource": dim}
            out.append(
                Sample("gaia_business_quota_hard", labels, float(to_api_amount(dim, hard)), at)
            )
            out.append(
                Sample("gaia_business_quota_used", labels, float(to_api_amount(dim, used)), at)
            )
            if hard:
                out.append(
                    Sample("gaia_business_quota_used_percent", labels, _percent(used, hard), at)
                )
    for cluster, listed in sorted(apps.items()):
        per_business: dict[str, int] = defaultdict(int)
        for app in listed:
            per_business[app.business] += 1
        for business, count in sorted(per_business.items()):
            labels = {"business": business, "cluster": cluster}
            out.append(Sample("gaia_business_apps", labels, float(count), at))
    return out


# ---------------------------------------------------------------- the loop


@dataclass(slots=True)
class PassReport:
    """What the last pass did (tests and the benchmark read it)."""

    clusters: int = 0
    failed: list[str] = field(default_factory=list)
    samples: int = 0
    read_s: float = 0.0
    map_s: float = 0.0
    write_s: float = 0.0


class MetricCollector(LoopService):
    name = "metric-collector"

    def __init__(
        self,
        *,
        db: Database,
        providers: ProviderRegistry,
        store: MetricStore,
        clock: Clock,
        interval: float,
        timeout: float | None = None,
        concurrency: int = 8,
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.providers = providers
        self.store = store
        self.clock = clock
        # a cluster's reading must end before the next pass is due
        self.timeout = timeout if timeout is not None else max(1.0, 0.8 * interval)
        self.concurrency = concurrency
        self.last = PassReport()
        self._rates: dict[int, CounterRates] = {}
        self._problems: dict[tuple[str, str], str] = {}  # (cluster, what) -> the failure

    async def run_once(self) -> None:
        at = self.clock.now().timestamp()
        report = PassReport()
        began = time.perf_counter()
        view = await asyncio.to_thread(self._read_database)
        gate = asyncio.Semaphore(self.concurrency)
        readings = await asyncio.gather(*(self._read_cluster(c, gate) for c in view.clusters))
        report.read_s = time.perf_counter() - began

        began = time.perf_counter()
        samples = database_samples(view.quotas, view.apps, at=at)
        for cluster, (reading, seconds) in zip(view.clusters, readings, strict=True):
            apps = view.apps.get(cluster.name, ())
            samples += cluster_status_samples(
                cluster.name,
                up=cluster.healthy,
                collected=reading is not None,
                seconds=seconds,
                apps=len(apps),
                at=at,
            )
            if reading is None:
                report.failed.append(cluster.name)
                continue
            rates = self._rates.setdefault(cluster.id, CounterRates())
            samples += await asyncio.to_thread(
                cluster_samples, reading, apps=apps, rates=rates, at=at
            )
        registered = {c.id for c in view.clusters}
        for gone in set(self._rates) - registered:
            del self._rates[gone]
        names = {c.name for c in view.clusters}
        for key in [k for k in self._problems if k[0] not in names]:
            del self._problems[key]
        report.map_s = time.perf_counter() - began

        began = time.perf_counter()
        await self.store.write(samples)
        report.write_s = time.perf_counter() - began
        report.clusters = len(view.clusters)
        report.samples = len(samples)
        self.last = report

    def _read_database(self) -> DatabaseView:
        with self.db.read_session() as session:
            clusters = list(session.scalars(select(Cluster).order_by(Cluster.name)))
            names = {c.id: c.name for c in clusters}
            businesses = names_by_id(session)
            apps: dict[str, list[DesiredApp]] = defaultdict(list)
            for row in session.scalars(select(App).order_by(App.id)):
                cluster = names.get(row.cluster_id)
                business = businesses.get(row.business_id)
                if cluster is None or business is None:
                    continue
                wanted = len(row.instances or {}) if row.state == "running" else 0
                apps[cluster].append(DesiredApp(business=business, app=row.name, desired=wanted))
            quotas = [
                QuotaFigures(
                    business=businesses[q.business_id],
                    cluster=names[q.cluster_id],
                    hard=q.hard(),
                    used=q.used(),
                )
                for q in session.scalars(select(Quota))
                if q.business_id in businesses and q.cluster_id in names
            ]
        rows = [
            ClusterRow(id=c.id, name=c.name, healthy=c.health == HealthState.HEALTHY, row=c)
            for c in clusters
        ]
        return DatabaseView(clusters=rows, apps=dict(apps), quotas=quotas)

    async def _read_cluster(
        self, cluster: ClusterRow, gate: asyncio.Semaphore
    ) -> tuple[ClusterReading | None, float]:
        async with gate:
            began = time.perf_counter()
            try:
                reading = await asyncio.wait_for(self._read(cluster), timeout=self.timeout)
            except TimeoutError:
                self._note(cluster.name, "cluster", f"no answer within {self.timeout:g}s")
                reading = None
            except Exception as exc:
                self._note(cluster.name, "cluster", f"{type(exc).__name__}: {exc}")
                reading = None
            else:
                self._note(cluster.name, "cluster", None)
            return reading, time.perf_counter() - began

    async def _read(self, cluster: ClusterRow) -> ClusterReading:
        provider = self.providers.for_cluster(cluster.row)
        nodes, instances, usage, control_plane = await asyncio.gather(
            provider.list_nodes(),
            provider.list_instances(),
            provider.metrics(),
            provider.control_plane_metrics(),
            return_exceptions=True,
        )
        for required in (nodes, instances):
            if isinstance(required, BaseException):
                raise required
        assert not isinstance(nodes, BaseException)
        assert not isinstance(instances, BaseException)
        return ClusterReading(
            cluster=cluster.name,
            adapter=provider.kind,
            nodes=nodes,
            instances=instances,
            usage=self._optional(cluster.name, "usage", usage),
            control_plane=self._optional(cluster.name, "control plane", control_plane),
        )

    def _optional(self, cluster: str, what: str, result: T | BaseException) -> T | None:
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            self._note(cluster, what, f"{type(result).__name__}: {result}")
            return None
        self._note(cluster, what, None)
        return result

    def _note(self, cluster: str, what: str, problem: str | None) -> None:
        """Log a failure when it begins and when it ends, not on every pass."""
        key = (cluster, what)
        before = self._problems.get(key)
        if problem is None:
            if before is not None:
                del self._problems[key]
                log.info("metrics: cluster %s: %s readable again", cluster, what)
            return
        if before is None:
            self._problems[key] = problem
            log.warning("metrics: cluster %s: cannot read %s: %s", cluster, what, problem)
