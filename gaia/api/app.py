"""The ASGI application: API routers, the console, error handling, the operation recorder.

``create_app(platform)`` wires a ``Platform`` (database, secret box, providers, settings) into a
FastAPI app. ``Platform.open(settings)`` migrates the database and makes the first admin; the
app's lifespan runs the background loops (cluster health, reservation reaper) unless the caller
says not to (tests drive loops with ``start(loops=1)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI

from gaia import __version__
from gaia.api import errors
from gaia.api.audit import OperationRecorder
from gaia.api.routes import (
    alerts,
    apps,
    auth,
    businesses,
    clusters,
    configs,
    gpu_models,
    instance_configs,
    logs,
    metrics_endpoint,
    nodes,
    overview,
    quotas,
    records,
    users,
)
from gaia.clock import Clock, RealClock
from gaia.controllers.apps import AppController
from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.controllers.loop import LoopService
from gaia.controllers.reservations import ReservationReaper
from gaia.monitor.collector import MetricCollector
from gaia.monitor.delivery import NotificationDelivery
from gaia.monitor.evaluator import AlertEvaluator, PassStats
from gaia.monitor.log_collector import LogCollector
from gaia.monitor.logs import LogStore, SystemLogHandler
from gaia.monitor.platform_metrics import HttpMetricsMiddleware, PlatformMetrics
from gaia.monitor.prometheus import PrometheusStore
from gaia.monitor.series import MetricStore
from gaia.monitor.tsdb import EmbeddedStore, MetricSnapshotLoop
from gaia.providers.registry import ProviderRegistry
from gaia.security import LoginThrottle, SecretBox
from gaia.settings import Settings
from gaia.store import migrate
from gaia.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    db: Database
    secrets: SecretBox
    providers: ProviderRegistry
    log_store: LogStore  # container and platform log lines, <data_dir>/logs.db (gaia.monitor.logs)
    token_last_touch: dict[int, dt.datetime] = field(default_factory=dict)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    # monitoring: where cluster series are kept, and the platform's own metrics (GET /metrics)
    metric_store: MetricStore = field(default_factory=EmbeddedStore)
    metrics: PlatformMetrics = field(default_factory=PlatformMetrics)

    @property
    def clock(self) -> Clock:
        return self.providers.clock

    @classmethod
    def open(
        cls, settings: Settings, *, run_migrations: bool = True, clock: Clock | None = None
    ) -> Platform:
        db = Database(settings.resolved_database_url())
        if run_migrations:
            migrate.upgrade(db.engine)
        secrets = SecretBox.from_settings(
            secret_key=settings.secret_key, data_dir=settings.data_dir
        )
        clock = clock or RealClock()
        store = open_metric_store(settings, clock=clock)
        return cls(
            settings=settings,
            db=db,
            secrets=secrets,
            providers=ProviderRegistry(secrets=secrets, clock=clock),
            log_store=LogStore(
                settings.data_dir / "logs.db", max_lines=settings.log_store_max_lines
            ),
            metric_store=store,
            metrics=PlatformMetrics(store=store),
        )

    def app_controller(self) -> AppController:
        return AppController(
            db=self.db,
            providers=self.providers,
            secrets=self.secrets,
            clock=self.clock,
            interval=self.settings.app_reconcile_interval_seconds,
        )

    def alert_evaluator(self) -> AlertEvaluator:
        evaluator = AlertEvaluator(
            db=self.db,
            store=self.metric_store,
            clock=self.clock,
            interval=self.settings.alert_eval_interval_seconds,
            # a series not written for three collections counts as gone (resolves its alert)
            lookback=3 * self.settings.metrics_interval_seconds,
        )
        evaluator.on_pass = self._alert_pass_metrics
        return evaluator

    def _alert_pass_metrics(self, stats: PassStats) -> None:
        self.metrics.alert_evaluation_seconds.observe(stats.seconds)
        self.metrics.alerts_firing.set(stats.firing)

    def notification_delivery(self) -> NotificationDelivery:
        delivery = NotificationDelivery(
            db=self.db,
            secrets=self.secrets,
            clock=self.clock,
            external_url=self.settings.external_url,
        )
        delivery.on_outcome = lambda kind, result: self.metrics.notification(
            channel=kind, result=result
        )
        return delivery

    def metric_collector(self) -> MetricCollector:
        return MetricCollector(
            db=self.db,
            providers=self.providers,
            store=self.metric_store,
            clock=self.clock,
            interval=self.settings.metrics_interval_seconds,
        )

    def alert_loops(self) -> list[LoopService]:
        return [self.metric_collector(), self.alert_evaluator(), self.notification_delivery()]

    def loops(self) -> list[LoopService]:
        loops: list[LoopService] = [
            ClusterHealthLoop(
                db=self.db,
                providers=self.providers,
                interval=self.settings.cluster_health_interval_seconds,
                timeout=self.settings.cluster_health_timeout_seconds,
            ),
            ReservationReaper(db=self.db),
            self.app_controller(),
            LogCollector(
                db=self.db,
                providers=self.providers,
                store=self.log_store,
                interval=self.settings.log_collect_interval_seconds,
            ),
        ]
        loops += self.alert_loops()
        if isinstance(self.metric_store, EmbeddedStore):
            loops.append(
                MetricSnapshotLoop(
                    store=self.metric_store,
                    interval=self.settings.metrics_snapshot_interval_seconds,
                )
            )
        return loops


def open_metric_store(settings: Settings, *, clock: Clock) -> MetricStore:
    """The metric store the settings name: embedded (kept in <data_dir>/tsdb) or Prometheus."""
    if settings.metrics_store == "prometheus":
        if not settings.prometheus_url:
            raise ValueError("GAIA_METRICS_STORE=prometheus needs GAIA_PROMETHEUS_URL")
        return PrometheusStore(
            settings.prometheus_url,
            timeout=10.0,
            bearer_token=settings.prometheus_token or None,
            max_series=settings.metrics_max_series,
            clock=clock,
        )
    return EmbeddedStore.open(
        settings.data_dir / "tsdb",
        retention_seconds=settings.metrics_retention_seconds,
        max_series=settings.metrics_max_series,
        clock=clock,
    )


def create_app(platform: Platform, *, run_loops: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        system_logs = SystemLogHandler(platform.log_store)
        system_logs.install()
        loops = platform.loops() if run_loops else []
        for loop in loops:
            loop.observe = platform.metrics.loop_pass
        tasks = [asyncio.create_task(loop.start(), name=loop.name) for loop in loops]
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await platform.providers.close()
            await platform.metric_store.close()
            await asyncio.to_thread(system_logs.uninstall)
            platform.log_store.close()

    app = FastAPI(
        title="Gaia",
        version=__version__,
        description="Gaia platform API. Authenticate with `Authorization: Bearer <token>` "
        "from `POST /api/v1/auth/login` or an API token.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    errors.install(app)

    @app.get("/api/healthz", tags=["meta"], include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness of this process (no auth, no database)."""
        return {"status": "ok", "version": __version__}

    for module in (auth, users, businesses, quotas, instance_configs, clusters, records, overview):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(configs.router, prefix="/api/v1")
    app.include_router(apps.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")
    app.include_router(gpu_models.router, prefix="/api/v1")
    app.include_router(alerts.router, prefix="/api/v1")
    app.include_router(logs.router, prefix="/api/v1")
    from gaia.console import install as install_console

    install_console(app)
    # monitoring: GET /metrics (root path) and the request metrics of every route
    app.include_router(metrics_endpoint.router)
    app.add_middleware(HttpMetricsMiddleware, metrics=platform.metrics)
    app.add_middleware(OperationRecorder, db_getter=lambda: platform.db)
    return app
