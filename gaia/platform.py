"""``Platform``: what one Gaia process is made of, wired once.

A ``Platform`` holds the stores (the platform database, the secret box, the log store, the metric
store), the live cluster providers, the P2P coordinator (``gaia.controllers.swarm``: swarms in
memory), and builds every background loop: the app controller, cluster health, the reservation
reaper, the P2P sweep, the log and metric collectors, the alert evaluator, notification delivery
and the embedded TSDB's snapshots. ``Platform.open(settings)`` migrates the database and
opens the stores; ``running()`` runs the loops for as long as the server lives and closes
everything after. Nothing here speaks HTTP: the API (``gaia.api``) and the console reach the
platform through ``request.app.state.platform``. See docs/architecture.md, "The wiring".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets as secrets_module
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from gaia import __version__
from gaia.clock import Clock, RealClock
from gaia.controllers.access import AccessGateway, Dnsmasq, Haproxy
from gaia.controllers.agent_auth import AgentAuthenticator, AgentCluster
from gaia.controllers.apps import AppController
from gaia.controllers.backups import ScheduledBackups
from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.controllers.floating_ips import FloatingIpSweep
from gaia.controllers.leadership import LeaderElected, Leadership, LeaseKeeper
from gaia.controllers.replicas import ReplicaHeartbeat, loop_states
from gaia.controllers.reservations import ReservationReaper
from gaia.controllers.swarm import ClusterKey, SwarmCoordinator, SwarmPrewarms, SwarmSweep
from gaia.delivery.builds import BuildTools, resolve_build_user
from gaia.delivery.registry import RegistryGcLoop, RegistryService, TokenSigner
from gaia.delivery.runner import PipelineRunner
from gaia.loop import LoopService
from gaia.monitor.alerting.delivery import NotificationDelivery
from gaia.monitor.alerting.evaluator import AlertEvaluator, PassStats
from gaia.monitor.logs.collector import LogCollector
from gaia.monitor.logs.postgres import PostgresLogStore
from gaia.monitor.logs.retention import LogRetention
from gaia.monitor.logs.store import LogStore, SqliteLogStore, SystemLogHandler
from gaia.monitor.metrics.collector import MetricCollector
from gaia.monitor.metrics.platform import (
    AccessFigures,
    BackupFigures,
    PlatformMetrics,
    RegistryFigures,
    RegistryNamespaceFigures,
)
from gaia.monitor.metrics.prometheus import PrometheusStore
from gaia.monitor.metrics.series import MetricStore
from gaia.monitor.metrics.tsdb import EmbeddedStore, MetricSnapshotLoop
from gaia.providers.port import PullSecret
from gaia.providers.registry import ProviderRegistry
from gaia.security import SecretBox
from gaia.settings import Settings
from gaia.store import backups, migrate, paging
from gaia.store import registry as registry_store
from gaia.store import replicas as replica_store
from gaia.store.cache import CommitClearedCache
from gaia.store.clusters import cluster_changed
from gaia.store.database import Database
from gaia.store.identity import PrincipalCache
from gaia.store.models import Cluster
from gaia.store.throttle import LoginThrottle, ThrottlePolicy

log = logging.getLogger(__name__)
# the groups of background loops with one leader each among the replicas
LOOP_GROUPS = ("controllers", "monitoring")


@dataclass
class Platform:
    settings: Settings
    db: Database
    secrets: SecretBox
    providers: ProviderRegistry
    # container and platform log lines: <data_dir>/logs.db on SQLite, the shared log_lines
    # table on PostgreSQL (``open_log_store``)
    log_store: LogStore
    token_last_touch: dict[int, dt.datetime] = field(default_factory=dict)
    # callers' principals by token digest, for a few seconds (gaia.store.identity)
    principals: PrincipalCache = field(init=False)
    # failed logins, counted in the database so that replicas share one budget
    login_throttle: LoginThrottle = field(init=False)
    # monitoring: where cluster series are kept, and the platform's own metrics (GET /metrics)
    metric_store: MetricStore = field(default_factory=EmbeddedStore)
    metrics: PlatformMetrics = field(default_factory=PlatformMetrics)
    # P2P image distribution: the swarms of every cluster, in this process's memory
    p2p: SwarmCoordinator = field(init=False)
    # which node a P2P agent call speaks for (ServiceAccount tokens, node tokens)
    p2p_auth: AgentAuthenticator = field(init=False)
    # the cluster of an agent call by name, for a few seconds (gaia.api.routes.p2p): a change
    # to a cluster on this replica clears it, another replica's within the TTL
    p2p_clusters: CommitClearedCache[str, AgentCluster] = field(init=False)
    # the image registry: token signer, addresses, the docker-registry child (docs/registry.md)
    registry: RegistryService = field(init=False)
    # the access layer: HAProxy and dnsmasq for apps' domains (None: GAIA_ACCESS_LISTEN unset)
    access: AccessGateway | None = field(init=False)
    # HA: this replica's name and its claims on the loop groups (docs/ha.md)
    replica_id: str = field(init=False)
    _leaderships: dict[str, Leadership] = field(init=False, default_factory=dict)
    # the loops running now (``running``), by name, for restarts an administrator asks for
    _services: dict[str, LoopService] = field(init=False, default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(init=False, default_factory=dict)
    started_at: dt.datetime = field(init=False, default_factory=lambda: dt.datetime.now(dt.UTC))
    _revision: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.principals = PrincipalCache(ttl_seconds=self.settings.principal_cache_seconds)
        self.principals.watch(self.db)
        self.access = access_gateway(self.settings)
        self.replica_id = self.settings.replica_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets_module.token_hex(2)}"
        )
        self.metrics.watch_access(self._access_figures)
        self.metrics.watch_backups(self._backup_figures)
        self.metrics.watch_leaders(
            lambda: [
                (group, self.replica_id, held.epoch if (held := lead.leads()) else None)
                for group, lead in self._leaderships.items()
            ]
        )
        self.p2p = SwarmCoordinator(
            secrets=self.secrets,
            clock=self.clock,
            heartbeat_s=self.settings.p2p_heartbeat_seconds,
            lease_s=self.settings.p2p_lease_seconds,
        )
        # a real cluster pre-pulls (gray upgrades' look-ahead) as the P2P agents' prewarm jobs
        self.providers.send_prewarms_to(
            lambda cluster: SwarmPrewarms(
                self.p2p, ClusterKey(id=cluster.id, name=cluster.name, salt=cluster.key_salt)
            )
        )
        self.p2p_auth = AgentAuthenticator(
            secrets=self.secrets,
            coordinator=self.p2p,
            clock=self.clock,
            service_account=self.settings.p2p_agent_service_account,
            shared_token_where=self.settings.p2p_shared_agent_token,
            review_cache_s=self.settings.p2p_token_review_cache_seconds,
        )
        self.p2p_clusters = CommitClearedCache(
            ttl_seconds=self.settings.p2p_cluster_cache_seconds, max_entries=1024
        )
        self.p2p_clusters.watch(self.db, changed=cluster_changed, bulk=(Cluster,))
        self.metrics.watch_p2p(self.p2p.figures)
        self.registry = registry_service(self.settings, self.secrets)
        self.metrics.watch_registry(self._registry_figures)
        self.login_throttle = LoginThrottle(
            db=self.db,
            clock=self.clock,
            policy=ThrottlePolicy(
                failures_per_user=self.settings.login_failures_per_user,
                failures_per_client=self.settings.login_failures_per_client,
                window_seconds=self.settings.login_failure_window_seconds,
                max_rows=self.settings.login_throttle_max_rows,
            ),
        )

    def _access_figures(self) -> AccessFigures | None:
        access = self.access
        if access is None:
            return None
        backends = access.backends()
        states = Counter(s.state.value for b in backends for s in b.servers)
        return AccessFigures(
            up=access.up(),
            backends=len(backends),
            servers=dict(states),
            reloads=access.reloads,
            drains=access.drains_started,
        )

    def _registry_figures(self) -> RegistryFigures | None:
        registry = self.registry
        if not registry.enabled:
            return None
        registry.scan_log()
        with self.db.read_session() as session:
            held = {f.namespace: f for f in registry_store.namespace_figures(session)}
        names = sorted(
            set(held) | set(registry.pushes) | set(registry.pulls) | set(registry.pull_errors)
        )
        return RegistryFigures(
            registry=registry.address,
            up=registry.process.running() if registry.process is not None else None,
            namespaces=tuple(
                RegistryNamespaceFigures(
                    namespace=n,
                    repositories=held[n].repositories if n in held else 0,
                    tags=held[n].tags if n in held else 0,
                    bytes=held[n].bytes if n in held else 0,
                    pushes=registry.pushes.get(n, 0),
                    pulls=registry.pulls.get(n, 0),
                    pull_errors=registry.pull_errors.get(n, 0),
                )
                for n in names
            ),
        )

    @property
    def clock(self) -> Clock:
        return self.providers.clock

    @classmethod
    def open(
        cls, settings: Settings, *, run_migrations: bool = True, clock: Clock | None = None
    ) -> Platform:
        url = settings.resolved_database_url()
        # Checked before the database is touched: a replica that could not read the others'
        # secrets must not start at all (SecretKeyError says what to set).
        secrets = SecretBox.from_settings(
            secret_key=settings.secret_key,
            data_dir=settings.data_dir,
            shared_database=not url.startswith("sqlite"),
        )
        # every replica signs list cursors alike, so page two may come from another replica
        paging.sign_cursors_with(secrets.derive_key("list cursors"))
        db = Database(url)
        if run_migrations:
            migrate.upgrade(db.engine)
        clock = clock or RealClock()
        store = open_metric_store(settings, clock=clock)
        return cls(
            settings=settings,
            db=db,
            secrets=secrets,
            providers=ProviderRegistry(secrets=secrets, clock=clock),
            log_store=open_log_store(settings, url),
            metric_store=store,
            metrics=PlatformMetrics(store=store),
        )

    def app_controller(self, *, resync: float | None = None) -> AppController:
        """The app controller; ``resync``: see ``AppController`` (the running platform's
        skips the ticks that find nothing changed, tests drive every pass by hand)."""
        return AppController(
            db=self.db,
            providers=self.providers,
            secrets=self.secrets,
            clock=self.clock,
            interval=self.settings.app_reconcile_interval_seconds,
            pull_secret_for=self._pull_secret,
            access=self.access,
            resync=resync,
            on_quiet=self.metrics.app_quiet_ticks.inc,
            on_pass=self._app_pass_metrics,
        )

    def _app_pass_metrics(self, partial: bool, queued: int) -> None:
        if partial:
            self.metrics.app_partial_passes.inc()
        self.metrics.app_queued.set(queued)

    def _pull_secret(self, business: str) -> PullSecret | None:
        """The registry's pull account of ``business``, for its instances (None: no registry)."""
        if not self.registry.enabled:
            return None
        username, password = self.registry.pull_credentials(business)
        return PullSecret(registry=self.registry.address, username=username, password=password)

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

    def pipeline_runner(self) -> PipelineRunner:
        """The loop that builds queued pipeline runs (only with a registry to push to), as the
        build user ``resolve_build_user`` chooses; with none allowed, every run fails at once
        with the reason (and the fix)."""
        build_dir = self.settings.build_dir or self.settings.data_dir / "builds"
        user, refusal = resolve_build_user(
            self.settings.build_user,
            build_dir=build_dir,
            as_root_allowed=self.settings.build_as_root,
        )
        if refusal is not None:
            log.warning("pipelines: builds refused: %s", refusal)
        return PipelineRunner(
            db=self.db,
            registry=self.registry,
            secrets=self.secrets,
            build_dir=build_dir,
            tools=BuildTools(run_as=user),
            refusal=refusal,
            per_business=self.settings.pipeline_builds_per_business,
            total=self.settings.pipeline_builds_total,
            interval=self.settings.pipeline_runner_interval_seconds,
            local_git=self.settings.pipeline_local_git,
        )

    def alert_loops(self) -> list[LoopService]:
        return [self.metric_collector(), self.alert_evaluator(), self.notification_delivery()]

    def leaderships(self) -> dict[str, Leadership]:
        """This replica's claim on each loop group (``gaia.controllers.leadership``)."""
        if not self._leaderships:
            for group in LOOP_GROUPS:
                self._leaderships[group] = Leadership(
                    db=self.db,
                    group=group,
                    holder=self.replica_id,
                    clock=self.clock,
                    ttl_s=self.settings.leader_lease_seconds,
                )
        return self._leaderships

    def scheduled_backups(self) -> ScheduledBackups:
        return ScheduledBackups(
            db=self.db, settings=self.settings, secrets=self.secrets, clock=self.clock
        )

    def _backup_figures(self) -> BackupFigures:
        with self.db.read_session() as session:
            last = backups.last_succeeded(session)
            states = backups.count_by_state(session)
        if last is None or last.finished_at is None:
            return BackupFigures(None, 0.0, 0, states)
        took = last.finished_at - (last.started_at or last.finished_at)
        return BackupFigures(
            last.finished_at.timestamp(), took.total_seconds(), last.size_bytes, states
        )

    def loops(self) -> list[LoopService]:
        """Every background loop: those of a group run on the group's leader only (fenced),
        the others on every replica (see ``gaia.controllers.leadership``)."""
        lead = self.leaderships()
        controllers: list[LoopService] = [
            ClusterHealthLoop(
                db=self.db,
                providers=self.providers,
                interval=self.settings.cluster_health_interval_seconds,
                timeout=self.settings.cluster_health_timeout_seconds,
            ),
            ReservationReaper(db=self.db),
            FloatingIpSweep(db=self.db),
            self.app_controller(resync=self.settings.app_resync_seconds),
            self.scheduled_backups(),
        ]
        if self.settings.registry_listen and self.settings.registry_gc_interval_seconds > 0:
            controllers.append(
                RegistryGcLoop(self.registry, interval=self.settings.registry_gc_interval_seconds)
            )
        monitoring: list[LoopService] = [
            LogCollector(
                db=self.db,
                providers=self.providers,
                store=self.log_store,
                interval=self.settings.log_collect_interval_seconds,
            ),
            *self.alert_loops(),
        ]
        if self.settings.log_store_max_age_seconds > 0:
            monitoring.append(
                LogRetention(
                    store=self.log_store,
                    clock=self.clock,
                    max_age=dt.timedelta(seconds=self.settings.log_store_max_age_seconds),
                    interval=self.settings.log_retention_interval_seconds,
                )
            )
        loops: list[LoopService] = [LeaseKeeper(lead[g]) for g in LOOP_GROUPS]
        loops += [LeaderElected(loop, lead["controllers"]) for loop in controllers]
        loops += [LeaderElected(loop, lead["monitoring"]) for loop in monitoring]
        # safe on every replica: claimed runs, this process's swarms and metric store
        loops.append(SwarmSweep(coordinator=self.p2p))
        if self.registry.enabled:
            loops.append(self.pipeline_runner())
        if isinstance(self.metric_store, EmbeddedStore):
            loops.append(
                MetricSnapshotLoop(
                    store=self.metric_store,
                    interval=self.settings.metrics_snapshot_interval_seconds,
                )
            )
        return loops

    def replica_report(self, services: list[LoopService]) -> replica_store.Report:
        """What this replica says of itself at each heartbeat (``gaia.store.replicas``)."""
        return replica_store.Report(
            name=self.replica_id,
            version=__version__,
            host=socket.gethostname(),
            pid=os.getpid(),
            address=f"{self.settings.host}:{self.settings.port}",
            schema_revision=self.schema_revision(),
            started_at=self.started_at,
            loops=loop_states(services),
        )

    def schema_revision(self) -> str:
        """The database's schema revision, as this replica found it (read once)."""
        if not self._revision:
            with self.db.engine.connect() as connection:
                self._revision = migrate.current_revision(connection)
        return self._revision

    def replica_heartbeat(self, services: list[LoopService]) -> ReplicaHeartbeat:
        """The loop that reports this replica and its loops, and takes asked restarts."""
        beat = ReplicaHeartbeat(
            db=self.db,
            clock=self.clock,
            report=lambda: self.replica_report([*services, beat]),
            restart=self.restart_loop,
        )
        return beat

    def nudge(self, name: str, about: Any = None) -> None:
        """Tell the running loop ``name`` that what it reads changed (``about``: what, when
        known), and wake it now (nothing when it does not run here)."""
        service = self._services.get(name)
        if service is None:
            return
        service.changed(about)
        service.wake()

    async def restart_loop(self, name: str) -> str | None:
        """Stop the loop ``name`` after its current pass and start it afresh (failures and
        back-off cleared); None when done, else why not."""
        service, task = self._services.get(name), self._tasks.get(name)
        if service is None or task is None:
            return f"this replica runs no loop named {name!r}"
        if name == ReplicaHeartbeat.name:
            return "the heartbeat cannot restart itself (restart the replica instead)"
        service.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=30)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:
            log.debug("loop %s ended with an error before its restart", name, exc_info=True)
        service.failures = 0
        service.restarts += 1
        service.forget()  # a restart starts from a full pass
        self._tasks[name] = asyncio.create_task(service.start(), name=name)
        return None

    @contextlib.asynccontextmanager
    async def running(self, *, loops: bool = True) -> AsyncIterator[None]:
        """Run the background loops (unless ``loops`` is false: tests drive them with
        ``start(loops=1)``) and platform log capture until the block exits; then stop the loops
        and close the providers and stores."""
        system_logs = SystemLogHandler(self.log_store)
        system_logs.install()
        await asyncio.to_thread(self.registry.start)
        if self.access is not None:
            await asyncio.to_thread(self.access.start)
        services = self.loops() if loops else []
        if loops:
            services.append(self.replica_heartbeat(services))
        self.started_at = dt.datetime.now(dt.UTC)
        for service in services:
            service.observe = self.metrics.loop_pass
            self._services[service.name] = service
            self._tasks[service.name] = asyncio.create_task(service.start(), name=service.name)
        if "apps" in self._services:
            # event-driven: a change to an instance in any cluster wakes the app controller
            # (its interval stays as the resync); API writes to apps wake it too (``nudge``).
            # An instance's change names its app: the controller may look at that app alone
            self.providers.watch_changes(lambda heard: self.nudge("apps", heard))
        try:
            yield
        finally:
            for service in services:
                service.stop()
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._services.clear()
            self._tasks.clear()
            for leadership in self._leaderships.values():
                with contextlib.suppress(Exception):  # the lease then runs out by itself
                    await asyncio.to_thread(leadership.release)
            await self.providers.close()
            await self.metric_store.close()
            await asyncio.to_thread(self.registry.stop)
            if self.access is not None:
                await asyncio.to_thread(self.access.stop)
            await asyncio.to_thread(system_logs.uninstall)
            self.log_store.close()


def open_log_store(settings: Settings, url: str) -> LogStore:
    """The log store for the platform database at ``url``: on PostgreSQL the ``log_lines``
    table every replica reads (``gaia.monitor.logs.postgres``), so a follower's log API shows
    what the monitoring leader collected; on SQLite (one replica) ``<data_dir>/logs.db``, which
    keeps the churn of log lines off the platform database's single write lock."""
    if url.startswith("postgresql"):
        return PostgresLogStore(url, max_lines=settings.log_store_max_lines)
    return SqliteLogStore(settings.data_dir / "logs.db", max_lines=settings.log_store_max_lines)


def access_gateway(settings: Settings) -> AccessGateway | None:
    """The access layer the settings describe (None: GAIA_ACCESS_LISTEN is empty)."""
    if not settings.access_listen:
        return None
    folder = settings.data_dir / "access"
    return AccessGateway(
        haproxy=Haproxy(
            binary=settings.access_haproxy_binary, folder=folder, bind=settings.access_listen
        ),
        dns=Dnsmasq(
            binary=settings.access_dnsmasq_binary,
            folder=folder,
            listen=settings.access_dns_listen,
        ),
        address=settings.resolved_access_address(),
    )


def registry_service(settings: Settings, secrets: SecretBox) -> RegistryService:
    """The registry the settings describe (``enabled`` is false when they name none)."""
    origin = settings.external_url.rstrip("/")
    if not origin:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
        origin = f"http://{host}:{settings.port}"
    folder = settings.data_dir / "registry"
    return RegistryService(
        signer=TokenSigner(secrets),
        realm=f"{origin}/api/v1/registry/token",
        events_url=f"{origin}/api/v1/registry/events",
        listen=settings.registry_listen,
        url=settings.registry_url,
        address=settings.registry_address,
        binary=settings.registry_binary,
        folder=folder,
        storage_dir=settings.registry_storage_dir or folder / "storage",
        tls=(
            (settings.registry_tls_cert_file, settings.registry_tls_key_file)
            if settings.registry_tls_cert_file and settings.registry_tls_key_file
            else None
        ),
        ca_file=settings.registry_ca_file,
    )


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
