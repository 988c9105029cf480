"""``LogCollector``: copies the new container lines of Gaia's instances into the log store.

One pass::

    store snapshot (clusters; apps as (cluster, business, app))
      ──► per cluster, concurrently: provider.list_instances()        one call per cluster
      ──► the instances of Gaia apps whose container has run (Running, Failed, Terminating)
      ──► this pass's share: at most ``per_pass`` of them, the ones collected longest ago first
          (new instances first: a round-robin that survives instances coming and going)
      ──► provider.logs(since=<time of the newest line held>, tail=...), ``concurrency`` at once
      ──► drop what was held already ──► one write to the store

It never refetches what it has: each instance has a cursor, the time of its newest line and
the texts written at that instant. ``since`` is inclusive (the sim's and ``pods/log``'s
``sinceTime``), so the boundary instant comes back and its lines are dropped when their text was
seen (same time and text: the same line). The cursor lives in memory; after a restart it is
read back from the store's newest line of the instance, so a restart refetches nothing either.
An instance that logs more than ``tail`` lines between two of its turns loses the oldest of
them (the log is a view, not an archive). An instance whose logs cannot be read (a node that
serves none, an instance gone) is tried again after a back-off that doubles up to
``MAX_BACKOFF_PASSES`` passes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select

from gaia.domain.errors import GaiaError
from gaia.loop import LoopService
from gaia.monitor.logs.store import LogEntry, LogSource, LogStore, SourceKind
from gaia.providers.port import ClusterProvider, Instance, InstancePhase, LogLine
from gaia.providers.registry import ProviderRegistry
from gaia.store.database import Database
from gaia.store.models import App, Business, Cluster

log = logging.getLogger(__name__)

COLLECTED_PHASES = frozenset(
    {InstancePhase.RUNNING, InstancePhase.FAILED, InstancePhase.TERMINATING}
)
MAX_BACKOFF_PASSES = 64


@dataclass(slots=True)
class _Cursor:
    at: dt.datetime | None = None  # the newest line held; None: nothing yet
    texts: set[str] = field(default_factory=set)  # the lines held at exactly ``at``
    last_pass: int = -1  # the pass that last collected it (the round-robin's order)
    failures: int = 0
    skip_until: int = 0  # a pass number; after failures, not before it


@dataclass(slots=True)
class CollectStats:
    """What one pass did (tests read it)."""

    instances: int = 0  # candidates seen across clusters
    fetched: int = 0  # instances whose logs were read
    lines: int = 0  # new lines written
    errors: int = 0


Key = tuple[str, str, str]  # (cluster, namespace, instance name)


@dataclass(frozen=True, slots=True)
class _Fetched:
    key: Key
    at: dt.datetime | None  # the instance's cursor once ``entries`` are written
    texts: set[str]
    entries: list[LogEntry]


@dataclass(frozen=True, slots=True)
class _Target:
    cluster: str
    provider: ClusterProvider
    instance: Instance

    @property
    def key(self) -> Key:
        return (self.cluster, self.instance.namespace, self.instance.name)

    @property
    def source(self) -> LogSource:
        return LogSource(
            SourceKind.INSTANCE,
            cluster=self.cluster,
            namespace=self.instance.namespace,
            app=self.instance.app,
            instance=self.instance.name,
        )


class LogCollector(LoopService):
    name = "logs"

    def __init__(
        self,
        *,
        db: Database,
        providers: ProviderRegistry,
        store: LogStore,
        interval: float = 5.0,
        per_pass: int = 200,
        concurrency: int = 8,
        tail: int = 1_000,
        fetch_timeout: float = 10.0,
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.providers = providers
        self.store = store
        self.per_pass = per_pass
        self.concurrency = concurrency
        self.tail = tail
        self.fetch_timeout = fetch_timeout
        self.passes = 0
        self.last = CollectStats()
        self._cursors: dict[Key, _Cursor] = {}

    async def run_once(self) -> None:
        clusters, apps = await asyncio.to_thread(self._load)
        stats = CollectStats()
        listed = await asyncio.gather(
            *(self._targets(cluster, apps.get(cluster.id, set())) for cluster in clusters)
        )
        targets = [t for found in listed if found is not None for t in found]
        stats.instances = len(targets)
        # forget instances that are gone, but only where the cluster answered
        answered = {c.name for c, found in zip(clusters, listed, strict=True) if found is not None}
        present = {t.key for t in targets}
        for key in [k for k in self._cursors if k[0] in answered and k not in present]:
            del self._cursors[key]

        due = [t for t in targets if self._cursor(t.key).skip_until <= self.passes]
        due.sort(key=lambda t: self._cursor(t.key).last_pass)
        chosen = due[: self.per_pass]
        gate = asyncio.Semaphore(self.concurrency)
        results = await asyncio.gather(*(self._collect(t, gate, stats) for t in chosen))
        entries = [entry for got in results if got is not None for entry in got.entries]
        if entries:
            stats.lines = await self.store.write(entries)
        # only now that the lines are held: a failed write is fetched again next time
        for got in results:
            if got is not None:
                cursor = self._cursor(got.key)
                cursor.at, cursor.texts = got.at, got.texts
        self.passes += 1
        self.last = stats

    def _cursor(self, key: Key) -> _Cursor:
        cursor = self._cursors.get(key)
        if cursor is None:
            cursor = self._cursors[key] = _Cursor()
        return cursor

    def _load(self) -> tuple[list[Cluster], dict[int, set[tuple[str, str]]]]:
        with self.db.read_session() as session:
            clusters = list(session.scalars(select(Cluster).order_by(Cluster.id)))
            apps: dict[int, set[tuple[str, str]]] = {}
            for cluster_id, namespace, app in session.execute(
                select(App.cluster_id, Business.name, App.name).join(
                    Business, Business.id == App.business_id
                )
            ):
                apps.setdefault(cluster_id, set()).add((namespace, app))
        return [c for c in clusters if c.id in apps], apps

    async def _targets(self, cluster: Cluster, apps: set[tuple[str, str]]) -> list[_Target] | None:
        """The cluster's instances of Gaia apps that have logs; None when it did not answer."""
        try:
            provider = self.providers.for_cluster(cluster)
            instances = await asyncio.wait_for(
                provider.list_instances(), timeout=self.fetch_timeout
            )
        except (ConnectionError, GaiaError, ValueError, TimeoutError) as exc:
            log.debug("logs: cluster %s not listed: %s", cluster.name, exc)
            return None
        return [
            _Target(cluster.name, provider, inst)
            for inst in instances
            if (inst.namespace, inst.app) in apps and inst.phase in COLLECTED_PHASES
        ]

    async def _collect(
        self, target: _Target, gate: asyncio.Semaphore, stats: CollectStats
    ) -> _Fetched | None:
        cursor = self._cursor(target.key)
        cursor.last_pass = self.passes
        async with gate:
            try:
                if cursor.at is None:
                    held = await asyncio.to_thread(self.store.newest, target.source)
                    if held is not None:
                        cursor.at, cursor.texts = held
                lines = await asyncio.wait_for(
                    target.provider.logs(
                        namespace=target.instance.namespace,
                        name=target.instance.name,
                        tail=self.tail,
                        since=cursor.at,
                    ),
                    timeout=self.fetch_timeout,
                )
            except (ConnectionError, GaiaError, TimeoutError) as exc:
                cursor.failures += 1
                cursor.skip_until = self.passes + min(2**cursor.failures, MAX_BACKOFF_PASSES)
                stats.errors += 1
                log.debug("logs: %s not read: %s", "/".join(target.key), exc)
                return None
        cursor.failures = 0
        stats.fetched += 1
        fresh = new_lines(lines, since=cursor.at, seen=cursor.texts)
        at, texts = cursor.at, cursor.texts
        if fresh:
            newest = max(line.at for line in fresh)
            texts = {line.text for line in lines if line.at == newest}
            if newest == at:
                texts |= cursor.texts
            at = newest
        source = target.source
        entries = [
            LogEntry(source, at=line.at, text=line.text, stream=line.stream) for line in fresh
        ]
        return _Fetched(key=target.key, at=at, texts=texts, entries=entries)


def new_lines(
    lines: Iterable[LogLine], *, since: dt.datetime | None, seen: set[str]
) -> list[LogLine]:
    """The lines not held yet: after ``since``, or at ``since`` with a text not seen there."""
    if since is None:
        return list(lines)
    return [
        line for line in lines if line.at > since or (line.at == since and line.text not in seen)
    ]
