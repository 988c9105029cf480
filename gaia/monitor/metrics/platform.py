"""The platform's own metrics: how Gaia itself is doing, for ``GET /metrics``.

Everything lives in one ``CollectorRegistry`` per ``PlatformMetrics`` (never the process-global
registry), so two platforms in one process (the test suite) do not share counters. What is
measured, and who feeds it:

- HTTP: ``gaia_http_requests_total{method,route,status}`` and the histogram
  ``gaia_http_request_duration_seconds{method,route}``, recorded by ``HttpMetricsMiddleware``.
  ``route`` is the matched route's path template (``/api/v1/businesses/{name}``), never the raw
  path, so the number of series stays bounded whatever URLs clients send; a request no route
  matched counts as ``unmatched``, an unusual method as ``other``.
- Background loops: ``gaia_loop_passes_total{loop}``, ``gaia_loop_failures_total{loop}`` and
  ``gaia_loop_last_pass_duration_seconds{loop}``, through ``loop_pass(name)``.
- Alerting (fed by the evaluator and the delivery outbox):
  ``gaia_alert_notifications_total{channel,result}`` (result: sent, retry or failed),
  ``gaia_alert_evaluation_seconds`` (one evaluation pass) and ``gaia_alerts_firing``.
- The metric store: ``gaia_tsdb_series``, ``gaia_tsdb_points`` and what it refused, read from the
  store at scrape time (a callback collector: nothing to keep in step).
- The process (CPU, memory, open files, Python) and ``gaia_build_info{version}``.

The middleware is pure ASGI (not ``BaseHTTPMiddleware``): it only watches the response start
message go by, so streamed responses (logs, exec) stream as before. The duration ends when the
application returns, after the last body chunk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gaia import __version__
from gaia.domain.swarm import ClusterP2PFigures

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
NOTIFICATION_RESULTS = ("sent", "retry", "failed")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class PlatformMetrics:
    def __init__(self, *, store: Any = None, version: str = __version__) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.http_requests = Counter(
            "gaia_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_duration = Histogram(
            "gaia_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            registry=reg,
        )
        self.loop_passes = Counter(
            "gaia_loop_passes", "Passes of a background loop.", ["loop"], registry=reg
        )
        self.loop_failures = Counter(
            "gaia_loop_failures",
            "Passes of a background loop that failed with an error.",
            ["loop"],
            registry=reg,
        )
        self.app_quiet_ticks = Counter(
            "gaia_app_controller_quiet_ticks",
            "Ticks of the app controller that found the platform quiet and made no full pass.",
            registry=reg,
        )
        self.app_partial_passes = Counter(
            "gaia_app_controller_partial_passes",
            "Passes of the app controller over the apps its work queue held due, not all.",
            registry=reg,
        )
        self.app_queued = Gauge(
            "gaia_app_controller_queued",
            "Apps and clusters in the app controller's work queue: not yet as wished, to be "
            "looked at again before anything is heard of them.",
            registry=reg,
        )
        self.loop_last_duration = Gauge(
            "gaia_loop_last_pass_duration_seconds",
            "Duration of the last pass of a background loop.",
            ["loop"],
            registry=reg,
        )
        self.alert_notifications = Counter(
            "gaia_alert_notifications",
            "Alert notifications by channel kind and result (sent, retry, failed).",
            ["channel", "result"],
            registry=reg,
        )
        self.alert_evaluation_seconds = Histogram(
            "gaia_alert_evaluation_seconds",
            "Time of one alert evaluation pass over every enabled policy.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=reg,
        )
        self.alerts_firing = Gauge("gaia_alerts_firing", "Alerts firing now.", registry=reg)
        Gauge(
            "gaia_build_info", "The running Gaia version (value 1).", ["version"], registry=reg
        ).labels(version).set(1)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        self._store_collector: StoreCollector | None = None
        if store is not None:
            self.watch_store(store)

    def watch_store(self, store: Any) -> None:
        """Report ``store``'s size at every scrape (``series_count()``, ``point_count()``)."""
        if self._store_collector is not None:
            self.registry.unregister(self._store_collector)
        self._store_collector = StoreCollector(store)
        self.registry.register(self._store_collector)

    def watch_p2p(self, figures: Callable[[], Iterable[ClusterP2PFigures]]) -> None:
        """Report the P2P coordinator's per-cluster figures at every scrape."""
        self.registry.register(P2PCollector(figures))

    def watch_registry(self, figures: Callable[[], RegistryFigures | None]) -> None:
        """Report the image registry's figures at every scrape (None: no registry)."""
        self.registry.register(RegistryCollector(figures))

    def watch_leaders(self, figures: Callable[[], Iterable[tuple[str, str, int | None]]]) -> None:
        """Report which loop groups this replica leads at every scrape: (group, replica,
        epoch or None)."""
        self.registry.register(LeaderCollector(figures))

    def watch_backups(self, figures: Callable[[], BackupFigures]) -> None:
        """Report the backups' figures at every scrape (read from the shared database)."""
        self.registry.register(BackupCollector(figures))

    def watch_access(self, figures: Callable[[], AccessFigures | None]) -> None:
        """Report the access layer's figures at every scrape (None: no access layer)."""
        self.registry.register(AccessCollector(figures))

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    @contextlib.contextmanager
    def loop_pass(self, loop: str) -> Iterator[None]:
        """Time one pass of a background loop; an exception counts as a failed pass."""
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.loop_failures.labels(loop).inc()
            raise
        finally:
            self.loop_passes.labels(loop).inc()
            self.loop_last_duration.labels(loop).set(time.perf_counter() - started)

    def notification(self, *, channel: str, result: str) -> None:
        if result not in NOTIFICATION_RESULTS:
            raise ValueError(f"result must be one of {NOTIFICATION_RESULTS}, not {result!r}")
        self.alert_notifications.labels(channel, result).inc()

    def render(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class P2PCollector(Collector):
    """The P2P coordinator's figures per cluster (``gaia.controllers.swarm``), read when
    scraped. ``gaia_p2p_registry_fetches_per_piece`` is 1.0 while every piece was fetched from
    the registry exactly once; ``gaia_p2p_registry_refetches_total`` counts the exceptions
    (a registry fetch that failed or expired and was assigned again)."""

    def __init__(self, figures: Callable[[], Iterable[ClusterP2PFigures]]) -> None:
        self.figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        pieces = CounterMetricFamily(
            "gaia_p2p_pieces", "Pieces nodes fetched, by source.", labels=["cluster", "source"]
        )
        moved = CounterMetricFamily(
            "gaia_p2p_bytes", "Bytes nodes fetched, by source.", labels=["cluster", "source"]
        )
        assigned = CounterMetricFamily(
            "gaia_p2p_registry_assignments",
            "Pieces assigned to the registry.",
            labels=["cluster"],
        )
        refetches = CounterMetricFamily(
            "gaia_p2p_registry_refetches",
            "Registry assignments of a piece already assigned to the registry before.",
            labels=["cluster"],
        )
        per_piece = GaugeMetricFamily(
            "gaia_p2p_registry_fetches_per_piece",
            "Registry assignments per piece fetched from the registry (1: exactly once).",
            labels=["cluster"],
        )
        corrupt = CounterMetricFamily(
            "gaia_p2p_corrupt_pieces", "Pieces reported corrupt.", labels=["cluster"]
        )
        conflicts = CounterMetricFamily(
            "gaia_p2p_hash_conflicts",
            "Registry reports of a piece's hash refused (another hash came first).",
            labels=["cluster"],
        )
        swarms = GaugeMetricFamily("gaia_p2p_swarms", "Active swarms.", labels=["cluster"])
        agents = GaugeMetricFamily("gaia_p2p_agents", "Agents registered.", labels=["cluster"])
        for c in self.figures():
            f = c.figures
            pieces.add_metric([c.cluster, "peer"], f.pieces_from_peers)
            pieces.add_metric([c.cluster, "registry"], f.pieces_from_registry)
            moved.add_metric([c.cluster, "peer"], f.bytes_from_peers)
            moved.add_metric([c.cluster, "registry"], f.bytes_from_registry)
            assigned.add_metric([c.cluster], f.registry_assignments)
            refetches.add_metric([c.cluster], f.registry_assignments - f.registry_pieces)
            per_piece.add_metric([c.cluster], c.registry_fetches_per_piece)
            corrupt.add_metric([c.cluster], f.corrupt_reports)
            conflicts.add_metric([c.cluster], f.hash_conflicts)
            swarms.add_metric([c.cluster], c.swarms)
            agents.add_metric([c.cluster], c.agents)
        yield from (pieces, moved, assigned, refetches, per_piece, corrupt, conflicts)
        yield from (swarms, agents)


class StoreCollector(Collector):
    """The metric store's figures, read when scraped."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        return []  # collected only when scraped; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        store = self.store
        if hasattr(store, "series_count"):
            yield GaugeMetricFamily(
                "gaia_tsdb_series", "Series held by the metric store.", value=store.series_count()
            )
        if hasattr(store, "point_count"):
            yield GaugeMetricFamily(
                "gaia_tsdb_points", "Points held by the metric store.", value=store.point_count()
            )
        stats = getattr(store, "stats", None)
        if stats is not None:
            refused = CounterMetricFamily(
                "gaia_tsdb_dropped_samples",
                "Samples the metric store did not keep, by reason.",
                labels=["reason"],
            )
            refused.add_metric(["max_series"], stats.refused_samples)
            refused.add_metric(["out_of_order"], stats.out_of_order)
            refused.add_metric(["too_old"], stats.too_old)
            yield refused
            yield GaugeMetricFamily(
                "gaia_tsdb_snapshot_bytes",
                "Size of the metric store's last snapshot.",
                value=stats.last_snapshot_bytes,
            )
            yield GaugeMetricFamily(
                "gaia_tsdb_snapshot_seconds",
                "Time the metric store's last snapshot took.",
                value=stats.last_snapshot_seconds,
            )
        elif hasattr(store, "refused_samples"):
            refused = CounterMetricFamily(
                "gaia_tsdb_dropped_samples",
                "Samples the metric store did not keep, by reason.",
                labels=["reason"],
            )
            refused.add_metric(["max_series"], store.refused_samples)
            yield refused


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, or ``unmatched``."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    # FastAPI keeps an included router as one node: ``scope["route"]`` is the route inside it
    # ("/businesses/{name}"), and the full template ("/api/v1/businesses/{name}") is only in
    # FastAPI's routing context. Without that context (another FastAPI), the route's own
    # template is still bounded, only less precise; never fall back to the raw path.
    fastapi_scope = scope.get("fastapi")
    context = (
        fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    )
    for candidate in (getattr(context, "path_format", None), getattr(context, "path", None)):
        if isinstance(candidate, str) and candidate:
            return candidate
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not path:
        return "unmatched"
    if isinstance(route, Mount):
        return path.rstrip("/") + "/{path}"  # its own prefix, never the sub-path
    return path


class HttpMetricsMiddleware:
    """Pure ASGI middleware recording ``gaia_http_requests_total`` and the duration histogram."""

    def __init__(self, app: ASGIApp, *, metrics: PlatformMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the application raises before answering

        async def relay(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, relay)
        finally:
            self.metrics.observe_request(
                method=scope["method"],
                route=route_template(scope),
                status=status,
                seconds=time.perf_counter() - started,
            )


@dataclass(frozen=True)
class RegistryNamespaceFigures:
    namespace: str
    repositories: int
    tags: int
    bytes: int
    pushes: int
    pulls: int
    pull_errors: int = 0


@dataclass(frozen=True)
class RegistryFigures:
    """The image registry, read at a scrape: is it up, and per namespace what it holds (Gaia's
    records) and what moved (the registry's events since this process started)."""

    registry: str  # its address
    up: bool | None  # None: run apart, not watched by this process
    namespaces: tuple[RegistryNamespaceFigures, ...]


class RegistryCollector(Collector):
    """``gaia_registry_*``: the ``business`` label is the namespace (a business's name,
    ``public`` or ``u/<user>``)."""

    def __init__(self, figures: Callable[[], RegistryFigures | None]) -> None:
        self.figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        f = self.figures()
        if f is None:
            return
        if f.up is not None:
            up = GaugeMetricFamily(
                "gaia_registry_up", "1 when the image registry answers.", labels=["registry"]
            )
            up.add_metric([f.registry], 1.0 if f.up else 0.0)
            yield up
        labels = ["registry", "business"]
        repositories = GaugeMetricFamily(
            "gaia_registry_repositories", "Repositories per namespace.", labels=labels
        )
        images = GaugeMetricFamily(
            "gaia_registry_images", "Image tags per namespace.", labels=labels
        )
        pushes = CounterMetricFamily(
            "gaia_registry_pushes", "Image pushes (manifests pushed by tag).", labels=labels
        )
        pulls = CounterMetricFamily(
            "gaia_registry_pulls", "Image pulls (manifests served).", labels=labels
        )
        pull_errors = CounterMetricFamily(
            "gaia_registry_pull_errors",
            "Image pulls that failed (refused by Gaia's token endpoint, or answered with an "
            "error by the registry).",
            labels=labels,
        )
        total = 0
        for n in f.namespaces:
            key = [f.registry, n.namespace]
            repositories.add_metric(key, n.repositories)
            images.add_metric(key, n.tags)
            pushes.add_metric(key, n.pushes)
            pulls.add_metric(key, n.pulls)
            pull_errors.add_metric(key, n.pull_errors)
            total += n.bytes
        storage = GaugeMetricFamily(
            "gaia_registry_storage_bytes",
            "Bytes the registry's images take (distinct blobs per namespace, by Gaia's records).",
            labels=["registry"],
        )
        storage.add_metric([f.registry], total)
        yield from (repositories, images, pushes, pulls, pull_errors, storage)


@dataclass(frozen=True)
class AccessFigures:
    """The access layer (``gaia.controllers.access``), read at a scrape."""

    up: bool  # HAProxy's worker and dnsmasq both run
    backends: int  # apps served by domain
    servers: Mapping[str, int]  # state (ready, drain, maint) -> servers
    reloads: int  # HAProxy reloads since this process started
    drains: int  # instances drained before a stop since this process started


class AccessCollector(Collector):
    """``gaia_access_*``."""

    def __init__(self, figures: Callable[[], AccessFigures | None]) -> None:
        self.figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        f = self.figures()
        if f is None:
            return
        up = GaugeMetricFamily("gaia_access_up", "1 when HAProxy and dnsmasq both run.")
        up.add_metric([], 1.0 if f.up else 0.0)
        backends = GaugeMetricFamily("gaia_access_backends", "Apps served by their domain.")
        backends.add_metric([], f.backends)
        servers = GaugeMetricFamily(
            "gaia_access_servers",
            "Instances behind the load balancer, by state (ready, drain, maint).",
            labels=["state"],
        )
        for state in ("ready", "drain", "maint"):
            servers.add_metric([state], f.servers.get(state, 0))
        reloads = CounterMetricFamily(
            "gaia_access_reloads", "HAProxy reloads (apps, domains or instances changed)."
        )
        reloads.add_metric([], f.reloads)
        drains = CounterMetricFamily(
            "gaia_access_drains", "Instances drained before the app controller stopped them."
        )
        drains.add_metric([], f.drains)
        yield from (up, backends, servers, reloads, drains)


@dataclass(frozen=True)
class BackupFigures:
    """The newest succeeded backup (None: there is none) and the backups per state."""

    last_success: float | None  # Unix time it finished
    last_duration_s: float
    last_size_bytes: int
    states: dict[str, int]


class BackupCollector(Collector):
    """``gaia_backup_*``: the newest succeeded backup's time, duration and size."""

    def __init__(self, figures: Callable[[], BackupFigures]) -> None:
        self.figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        try:
            f = self.figures()
        except Exception:  # a scrape while the database is away reports no backup figures
            return
        states = GaugeMetricFamily("gaia_backups", "Backups listed, per state.", labels=["state"])
        for state in ("Pending", "Running", "Succeeded", "Failed"):
            states.add_metric([state], f.states.get(state, 0))
        yield states
        if f.last_success is None:
            return
        when = GaugeMetricFamily(
            "gaia_backup_last_success_timestamp_seconds",
            "When the newest succeeded backup finished (Unix time).",
        )
        when.add_metric([], f.last_success)
        took = GaugeMetricFamily(
            "gaia_backup_last_duration_seconds", "How long the newest succeeded backup took."
        )
        took.add_metric([], f.last_duration_s)
        size = GaugeMetricFamily(
            "gaia_backup_last_size_bytes", "The size of the newest succeeded backup's archive."
        )
        size.add_metric([], f.last_size_bytes)
        yield from (when, took, size)


class LeaderCollector(Collector):
    """``gaia_leader``: 1 for each loop group this replica leads (with its epoch), else 0."""

    def __init__(self, figures: Callable[[], Iterable[tuple[str, str, int | None]]]) -> None:
        self.figures = figures

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        leads = GaugeMetricFamily(
            "gaia_leader",
            "1 when this replica leads the loop group (its loops run here), else 0.",
            labels=["group", "replica"],
        )
        epochs = GaugeMetricFamily(
            "gaia_leader_epoch",
            "The epoch of the group's lease this replica holds (grows at every change).",
            labels=["group", "replica"],
        )
        for group, replica, epoch in self.figures():
            leads.add_metric([group, replica], 0.0 if epoch is None else 1.0)
            if epoch is not None:
                epochs.add_metric([group, replica], epoch)
        yield from (leads, epochs)
