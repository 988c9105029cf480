"""The app controller: drives every cluster toward the apps in the store.

One pass::

    store snapshot (one read) ──► per cluster: nodes + instances (provider) ──► per app:
        1. gray upgrade step      domain.upgrades.step_upgrade   → store (guarded by generation)
        2. new failures           store.apps.record_failure      → BackOff / Blacklisted events
        3. reconcile              domain.apps.reconcile_instances → actions
        4. apply                  scheduler.place + provider calls (creates and image patches
                                  CREATE_CONCURRENCY at a time)
        5. service                provider.apply_service (ready endpoints only)
        6. pre-pull               domain.upgrades.upcoming → provider.prewarm_image (if it can)
    ──► events (the controller's and the cluster's) written in one transaction per cluster

A pass is **full** (every app of every cluster, and what is cluster-wide: orphans, configs,
quotas) or **partial**: the apps whose instances a provider reported changed since the last tick
(its notice names the app), those the API changed (it names them, and so do the store's
operation records: ``store.apps.changed_apps``), those waiting for room in the same clusters,
and those the work queue holds due (``gaia.controllers.workqueue``). A partial pass reads only
its apps from the store and only their instances from the cluster; the nodes and every instance
are read when one of them places an instance (``_Room``), so an upgrade or restart of one app
costs O(that app), not O(cluster). See ``AppController.run_once`` for which tick makes which.

Before step 3 each app's instances pass one repair, **placements left half-done**. A provider
may place in two writes (the kubernetes provider did up to release 22: it created the pod, then
bound it to the node the scheduler chose; it now creates pods bound, but their leftovers may be
in a cluster); a process killed between them leaves an instance that no node holds and
nothing else would ever bind (the pod names Gaia's scheduler). Such an instance (phase
``Scheduled``, no node) older than ``unbound_grace`` (60 s: a bind in flight is never raced) is
deleted and its id placed and created again through the normal path, with a Warning event
``LeftUnbound`` on the instance. Recreating rather than binding to the cards the pod records is
what keeps GPU bookkeeping whole: a node's GPU use counts bound instances only, and the
scheduler's view is rebuilt from it on every pass (all a restarted process has), so since the
crash those cards may have gone to another instance; a fresh placement on the current view can
never hand a card out twice. The pod never ran, so nothing is lost but the restart count a
restart's pod carried. The sim provider binds in one step, so the repair never fires there.

Step 6 is what makes a batch cost its restart and not its pull too: while one batch of a
running gray upgrade restarts, the target image is pulled onto the nodes of the next
``prewarm_batches`` batches (a provider with the ``ImagePrewarmer`` capability: the sim, or, on
a real cluster, the P2P agents' prewarm job, one per app, where agents run; docs/p2p.md). The
wish is level-triggered like the rest, remembered per app only to skip calls that would change
nothing, and withdrawn (an empty node set) as soon as the upgrade is paused, rolling back,
finished or the app is gone. The batch in flight keeps its nodes in the wish (a pre-pull called
off there would stop layers its instances' own pulls then fetch again). An app's ``prepull``
(``gaia.domain.upgrades.Prepull``) says how far this goes: ``off``, nothing; ``templates``,
also with no upgrade in flight, its newest declared version no instance is assigned yet
(``template_to_prepull``), onto the nodes where the app's instances hold their own image.

The decisions are pure functions in ``gaia.domain``; this module only observes, calls them and
applies what they say. Everything is level-triggered: the store's instance map is the desired
state and the cluster is the truth for what runs, so a controller killed anywhere in a pass and
started again (a new object with empty memory) converges without losing or duplicating an
instance. Clusters are handled one after another and apps within a cluster in id order; an
error in one app is logged as an event and never stops the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from gaia.clock import Clock
from gaia.controllers.access import AccessGateway, AccessUnavailable
from gaia.controllers.workqueue import Key, WorkQueue
from gaia.domain import apps as domain_apps
from gaia.domain.access import AppKey, Seen
from gaia.domain.apps import Create, Delete, ReplaceImage, Restart, TemplateSpec
from gaia.domain.errors import GaiaError, NotManaged
from gaia.domain.network import policy_of
from gaia.domain.resources import ResourceVector
from gaia.domain.restarts import (
    BLACKLIST_CAUSES,
    DEFAULT_POLICY,
    RestartPolicy,
    backoff_delay,
    counts_for_blacklist,
    decide_restart,
    should_blacklist,
)
from gaia.domain.upgrades import (
    Prepull,
    UpgradeState,
    step_upgrade,
    template_to_prepull,
    upcoming,
)
from gaia.kube.labels import APP_LABEL as LABEL_APP
from gaia.kube.labels import INSTANCE_LABEL as LABEL_INSTANCE
from gaia.kube.labels import MANAGED_BY_LABEL as MANAGED_BY
from gaia.kube.labels import PROFILE_ANNOTATION
from gaia.kube.labels import VERSION_LABEL as LABEL_VERSION
from gaia.loop import LoopService
from gaia.providers.port import (
    ClusterProvider,
    ConfigData,
    ConfigRef,
    ImagePrewarmer,
    Instance,
    InstancePhase,
    InstanceSpec,
    NetworkMode,
    Node,
    PortSpec,
    ProbeKind,
    ProbeSpec,
    PullSecret,
    ServiceSpec,
)
from gaia.providers.registry import ProviderRegistry
from gaia.scheduler import (
    ClusterView,
    NodeView,
    Placement,
    PlacementRequest,
    Scheduler,
    Unschedulable,
)
from gaia.scheduler.placement import GaiaScheduler
from gaia.scheduler.port import eligible_zones
from gaia.security import SecretBox
from gaia.store import apps as store_apps
from gaia.store import businesses as store_businesses
from gaia.store import events as store_events
from gaia.store.apps import AppSnapshot, AppWritten, ChangeMark, ConfigSnapshot, Snapshot
from gaia.store.database import Database
from gaia.store.models import Cluster

log = logging.getLogger(__name__)

# Instance writes (creations, in-place image patches) in flight per app and pass. Far below the
# API server's in-flight limit (200 mutating requests by default), and high enough for quota
# admission: in a namespace with a ResourceQuota (every business's) the API server admits the
# pods waiting at one moment as one batch with one quota status write, so with 16 in flight a
# loaded server wrote the quota once per 3.6 pods and created 17 pods/s (bench/kube_scale.py).
CREATE_CONCURRENCY = 64
# Gray upgrade batches after the one in flight whose nodes pull the target image ahead of their
# turn: the next batch is enough when a pull is shorter than a restart; the one after it covers a
# pull up to two restarts long, and no more, so a paused upgrade has fetched little in vain.
PREWARM_BATCHES = 2
# A pre-pull wish that stands is said to the provider again this often: the P2P coordinator
# drops a declared job a day after it was last said (``SwarmCoordinator.prewarm_ttl_s``), and an
# app with ``prepull: templates`` may keep the same wish for weeks.
PREWARM_REPEAT = dt.timedelta(hours=1)
# How long an instance may wait for its node before the controller calls its placement
# interrupted: twice the longest a bind request may take (the kubernetes provider's HTTP timeout
# is 30 s), so a bind still in flight (a restart the API asked for, or a process on its way out
# during a rolling deploy) is never raced.
UNBOUND_GRACE = dt.timedelta(seconds=60)
# A cluster's events a pass writes at most (a new controller starts from the first one the
# provider still holds: a big cluster's take several passes)
EVENTS_PER_PASS = 10_000
# an app's look that knows no moment it must be looked at again by (the work queue backs off)
NO_DEADLINE = dt.datetime.max.replace(tzinfo=dt.UTC)


async def _bounded(calls: list[Coroutine[Any, Any, None]], *, what: str) -> None:
    """Await ``calls``, ``CREATE_CONCURRENCY`` at a time (within any API server's in-flight
    limits: 200 mutating requests by default). A failure does not stop the others; the first is
    raised once all have finished."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(call: Coroutine[Any, Any, None]) -> None:
        async with gate:
            await call

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    for failure in failures[1:]:
        log.warning("apps: %s failed: %s", what, failure)
    if failures:
        raise failures[0]


@dataclass(slots=True)
class PendingEvent:
    business: str
    object_kind: str
    object_name: str
    reason: str
    message: str
    type: str = "Normal"
    at: dt.datetime | None = None  # when it happened; default: when the pass writes it


@dataclass(slots=True)
class PassStats:
    """What one pass did (the benchmark and tests read it)."""

    apps: int = 0
    actions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: int = 0
    # apps (or clusters out of reach) that want another look soon even if nothing is heard of
    # them: anything not running as wished, an upgrade under way, a back-off or drain to wait
    unsettled: int = 0
    # a pass over the apps the work queue held due, not a full pass (``AppController``)
    partial: bool = False

    @property
    def settled(self) -> bool:
        """Nothing done, nothing failed, nothing left waiting: the next pass would change
        nothing unless something changes first."""
        return not self.errors and not self.unsettled and not any(self.actions.values())


@dataclass(frozen=True, slots=True)
class _Quiet:
    """What a settled pass saw, for ``AppController`` to tell whether the next tick needs one."""

    at: dt.datetime  # the pass's clock time
    changes: int  # ``AppController.changed`` calls seen by then
    mark: ChangeMark  # ``store.apps.change_mark`` read with its snapshot


@dataclass(slots=True)
class _ClusterMemory:
    """Per-cluster caches that only save work; losing them (a restart) is harmless."""

    provider: ClusterProvider | None = None
    event_seq: int = 0
    applied_configs: dict[tuple[str, str, bool], dt.datetime] = field(default_factory=dict)
    applied_quotas: dict[str, ResourceVector] = field(default_factory=dict)
    applied_services: dict[tuple[str, str], ServiceSpec] = field(default_factory=dict)
    # (namespace, app) -> the pre-pull last asked of the provider, (image, nodes), and when
    applied_prewarms: dict[tuple[str, str], tuple[tuple[str, frozenset[str]], dt.datetime]] = field(
        default_factory=dict
    )


class _Room:
    """One cluster's nodes and what holds them, for placement, read once a pass when an app
    first needs it: a pass whose apps only wait, restart or move in place never reads the nodes
    nor builds the scheduler's view, and a partial pass never lists the whole cluster for them.
    A full pass lists every instance first (``list``: orphans, every app's own) and the view is
    built from that listing, unless an instance was deleted since (then listed again: the
    listing no longer says what holds the nodes). Beside the view it keeps the cards each
    business holds per GPU model, for the per-model limits (heterogeneous GPUs)."""

    def __init__(self, provider: ClusterProvider) -> None:
        self._provider = provider
        self._view: ClusterView | None = None
        self._observed: list[Instance] | None = None
        self._stale = False
        # node -> its GPU model; cards held per (namespace, model)
        self._model_of: dict[str, str] = {}
        self._gpu_use: Counter[tuple[str, str]] = Counter()

    async def list(self) -> list[Instance]:
        """Every instance of the cluster, read now."""
        self._observed = await self._provider.list_instances()
        self._stale = False
        return self._observed

    async def view(self) -> ClusterView:
        if self._view is None:
            self._view = await self._build()
        return self._view

    async def _build(self) -> ClusterView:
        nodes = await self._provider.list_nodes()
        observed = self._observed
        if observed is None or self._stale:
            observed = await self.list()
        view = ClusterView(node_view(n) for n in nodes)
        # the cores exclusive instances hold, rebuilt from what runs (survives a restart)
        for inst in observed:
            view.hold_cores(inst.node, inst.resources, inst.cpu_ids)
        self._model_of = {n.name: n.gpus[0].model for n in nodes if n.gpus}
        self._gpu_use = Counter()
        for inst in observed:
            self._hold_gpus(inst.namespace, inst.node, inst.resources.gpu)
        return view

    def gpu_budget(self, namespace: str, limits: Mapping[str, int]) -> dict[str, int]:
        """The cards ``namespace`` may still take per GPU model, under its ``limits``."""
        return {model: limit - self._gpu_use[(namespace, model)] for model, limit in limits.items()}

    def bind(self, namespace: str, placement: Placement, resources: ResourceVector) -> None:
        """Hold a placement's room in the view and its cards against the per-model limits, so
        the next placement of this pass sees the node fuller."""
        assert self._view is not None  # placed on it
        self._view.bind(placement, resources)
        self._hold_gpus(namespace, placement.node, resources.gpu)

    def release(self, inst: Instance) -> None:
        """A deleted instance's room is free again for placements later in this pass (not
        read yet: the read, when it comes, lists the instances again)."""
        if self._view is None:
            self._stale = True
            return
        self._view.release(inst.node, inst.resources, inst.gpu_ids, inst.cpu_ids)
        self._hold_gpus(inst.namespace, inst.node, -inst.resources.gpu)

    def _hold_gpus(self, namespace: str, node: str, cards: int) -> None:
        model = self._model_of.get(node)
        if model and cards:
            self._gpu_use[(namespace, model)] += cards


class AppController(LoopService):
    name = "apps"

    def __init__(
        self,
        *,
        db: Database,
        providers: ProviderRegistry,
        secrets: SecretBox,
        clock: Clock,
        scheduler: Scheduler | None = None,
        interval: float = 2.0,
        policy: RestartPolicy = DEFAULT_POLICY,
        unbound_grace: dt.timedelta = UNBOUND_GRACE,
        pull_secret_for: Callable[[str], PullSecret | None] | None = None,
        access: AccessGateway | None = None,
        prewarm_batches: int = PREWARM_BATCHES,
        resync: float | None = None,
        on_quiet: Callable[[], None] | None = None,
        on_pass: Callable[[bool, int], None] | None = None,
    ) -> None:
        super().__init__(interval=interval)
        # None: every tick is a full pass (tests and benchmarks drive passes by hand). Seconds:
        # the caller wires ``changed()`` to every instance change and API write, and a tick
        # after a full pass is another only if something changed that is no one app's
        # (``changed()``, the store's changes: ``run_once``) or ``resync`` seconds have passed
        # since the last one; changes of some apps are looked at in a partial pass.
        self.resync = resync
        # with a resync: the apps (and clusters) that want another look between full passes
        self.queue = WorkQueue(base=interval, cap=max(interval, resync or interval))
        self.partial_passes = 0  # passes over the queue's due apps only
        self._again = False  # the last full pass failed at something only a full pass does
        self._change_count = itertools.count(1)
        self._changes = 0
        # what was heard since the last tick, by app: instance changes (cluster id, namespace,
        # app) and the API's own writes (``AppWritten``)
        self._heard: set[tuple[int, str, str] | AppWritten] = set()
        self._heard_lock = threading.Lock()
        # the apps the controller has seen (the last full pass, and partial passes since): each
        # app's id by its key and by its (namespace, name), and its cluster
        self._app_of: dict[tuple[int, str, str], int] = {}
        self._app_named: dict[tuple[str, str], int] = {}
        self._cluster_of: dict[int, int] = {}
        # apps whose last look left an instance unplaced: room freed in their cluster (an
        # instance or app there heard of) may place it, so they are looked at with those
        self._wants_room: set[int] = set()
        self._quiet: _Quiet | None = None
        self.quiet_ticks = 0  # ticks that found nothing changed and did no pass
        self.on_quiet = on_quiet  # told of each quiet tick (the platform's metric)
        self.on_pass = on_pass  # told of each pass: (partial, keys in the queue) (metrics)
        self.prewarm_batches = prewarm_batches
        # the access layer (domains, the load balancer): drains before a stop (None: none)
        self.access = access
        # the platform registry's credentials for a business's instances (None: no registry)
        self.pull_secret_for = pull_secret_for or (lambda _business: None)
        self.db = db
        self.providers = providers
        self.secrets = secrets
        self.clock = clock
        self.scheduler: Scheduler = scheduler or GaiaScheduler()
        self.policy = policy
        self.unbound_grace = unbound_grace
        self.passes = 0
        self.last = PassStats()
        self._memory: dict[int, _ClusterMemory] = {}

    def changed(self, about: Any = None) -> None:
        """Something the controller reads changed. ``about`` None (a node, an API write that is
        no one app's): the next tick is a full pass. ``about`` an instance's (cluster id,
        namespace, app) (``ProviderRegistry.watch_changes``) or an API write to one app
        (``AppWritten``): the next tick looks at that app (with the queue's due ones, and those
        waiting for room in its cluster), or makes a full pass if the app is not one the
        controller has seen. Any thread may call it."""
        if about is None:
            self._changes = next(self._change_count)
            return
        with self._heard_lock:
            self._heard.add(about)

    def forget(self) -> None:
        """The next tick is a full pass whatever was seen before (a new term as leader: the
        previous leader may have changed the clusters meanwhile)."""
        self._quiet = None
        self.queue.clear()
        self._take_heard()

    def _take_heard(self) -> set[tuple[int, str, str] | AppWritten]:
        with self._heard_lock:
            heard, self._heard = self._heard, set()
        return heard

    def _looks(
        self, heard: set[tuple[int, str, str] | AppWritten], stored: set[int]
    ) -> set[int] | None:
        """The ids of the apps heard of (``heard``) or changed in the store (``stored``), and of
        the apps waiting for room in their clusters; None if one heard of is no app the
        controller has seen (a new app, an orphan's instance): only a full pass can tell whose
        it is."""
        ids = set(stored)
        for key in heard:
            if isinstance(key, AppWritten):
                app_id = self._app_named.get((key.namespace, key.name))
            else:
                app_id = self._app_of.get(key)
            if app_id is None:
                return None
            ids.add(app_id)
        if ids and self._wants_room:
            clusters = {self._cluster_of.get(i) for i in ids}
            ids |= {i for i in self._wants_room if self._cluster_of.get(i) in clusters}
        return ids

    def _store_changes(
        self, since: ChangeMark, now: dt.datetime
    ) -> tuple[ChangeMark, set[int] | None]:
        with self.db.read_session() as session:
            return store_apps.changed_apps(session, since=since, now=now)

    async def run_once(self) -> None:
        self.providers.catch_up()  # a simulated cluster's changes due by now are heard now
        # before anything is read: a change from now on is seen next tick
        changes = self._changes
        heard = self._take_heard()
        now = self.clock.now()
        quiet = self._quiet
        if (
            quiet is not None
            and self.resync is not None
            and changes == quiet.changes
            and (now - quiet.at).total_seconds() < self.resync
        ):
            # what the store says changed since: the apps it concerns, or None (a change
            # that is no one app's, which only a full pass reads)
            mark, stored = await asyncio.to_thread(self._store_changes, quiet.mark, now)
            looks = None if stored is None else self._looks(heard, stored)
            if looks is not None:
                self._quiet = quiet = replace(quiet, mark=mark)  # those changes are seen now
            due = self.queue.due(now)
            if looks is not None and not due and not looks:
                self.quiet_ticks += 1
                if self.on_quiet is not None:
                    self.on_quiet()
                return
            if looks is not None and all(kind == "app" for kind, _ in due):
                # only some apps want a look (heard of, or due): those, not the platform
                try:
                    await self._pass(now, only={key for _, key in due} | looks)
                except BaseException:
                    self._quiet = None  # what it was to look at is not lost: a full pass next
                    raise
                if self._again:
                    self._quiet = None  # the access layer failed: the next tick is a full pass
                return
        self._quiet = None
        mark = await self._pass(now, only=None)
        if self.resync is not None and not self._again:
            # what is not yet as wished is in the queue; an error it could not key (the
            # access layer, a cluster's own) makes the next tick a full pass again
            self._quiet = _Quiet(at=now, changes=changes, mark=mark)

    async def _pass(self, now: dt.datetime, *, only: set[int] | None) -> ChangeMark:
        """A full pass (``only`` None), or one over the apps ``only`` names: their own instances
        are listed (their clusters whole only if one places an instance: placement needs every
        node and instance) and nothing cluster-wide is done (orphans, configs, quotas, dropping
        the access layer's gone apps: a full pass does those)."""
        mark, snapshot = await asyncio.to_thread(self._load, now, only)
        stats = PassStats(apps=len(snapshot.apps), partial=only is not None)
        self._again = False
        by_cluster: dict[int, list[AppSnapshot]] = defaultdict(list)
        for app in snapshot.apps:
            by_cluster[app.cluster_id].append(app)
        for cluster_id, cluster in snapshot.clusters.items():
            apps = by_cluster.get(cluster_id, [])
            if not apps and (
                only is not None or (cluster.kind != "sim" and not snapshot.quotas.get(cluster_id))
            ):
                continue  # nothing of ours to look after there
            key: Key = ("cluster", cluster_id)
            try:
                await self._reconcile_cluster(cluster, apps, snapshot, stats, partial=stats.partial)
            except ConnectionError as exc:
                stats.unsettled += 1  # tried again after a back-off
                self._cluster_failed(key, apps, now)
                log.info("apps: cluster %s unreachable: %s", cluster.name, exc)
            except GaiaError as exc:
                stats.errors += 1
                self._cluster_failed(key, apps, now)
                log.warning("apps: cluster %s: %s", cluster.name, exc)
        served = _served(snapshot)
        unserved: set[AppKey] = set()
        if self.access is not None and only is not None:
            # a partial pass's apps that the access layer serves no more (a domain taken
            # away, an app deleted or gone)
            names = {cid: c.name for cid, c in snapshot.clusters.items()}
            looked = {
                AppKey(names[cid], namespace, name)
                for (cid, namespace, name), app_id in self._app_of.items()
                if app_id in only and cid in names
            }
            unserved = {key for key in looked - served if self.access.serves(key)}
        if self.access is not None and (only is None or served or unserved):
            # a partial pass brings the load balancer in line with what it saw of its apps
            # (an instance heard ready, a domain given or taken away)
            try:
                if only is None:
                    await self.access.sync(keep=served)
                else:
                    await self.access.sync(drop=unserved)
            except (OSError, AccessUnavailable) as exc:
                stats.errors += 1
                self._again = True  # no app to key it to: the next tick is a full pass
                log.warning("apps: the access layer: %s", exc)
        # apps that are gone, or whose cluster is (nothing would ever look at them)
        present: set[Key] = {
            ("app", app.id) for app in snapshot.apps if app.cluster_id in snapshot.clusters
        }
        if only is None:
            self.queue.keep_only(present | {("cluster", cid) for cid in snapshot.clusters})
            self._app_of, self._app_named, self._cluster_of = {}, {}, {}
            self._wants_room &= {a.id for a in snapshot.apps}
        for a in snapshot.apps:  # (a partial pass may load an app the last full one did not)
            self._app_of[(a.cluster_id, a.namespace, a.name)] = a.id
            self._app_named[(a.namespace, a.name)] = a.id
            self._cluster_of[a.id] = a.cluster_id
        if only is not None:
            gone = set(only) - {i for _, i in present}
            self.queue.drop({("app", i) for i in gone})
            self._wants_room -= gone
            self.partial_passes += 1
        self.passes += 1
        self.last = stats
        if self.on_pass is not None:
            self.on_pass(only is not None, len(self.queue))
        return mark

    def _cluster_failed(self, key: Key, apps: list[AppSnapshot], now: dt.datetime) -> None:
        """A cluster's look failed: it and its apps wait out a back-off (none of them is
        looked at every tick while the cluster is out of reach)."""
        self.queue.waiting(key, now=now)
        for app in apps:
            self.queue.waiting(("app", app.id), now=now, version=app.generation)

    def _load(self, now: dt.datetime, only: set[int] | None = None) -> tuple[ChangeMark, Snapshot]:
        """The store's change mark and, in the same read, the snapshot (a change committed
        between the two is in the snapshot but not the mark: one pass too many, never one
        too few); ``only``: of those apps."""
        with self.db.read_session() as session:
            mark = store_apps.change_mark(session, now=now)
            return mark, store_apps.load_snapshot(
                session,
                now=now,
                failure_memory=self.policy.memory,
                secrets=self.secrets,
                app_ids=only,
            )

    # ------------------------------------------------------------ one cluster

    async def _reconcile_cluster(
        self,
        cluster: Cluster,
        apps: list[AppSnapshot],
        snapshot: Snapshot,
        stats: PassStats,
        *,
        partial: bool = False,
    ) -> None:
        """Every app of ``cluster`` (``apps``) and what is the cluster's; ``partial``: only
        ``apps``, the work queue's due ones, and nothing cluster-wide (a full pass's work)."""
        provider = self.providers.for_cluster(cluster)
        memory = self._memory.get(cluster.id)
        if memory is None or memory.provider is not provider:
            memory = self._memory[cluster.id] = _ClusterMemory(provider=provider)
        pending: list[PendingEvent] = []
        by_app: dict[tuple[str, str], list[Instance]] = defaultdict(list)
        room = _Room(provider)
        if partial:
            # the due apps' own instances; the nodes and every instance only if one of them
            # needs room (a placement): an app that only waits or moves in place costs O(app)
            for app in apps:
                by_app[(app.namespace, app.name)] = await provider.list_instances(
                    namespace=app.namespace, app=app.name
                )
        else:
            observed = await room.list()
            for inst in observed:
                by_app[(inst.namespace, inst.app)].append(inst)
        known = {(a.namespace, a.name) for a in apps}

        if not partial:
            # instances the platform made for apps that no longer exist at all (a partial
            # pass knows only some apps: it must not take the others' for orphans)
            for (namespace, app_name), insts in by_app.items():
                if (namespace, app_name) in known:
                    continue
                for inst in insts:
                    if inst.labels.get(MANAGED_BY) == "gaia":
                        await provider.delete_instance(namespace=namespace, name=inst.name)
                        room.release(inst)
                        stats.actions["delete-orphan"] += 1
            await self._sync_configs(provider, memory, apps, snapshot.configs, pending)
            await self._sync_quotas(provider, memory, snapshot.quotas.get(cluster.id, {}), pending)
        failures = await asyncio.to_thread(self._record_failures, apps, by_app, pending)
        for app in apps:
            key: Key = ("app", app.id)
            done = sum(stats.actions.values()) - stats.actions["unschedulable"]
            unplaced = stats.actions["unschedulable"]
            try:
                look = await self._reconcile_app(
                    cluster=cluster.name,
                    provider=provider,
                    memory=memory,
                    app=app,
                    observed=by_app.get((app.namespace, app.name), []),
                    room=room,
                    new_failures=failures.get(app.id, {}),
                    pending=pending,
                    stats=stats,
                )
            except (GaiaError, ValueError, KeyError) as exc:
                stats.errors += 1
                # tried again after a back-off
                self.queue.waiting(key, now=self.clock.now(), version=app.generation)
                log.warning("apps: %s/%s: %s", app.namespace, app.name, exc)
                pending.append(
                    PendingEvent(
                        app.namespace, "App", app.name, "ReconcileError", str(exc), "Warning"
                    )
                )
                continue
            now = self.clock.now()
            if stats.actions["unschedulable"] > unplaced:
                self._wants_room.add(app.id)
            else:
                self._wants_room.discard(app.id)
            if look is None:
                self.queue.settled(key)
            elif sum(stats.actions.values()) - stats.actions["unschedulable"] > done:
                self.queue.acted(key, now=now, version=app.generation)
            else:
                self.queue.waiting(key, now=now, until=look, version=app.generation)
        # pre-pulls of apps that are gone altogether
        gone = [k for k in memory.applied_prewarms if k not in known] if not partial else []
        for namespace, name in gone:
            if isinstance(provider, ImagePrewarmer):
                await provider.prewarm_image(
                    namespace=namespace, owner=name, image="", nodes=frozenset()
                )
            del memory.applied_prewarms[(namespace, name)]
        if await self._flush_events(provider, memory, cluster, snapshot, pending):
            stats.unsettled += 1  # the cluster holds more events than a pass takes
            self.queue.acted(("cluster", cluster.id), now=self.clock.now())
        elif not partial:
            self.queue.settled(("cluster", cluster.id))

    async def _reconcile_app(
        self,
        *,
        cluster: str,
        provider: ClusterProvider,
        memory: _ClusterMemory,
        app: AppSnapshot,
        observed: list[Instance],
        room: _Room,
        new_failures: Mapping[int, int],
        pending: list[PendingEvent],
        stats: PassStats,
    ) -> dt.datetime | None:
        """Look at one app and act; None when it is as wished with nothing to wait for, else
        the latest moment it wants another look (``NO_DEADLINE``: none known; the work queue
        backs off)."""
        now = self.clock.now()
        if app.state == "deleting":
            stats.unsettled += 1  # until the purge, which ends the app
            for inst in observed:
                await provider.delete_instance(namespace=app.namespace, name=inst.name)
                room.release(inst)
                stats.actions["delete"] += 1
            await provider.delete_service(namespace=app.namespace, name=app.name)
            memory.applied_services.pop((app.namespace, app.name), None)
            await self._prewarm(provider, memory, app, wish=("", frozenset()))
            await asyncio.to_thread(self._purge, app.id)
            return NO_DEADLINE

        observed, unbound = await self._repair_unbound(provider, app, observed, now, stats)
        by_id = {inst.instance_id: inst for inst in observed}
        access_key = AppKey(cluster, app.namespace, app.name)
        access = self._observe_access(access_key, app, observed)
        upgrade_state = None
        if app.upgrade is not None:
            upgrade_state = await self._step_upgrade(app, by_id, pending)

        recent = dict(app.recent_failures)
        for iid, count in new_failures.items():
            recent[iid] = recent.get(iid, 0) + count
        desired = domain_apps.AppDesired(
            name=app.name,
            running=app.state == "running",
            instances=app.instances,
            templates=app.templates,
            stopped=app.stopped,
        )
        actions = domain_apps.reconcile_instances(
            desired=desired,
            observed=observed,
            recent_failures=recent,
            blacklist=app.blacklist,
            now=now,
            policy=self.policy,
        )
        creates: list[InstanceSpec] = []
        replaces: list[ReplaceImage] = []
        spread = _wants_spread(app)
        # the cluster's nodes and what holds them: read now if this app places anything (a
        # full pass has them already)
        view = await room.view() if spread or any(isinstance(a, Create) for a in actions) else None
        # zone spread: the app's instances per zone, kept current as this pass deletes and
        # places (None when no template asks for a spread)
        zone_use = _zone_use(app, observed, view) if spread and view is not None else None
        for action in actions:
            if (
                isinstance(action, (Delete, ReplaceImage, Restart))
                and access is not None
                and not await access.may_stop(access_key, action.name)
            ):
                stats.actions["draining"] += 1  # asked again next pass
                continue
            if isinstance(action, Delete):
                gone = by_id.get(action.instance_id)
                await provider.delete_instance(namespace=app.namespace, name=action.name)
                if gone is not None and gone.name == action.name:
                    room.release(gone)
                    if zone_use is not None and view is not None and gone.node in view.by_name:
                        zone_use[view.by_name[gone.node].zone] -= 1
                stats.actions["delete"] += 1
            elif isinstance(action, Create):
                assert view is not None  # read above: the actions hold a Create
                spec = self._place(app, action, view, room, pending, zone_use)
                name = domain_apps.instance_name(app.name, action.instance_id)
                if name in unbound:
                    pending.append(_left_unbound_event(app.namespace, name, unbound[name], spec))
                if spec is None:
                    stats.actions["unschedulable"] += 1
                else:
                    creates.append(spec)
            elif isinstance(action, ReplaceImage):
                replaces.append(action)
            elif isinstance(action, Restart):
                await provider.restart_instance(namespace=app.namespace, name=action.name)
                stats.actions["restart"] += 1
        if replaces:
            stats.actions["replace-image"] += await self._replace_all(
                provider, app, replaces, pending
            )
        if creates:
            stats.actions["create"] += await self._create_all(provider, creates)
        if app.state == "running":
            await self._ensure_service(provider, memory, app)
        if app.upgrade is None or upgrade_state is not None:
            # (a step not written leaves the last wish standing until the next pass)
            wish = self._prewarm_wish(app, by_id, upgrade_state)
            await self._prewarm(provider, memory, app, wish=wish)
        if (
            actions
            or unbound
            or app.upgrade is not None
            or not all(i.phase is InstancePhase.RUNNING and i.ready for i in observed)
        ):
            # something to do or to wait for (a start, a probe, a back-off, a batch): in the
            # work queue, looked at again before anything is heard of it
            stats.unsettled += 1
            restart = domain_apps.restart_due(
                desired=desired,
                observed=observed,
                recent_failures=recent,
                blacklist=app.blacklist,
                now=now,
                policy=self.policy,
            )
            return NO_DEADLINE if restart is None else restart
        return None

    def _observe_access(
        self, key: AppKey, app: AppSnapshot, observed: list[Instance]
    ) -> AccessGateway | None:
        """Hand the access layer the instances of an app it serves (one with a domain and a
        port); the gateway, or None when the app is not served."""
        port = _access_port(app)
        if self.access is None or not app.domain or port is None:
            return None
        seen = [
            Seen(
                name=inst.name,
                ip=inst.pod_ip,
                ready=inst.ready and inst.phase is InstancePhase.RUNNING,
                started_at=inst.started_at,
                restarts=inst.restarts,
            )
            for inst in observed
        ]
        self.access.observe(key, domain=app.domain, port=port, seen=seen)
        return self.access

    async def _repair_unbound(
        self,
        provider: ClusterProvider,
        app: AppSnapshot,
        observed: list[Instance],
        now: dt.datetime,
        stats: PassStats,
    ) -> tuple[list[Instance], dict[str, dt.timedelta]]:
        """Delete the app's wanted instances whose placement was interrupted (see the module
        docstring); returns the instances left and, per deleted name, how long it had waited.
        The deleted ones are left out of what the reconcile sees, so it places and creates them
        again in this pass, on the current view of the nodes. Unwanted ones are left to the
        reconcile, which deletes them anyway."""
        wanted = app.instances if app.state == "running" else {}
        kept: list[Instance] = []
        unbound: dict[str, dt.timedelta] = {}
        for inst in observed:
            waited = unbound_for(inst, now=now)
            if (
                waited is None
                or waited < self.unbound_grace
                or inst.instance_id not in wanted
                or inst.instance_id in app.stopped
            ):
                kept.append(inst)
                continue
            await provider.delete_instance(namespace=app.namespace, name=inst.name)
            unbound[inst.name] = waited
            stats.actions["delete-unbound"] += 1
        return kept, unbound

    async def _step_upgrade(
        self, app: AppSnapshot, by_id: dict[int, Instance], pending: list[PendingEvent]
    ) -> UpgradeState | None:
        """One step of the app's upgrade; its state after the step (None: not written, the
        app changed under us)."""
        upgrade = app.upgrade
        assert upgrade is not None
        step = step_upgrade(upgrade.plan, instances=app.instances, observed=by_id)
        if (
            not step.assignments
            and step.state == upgrade.plan.state
            and step.message == upgrade.message
        ):
            return step.state
        generation = await asyncio.to_thread(
            self._write_upgrade, app, upgrade.id, step.assignments, step.state, step.message
        )
        if generation is None:
            return None  # the app changed under us; plan again next pass with fresh data
        app.generation = generation
        for iid, version in step.assignments.items():
            app.instances[iid] = version
        if step.state != upgrade.plan.state:
            kind = "Warning" if step.state is UpgradeState.PAUSED else "Normal"
            text = step.message or (
                f"upgrade to {upgrade.plan.target}: {step.state} "
                f"({step.progress.done}/{step.progress.total} instances)"
            )
            pending.append(
                PendingEvent(app.namespace, "App", app.name, f"Upgrade{step.state}", text, kind)
            )
        if step.assignments:
            ids = ", ".join(map(str, sorted(step.assignments)))
            goal = next(iter(step.assignments.values()))
            pending.append(
                PendingEvent(
                    app.namespace,
                    "App",
                    app.name,
                    "UpgradeBatch",
                    f"moving instance(s) {ids} to {goal}",
                )
            )
        return step.state

    def _prewarm_wish(
        self, app: AppSnapshot, by_id: Mapping[int, Instance], state: UpgradeState | None
    ) -> tuple[str, frozenset[str]]:
        """The image the next batches of a running upgrade will need, and the nodes that will
        need it: those of the batches' instances that move in place (an instance recreated
        lands wherever the scheduler puts it, so its node now tells nothing). With no upgrade
        in flight, for an app with ``Prepull.TEMPLATES``: its newest version that no instance
        is assigned yet, onto the nodes of its running instances that would move to it in
        place (``template_to_prepull``); nothing for ``Prepull.OFF``."""
        upgrade = app.upgrade
        if app.prepull is Prepull.OFF or app.state != "running":
            return ("", frozenset())
        if upgrade is None and app.prepull is Prepull.TEMPLATES:
            return _template_wish(app, by_id)
        if upgrade is None or state is not UpgradeState.RUNNING:
            return ("", frozenset())
        plan = upgrade.plan
        target = app.templates.get(plan.target)
        if target is None:
            return ("", frozenset())
        # the versions an instance moves from in place (a few templates, compared once a pass)
        in_place = {name for name, t in app.templates.items() if t.same_shape(target)}
        plan_now = replace(plan, state=state)
        # the batch in flight (assigned the target, not running it yet) keeps its nodes in the
        # wish: a pre-pull called off there would stop the layers it has begun, which the
        # instance's own pull, a watch later, would then fetch again from the start
        moving = [i for i in plan.instance_ids if app.instances.get(i) == plan.target]
        nodes = set()
        for iid in itertools.chain(
            moving, upcoming(plan_now, instances=app.instances, batches=self.prewarm_batches)
        ):
            inst = by_id.get(iid)
            if (
                inst is not None
                and inst.node
                and inst.version != plan.target
                and inst.version in in_place
            ):
                nodes.add(inst.node)
        if not nodes:
            return ("", frozenset())
        return (target.image, frozenset(nodes))

    async def _prewarm(
        self,
        provider: ClusterProvider,
        memory: _ClusterMemory,
        app: AppSnapshot,
        *,
        wish: tuple[str, frozenset[str]],
    ) -> None:
        key = (app.namespace, app.name)
        now = self.clock.now()
        applied = memory.applied_prewarms.get(key)
        if applied is None and not wish[1]:
            return  # nothing asked, nothing wished
        if applied is not None and applied[0] == wish and now - applied[1] < PREWARM_REPEAT:
            return
        if not isinstance(provider, ImagePrewarmer):
            return
        image, nodes = wish
        await provider.prewarm_image(
            namespace=app.namespace, owner=app.name, image=image, nodes=nodes
        )
        if nodes:
            memory.applied_prewarms[key] = (wish, now)
        else:
            memory.applied_prewarms.pop(key, None)

    def _write_upgrade(
        self,
        app: AppSnapshot,
        upgrade_id: int,
        assignments: dict[int, str],
        state: str,
        message: str,
    ) -> int | None:
        with self.db.write_session() as session:
            return store_apps.apply_upgrade_step(
                session,
                app_id=app.id,
                upgrade_id=upgrade_id,
                generation=app.generation,
                assignments=assignments,
                state=state,
                message=message,
                now=self.clock.now(),
            )

    def _purge(self, app_id: int) -> None:
        with self.db.write_session() as session:
            store_apps.purge_app(session, app_id)

    # ------------------------------------------------------------ failures

    def _record_failures(
        self,
        apps: list[AppSnapshot],
        by_app: Mapping[tuple[str, str], list[Instance]],
        pending: list[PendingEvent],
    ) -> dict[int, dict[int, int]]:
        """Store each failure once; emit BackOff/Blacklisted; returns new failures per app."""
        failed = [
            (app, inst)
            for app in apps
            for inst in by_app.get((app.namespace, app.name), [])
            if inst.phase == "Failed" and inst.last_failure is not None
        ]
        if not failed:
            return {}
        now = self.clock.now()
        new: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        with self.db.write_session() as session:
            for app, inst in failed:
                failure = inst.last_failure
                assert failure is not None
                if not store_apps.record_failure(
                    session,
                    app_id=app.id,
                    instance_id=inst.instance_id,
                    node=inst.node,
                    cause=str(failure.cause),
                    exit_code=failure.exit_code,
                    message=failure.message,
                    at=failure.at,
                ):
                    continue
                new[app.id][inst.instance_id] += 1
                count = app.recent_failures.get(inst.instance_id, 0) + new[app.id][inst.instance_id]
                blacklisted = inst.node in app.blacklist or self._maybe_blacklist(
                    session, app, inst.node, str(failure.cause), now, pending
                )
                decision = decide_restart(
                    cause=str(failure.cause),
                    recent_failures=count,
                    node_blacklisted=blacklisted,
                    policy=self.policy,
                )
                detail = failure.message or str(failure.cause)
                if failure.exit_code is not None and str(failure.exit_code) not in detail:
                    detail += f" (exit code {failure.exit_code})"
                if decision.action.value == "reschedule":
                    text = f"{detail}; rescheduling on another node: {decision.reason}"
                    reason = "Rescheduling"
                else:
                    seconds = int(backoff_delay(count, self.policy).total_seconds())
                    text = f"{detail}; {decision.reason}, next try in {seconds}s"
                    reason = "BackOff"
                pending.append(
                    PendingEvent(app.namespace, "Instance", inst.name, reason, text, "Warning")
                )
        return {k: dict(v) for k, v in new.items()}

    def _maybe_blacklist(
        self,
        session: Session,
        app: AppSnapshot,
        node: str,
        cause: str,
        now: dt.datetime,
        pending: list[PendingEvent],
    ) -> bool:
        """Blacklist ``node`` for the app when its failures there reach the threshold."""
        if not counts_for_blacklist(cause):
            return False
        policy = self.policy
        on_node = store_apps.failures_on_node(
            session,
            app_id=app.id,
            node=node,
            causes=frozenset(c.value for c in BLACKLIST_CAUSES),
            since=now - policy.blacklist_window,
        )
        window, ttl = _minutes(policy.blacklist_window), _minutes(policy.blacklist_ttl)
        if not should_blacklist(on_node, policy) or not store_apps.blacklist_node(
            session,
            app_id=app.id,
            node=node,
            failures=on_node,
            reason=f"{on_node} failures in {window}",
            now=now,
            ttl=policy.blacklist_ttl,
        ):
            return False
        app.blacklist = app.blacklist | {node}
        pending.append(
            PendingEvent(
                app.namespace,
                "App",
                app.name,
                "Blacklisted",
                f"node {node} blacklisted for {ttl} after {on_node} failures in {window}; "
                "new instances avoid it",
                "Warning",
            )
        )
        return True

    # ------------------------------------------------------------ creating instances

    def _place(
        self,
        app: AppSnapshot,
        action: Create,
        view: ClusterView,
        room: _Room,
        pending: list[PendingEvent],
        zone_use: Counter[str] | None = None,
    ) -> InstanceSpec | None:
        """Place one new instance on ``view`` (``room``'s) and hold its room there (and its
        GPUs against the per-model limits, and its zone in ``zone_use``) at once, so the next
        placement of this pass sees the node fuller; None when it fits nowhere (a
        FailedScheduling event says why)."""
        template = app.templates.get(action.version)
        name = domain_apps.instance_name(app.name, action.instance_id)
        if template is None:
            return None
        zone_counts = None
        if zone_use is not None and template.body.get("zone_max_skew"):
            zones = eligible_zones(
                view,
                node_selector=dict(template.body.get("node_selector") or {}),
                avoid_nodes=action.avoid_nodes,
            )
            zone_counts = {zone: zone_use[zone] for zone in zones}
        request = placement_request(
            template,
            name=f"{app.namespace}/{name}",
            avoid_nodes=action.avoid_nodes,
            gpu_model_budget=room.gpu_budget(app.namespace, app.gpu_model_limits),
            subnets=floating_ip_subnets(app, template, action.instance_id),
            zone_counts=zone_counts,
        )
        try:
            placement = self.scheduler.place(request, view)
        except Unschedulable as exc:
            pending.append(
                PendingEvent(
                    app.namespace, "Instance", name, "FailedScheduling", str(exc), "Warning"
                )
            )
            return None
        room.bind(app.namespace, placement, template.resources)
        if zone_use is not None and placement.node in view.by_name:
            zone_use[view.by_name[placement.node].zone] += 1
        return build_instance_spec(
            namespace=app.namespace,
            app=app.name,
            instance_id=action.instance_id,
            template=template,
            placement=placement,
            pull_secret=self.pull_secret_for(app.namespace),
        )

    async def _create_all(self, provider: ClusterProvider, specs: list[InstanceSpec]) -> int:
        """Create placed instances, ``CREATE_CONCURRENCY`` at a time (on a real cluster each is
        an API round trip); returns how many were created. A failure does not stop the
        others; the first is raised once all have finished, as one failed create did before."""

        async def one(spec: InstanceSpec) -> None:
            await provider.create_instance(spec)

        await _bounded([one(spec) for spec in specs], what="create")
        return len(specs)

    async def _replace_all(
        self,
        provider: ClusterProvider,
        app: AppSnapshot,
        actions: list[ReplaceImage],
        pending: list[PendingEvent],
    ) -> int:
        """Patch the images of an upgrade batch in place, ``CREATE_CONCURRENCY`` at a time (a
        batch of 250 one after the other is 250 round trips in series); an event for each one
        done. Failures as in ``_create_all``."""

        async def one(action: ReplaceImage) -> None:
            await provider.replace_image(
                namespace=app.namespace,
                name=action.name,
                image=action.image,
                version=action.version,
            )
            pending.append(
                PendingEvent(
                    app.namespace,
                    "Instance",
                    action.name,
                    "InPlaceUpgrade",
                    f"upgrading in place from {action.from_version} to {action.version} "
                    f"(image {action.image}); node, IP and GPUs are kept",
                )
            )

        await _bounded([one(action) for action in actions], what="in-place upgrade")
        return len(actions)

    async def _sync_quotas(
        self,
        provider: ClusterProvider,
        memory: _ClusterMemory,
        quotas: Mapping[str, ResourceVector],
        pending: list[PendingEvent],
    ) -> None:
        """Mirror each business's quota into the cluster (defence in depth) when it changed.
        A namespace the provider refuses to touch (``NotManaged``: not Gaia's) is that
        business's Warning event and stalls no other business."""
        for namespace, hard in sorted(quotas.items()):
            if memory.applied_quotas.get(namespace) == hard:
                continue
            try:
                await provider.apply_quota(namespace=namespace, hard=hard)
            except NotManaged as exc:
                pending.append(
                    PendingEvent(
                        namespace, "Business", namespace, "NotManaged", str(exc), "Warning"
                    )
                )
                continue
            memory.applied_quotas[namespace] = hard

    async def _sync_configs(
        self,
        provider: ClusterProvider,
        memory: _ClusterMemory,
        apps: list[AppSnapshot],
        configs: Mapping[tuple[str, str, bool], ConfigSnapshot],
        pending: list[PendingEvent],
    ) -> None:
        wanted = {
            (app.namespace, ref["name"], bool(ref.get("secret", False)))
            for app in apps
            for template in app.templates.values()
            for ref in template.body.get("configs", [])
        }
        for key in sorted(wanted):
            config = configs.get(key)
            if config is None or memory.applied_configs.get(key) == config.updated_at:
                continue
            try:
                await provider.apply_config(
                    ConfigData(
                        namespace=config.namespace,
                        name=config.name,
                        secret=config.secret,
                        data=config.data,
                    )
                )
            except NotManaged as exc:  # someone else's object: that business's warning only
                kind = "Secret" if config.secret else "ConfigMap"
                pending.append(
                    PendingEvent(
                        config.namespace, kind, config.name, "NotManaged", str(exc), "Warning"
                    )
                )
                continue
            memory.applied_configs[key] = config.updated_at

    async def _ensure_service(
        self, provider: ClusterProvider, memory: _ClusterMemory, app: AppSnapshot
    ) -> None:
        template = app.templates.get(app.default_template)
        ports = tuple(_ports(template.body)) if template else ()
        spec = ServiceSpec(
            namespace=app.namespace, name=app.name, app=app.name, ports=ports, domain=app.domain
        )
        if memory.applied_services.get((app.namespace, app.name)) == spec:
            return
        await provider.apply_service(spec)
        memory.applied_services[(app.namespace, app.name)] = spec

    # ------------------------------------------------------------ events

    async def _flush_events(
        self,
        provider: ClusterProvider,
        memory: _ClusterMemory,
        cluster: Cluster,
        snapshot: Snapshot,
        pending: list[PendingEvent],
    ) -> bool:
        """Write the pass's events and the cluster's new ones; whether the cluster has more
        than one pass takes (``EVENTS_PER_PASS``: the rest go in the next)."""
        cluster_events = await provider.events(since=memory.event_seq, limit=EVENTS_PER_PASS)
        for ev in cluster_events:
            memory.event_seq = max(memory.event_seq, ev.seq)
            pending.append(
                PendingEvent(
                    ev.namespace,
                    ev.object_kind,
                    ev.object_name,
                    ev.reason,
                    ev.message,
                    ev.type,
                    ev.at,
                )
            )
        if pending:
            await asyncio.to_thread(self._write_events, cluster.name, snapshot.businesses, pending)
        return len(cluster_events) >= EVENTS_PER_PASS

    def _write_events(
        self, cluster: str, businesses: Mapping[str, int], pending: list[PendingEvent]
    ) -> None:
        now = self.clock.now()
        with self.db.write_session() as session:
            # the snapshot names the businesses with apps or quotas; an event in another
            # namespace (rare) has its business looked up here
            unknown = {
                ev.business for ev in pending if ev.business and ev.business not in businesses
            }
            if unknown:
                businesses = {**businesses, **store_businesses.ids_by_name(session, unknown)}
            batch = [
                store_events.NewEvent(
                    object_kind=ev.object_kind,
                    object_name=ev.object_name,
                    reason=ev.reason,
                    message=ev.message[:2000],
                    type="Warning" if ev.type == "Warning" else "Normal",
                    business_id=businesses.get(ev.business),
                    business=ev.business,
                    cluster=cluster,
                    at=ev.at or now,
                )
                for ev in pending
            ]
            store_events.emit_many(session, batch)


def _access_port(app: AppSnapshot) -> int | None:
    """The port the balancer sends an app's requests to: the default template's first TCP
    port (None: it has none)."""
    template = app.templates.get(app.default_template)
    if template is None:
        return None
    return next((p.port for p in _ports(template.body) if p.protocol.upper() == "TCP"), None)


def _served(snapshot: Snapshot) -> set[AppKey]:
    """The apps the access layer serves: running or stopped, with a domain and a port."""
    out = set()
    for app in snapshot.apps:
        cluster = snapshot.clusters.get(app.cluster_id)
        if cluster is not None and app.domain and app.state != "deleting" and _access_port(app):
            out.add(AppKey(cluster.name, app.namespace, app.name))
    return out


def unbound_for(inst: Instance, *, now: dt.datetime) -> dt.timedelta | None:
    """How long ``inst`` has waited for a node since it was created, or None when it is not
    waiting for one (it is bound, finished, terminating, or its creation time is unknown)."""
    if inst.phase != InstancePhase.SCHEDULED or inst.node or inst.created_at is None:
        return None
    return now - inst.created_at


# an instance in these phases holds its image: its node's link is free for a pre-pull
_PULLED = frozenset({InstancePhase.CREATED, InstancePhase.RUNNING, InstancePhase.TERMINATING})


def _template_wish(app: AppSnapshot, by_id: Mapping[int, Instance]) -> tuple[str, frozenset[str]]:
    """``Prepull.TEMPLATES`` with no upgrade in flight: the newest version no instance is
    assigned yet, onto the nodes of the instances that would move to it in place, once their
    own image is there (created or running). A node where an instance of the app waits for its
    pull, or failed, is left out until then: the pre-pull would share the node's link with
    that instance's own pull and slow it down."""
    name = template_to_prepull(app.templates, app.instances)
    if name is None:
        return ("", frozenset())
    target = app.templates[name]
    in_place = {v for v, t in app.templates.items() if t.same_shape(target)}
    nodes: set[str] = set()
    busy: set[str] = set()
    for inst in by_id.values():
        if not inst.node:
            continue
        if inst.phase not in _PULLED:
            busy.add(inst.node)
        elif app.instances.get(inst.instance_id) in in_place:
            nodes.add(inst.node)
    nodes -= busy
    return (target.image, frozenset(nodes)) if nodes else ("", frozenset())


def _left_unbound_event(
    namespace: str, name: str, waited: dt.timedelta, spec: InstanceSpec | None
) -> PendingEvent:
    text = (
        f"pod {name} was left unbound by an interrupted placement (created "
        f"{int(waited.total_seconds())}s ago, never bound to a node); deleted it and "
    )
    if spec is None:
        text += "it is created again once it can be placed"
    else:
        cards = f" with GPU(s) {', '.join(map(str, spec.gpu_ids))}" if spec.gpu_ids else ""
        text += f"recreated it on node {spec.node}{cards}"
    return PendingEvent(namespace, "Instance", name, "LeftUnbound", text, "Warning")


def _minutes(delta: dt.timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)}m"


def node_view(node: Node, *, empty: bool = False) -> NodeView:
    """The scheduler's view of one provider node; ``empty``: as if nothing ran on it (its
    capacity free), which is what the API's check "could one instance ever fit" asks about.
    A card the node side reports unhealthy has nothing free (a sick card may be repaired, so
    the "ever fit" question still counts it)."""
    if empty:
        return NodeView(
            name=node.name,
            ready=node.ready,
            schedulable=node.schedulable,
            free=node.capacity,
            zone=node.zone,
            labels=node.labels,
            gpu_free={g.index: 100 for g in node.gpus},
            gpu_links=node.gpu_links,
            gpu_memory_total={g.index: g.memory_mib for g in node.gpus},
            gpu_memory_free={g.index: g.memory_mib for g in node.gpus},
            gpu_model=node.gpus[0].model if node.gpus else "",
            gpu_cpus={g.index: g.cpu_ids for g in node.gpus if g.cpu_ids},
        )
    gpu_free = {g.index: 100 - node.gpu_used.get(g.index, 0) if g.healthy else 0 for g in node.gpus}
    return NodeView(
        name=node.name,
        ready=node.ready,
        schedulable=node.schedulable,
        free=node.free,
        zone=node.zone,
        labels=node.labels,
        gpu_free=gpu_free,
        gpu_links=node.gpu_links,
        gpu_memory_total={g.index: g.memory_mib for g in node.gpus},
        gpu_memory_free={
            g.index: g.memory_mib - node.gpu_memory_used.get(g.index, 0) if g.healthy else 0
            for g in node.gpus
        },
        gpu_model=node.gpus[0].model if node.gpus else "",
        gpu_cpus={g.index: g.cpu_ids for g in node.gpus if g.cpu_ids},
        used_cpu=node.allocated.cpu,
        used_memory=node.allocated.memory,
    )


def floating_ip_subnets(
    app: AppSnapshot, template: TemplateSpec, instance_id: int
) -> frozenset[str] | None:
    """Where a floating-IP instance may run: the subnet of the address it keeps (it keeps it
    when rescheduled), else the subnets of the pools with a free address (in the template's
    zone, if it names one). None for the other network modes: any node."""
    if policy_of(template.body) is None:
        return None
    kept = app.ip_subnets.get(instance_id)
    if kept is not None:
        return frozenset({kept})
    zone = str(template.body.get("zone") or "")
    return frozenset(s for s, z in app.free_subnets if not zone or z == zone)


def placement_request(
    template: TemplateSpec,
    *,
    name: str,
    avoid_nodes: frozenset[str] = frozenset(),
    gpu_model_budget: Mapping[str, int] | None = None,
    subnets: frozenset[str] | None = None,
    zone_counts: Mapping[str, int] | None = None,
) -> PlacementRequest:
    """What the scheduler is asked for one instance of ``template``: its resources and the
    placement constraints its document names (selector, policy, zone or zone spread, GPU model
    and link). ``zone_counts``: for a zone spread, the app's instances per eligible zone."""
    return PlacementRequest(
        name=name,
        resources=template.resources,
        avoid_nodes=avoid_nodes,
        node_selector=dict(template.body.get("node_selector") or {}),
        gpu_model_budget=dict(gpu_model_budget or {}),
        policy=str(template.body.get("placement") or ""),
        zone=str(template.body.get("zone") or ""),
        gpu_model=str(template.body.get("gpu_model") or ""),
        max_link=str(template.body.get("gpu_link") or ""),
        subnets=subnets,
        max_zone_skew=int(template.body.get("zone_max_skew") or 0)
        if zone_counts is not None
        else 0,
        zone_counts=dict(zone_counts or {}),
    )


def _wants_spread(app: AppSnapshot) -> bool:
    """Whether a template of the app asks for a zone spread."""
    return any(t.body.get("zone_max_skew") for t in app.templates.values())


def _zone_use(app: AppSnapshot, observed: list[Instance], view: ClusterView) -> Counter[str] | None:
    """The app's instances per zone of their node, for a zone spread; None when no template of
    the app asks for one. Instances on nodes the view does not know count nowhere."""
    if not _wants_spread(app):
        return None
    use: Counter[str] = Counter()
    for inst in observed:
        node = view.by_name.get(inst.node)
        if node is not None:
            use[node.zone] += 1
    return use


def _ports(body: Mapping[str, Any]) -> list[PortSpec]:
    return [
        PortSpec(port=int(p["port"]), name=p.get("name", ""), protocol=p.get("protocol", "TCP"))
        for p in body.get("ports") or []
    ]


def _probe(doc: Mapping[str, Any] | None) -> ProbeSpec | None:
    if not doc:
        return None
    return ProbeSpec(
        kind=ProbeKind(doc.get("kind", "http")),
        path=doc.get("path", "/"),
        port=int(doc.get("port", 0)),
        command=tuple(doc.get("command") or ()),
        initial_delay_s=float(doc.get("initial_delay_s", 0)),
        period_s=float(doc.get("period_s", 10)),
        timeout_s=float(doc.get("timeout_s", 1)),
        failure_threshold=int(doc.get("failure_threshold", 3)),
        success_threshold=int(doc.get("success_threshold", 1)),
    )


def build_instance_spec(
    *,
    namespace: str,
    app: str,
    instance_id: int,
    template: TemplateSpec,
    placement: Placement,
    pull_secret: PullSecret | None = None,
) -> InstanceSpec:
    """The port's ``InstanceSpec`` for one instance of ``template`` placed at ``placement``;
    ``pull_secret``: the platform registry's credentials of its business (every instance gets
    them, so a later in-place upgrade to an image of the registry can pull: a pod's
    ``imagePullSecrets`` cannot change)."""
    body = template.body
    return InstanceSpec(
        namespace=namespace,
        app=app,
        instance_id=instance_id,
        version=template.name,
        image=template.image,
        node=placement.node,
        resources=template.resources,
        gpu_ids=placement.gpu_ids,
        cpu_ids=placement.cpu_ids,
        command=tuple(body.get("command") or ()),
        args=tuple(body.get("args") or ()),
        env=dict(body.get("env") or {}),
        ports=tuple(_ports(body)),
        liveness=_probe(body.get("liveness")),
        readiness=_probe(body.get("readiness")),
        configs=tuple(
            ConfigRef(
                name=c["name"],
                secret=bool(c.get("secret", False)),
                mount_path=c.get("mount_path", ""),
            )
            for c in body.get("configs") or []
        ),
        network_mode=NetworkMode(body.get("network_mode", "overlay")),
        labels={
            MANAGED_BY: "gaia",
            LABEL_APP: app,
            LABEL_INSTANCE: str(instance_id),
            LABEL_VERSION: template.name,
        },
        annotations={PROFILE_ANNOTATION: str(body.get("profile") or "web")},
        pull_secret=pull_secret,
    )
