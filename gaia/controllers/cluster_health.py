"""Cluster health: probe every registered cluster and record transitions.

Each pass probes all clusters concurrently, each bounded by the probe timeout, so one dead
cluster never delays the others. With the defaults (10 s interval, 5 s timeout) a cluster that
stops answering shows Unreachable within 15 s, inside the 30 s the platform promises. A change
of state writes the cluster row and an event (Warning when it goes bad, Normal when it recovers).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select

from gaia.loop import LoopService
from gaia.providers.port import ClusterHealth, HealthState
from gaia.providers.registry import ProviderRegistry
from gaia.store import events
from gaia.store.database import Database
from gaia.store.models import Cluster, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    health: ClusterHealth
    nodes: int | None = None
    ready: int | None = None


class ClusterHealthLoop(LoopService):
    name = "cluster-health"

    def __init__(
        self, *, db: Database, providers: ProviderRegistry, interval: float, timeout: float
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.providers = providers
        self.timeout = timeout

    async def run_once(self) -> None:
        # the providers of clusters removed through another replica are retired here too
        clusters = self.providers.retire_removed(self._registered)
        results = await asyncio.gather(*(self._probe(c) for c in clusters))
        await self.providers.close_retired()
        await asyncio.to_thread(self._store, list(zip(clusters, results, strict=True)))

    def _registered(self) -> list[Cluster]:
        with self.db.read_session() as session:
            return list(session.scalars(select(Cluster)))

    async def _probe(self, cluster: Cluster) -> Probe:
        try:
            provider = self.providers.for_cluster(cluster)
            # The provider promises to honour the timeout; the outer bound makes sure of it.
            health = await asyncio.wait_for(
                provider.check_health(timeout=self.timeout), timeout=self.timeout + 1
            )
        except TimeoutError:
            return Probe(
                ClusterHealth(HealthState.UNREACHABLE, f"no answer within {self.timeout:g}s")
            )
        except Exception as exc:
            log.warning("health probe of cluster %s failed: %s", cluster.name, type(exc).__name__)
            return Probe(
                ClusterHealth(HealthState.UNREACHABLE, f"probe failed: {type(exc).__name__}")
            )
        if health.state != HealthState.HEALTHY:
            return Probe(health)
        # Node counts are a bonus: a cluster that answers /readyz but will not list nodes (RBAC,
        # a slow list) is still healthy, its counts are just not refreshed.
        try:
            nodes = await asyncio.wait_for(provider.list_nodes(), timeout=self.timeout)
        except Exception as exc:
            log.info("cluster %s: node list failed: %s", cluster.name, type(exc).__name__)
            return Probe(health)
        return Probe(health, nodes=len(nodes), ready=sum(1 for n in nodes if n.ready))

    def _store(self, results: list[tuple[Cluster, Probe]]) -> None:
        now = utcnow()
        with self.db.write_session() as session:
            for stale, probe in results:
                cluster = session.get(Cluster, stale.id)
                if cluster is None:  # removed while we probed
                    continue
                health = probe.health
                cluster.health_checked_at = now
                if probe.nodes is not None:
                    cluster.node_count = probe.nodes
                    cluster.ready_node_count = probe.ready
                if cluster.health == health.state and cluster.health_message == health.message:
                    continue
                went_from = cluster.health
                cluster.health = health.state.value
                cluster.health_message = health.message
                if went_from == health.state:
                    continue
                cluster.health_changed_at = now
                bad = health.state in (HealthState.UNREACHABLE, HealthState.UNHEALTHY)
                events.emit(
                    session,
                    object_kind="Cluster",
                    object_name=cluster.name,
                    cluster=cluster.name,
                    reason=f"Cluster{health.state.value}",
                    message=f"cluster is {health.state.value} (was {went_from})"
                    + (f": {health.message}" if health.message else ""),
                    type="Warning" if bad else "Normal",
                    now=now,
                )
