"""Live provider objects, one per registered cluster.

A ``sim`` cluster is an in-process object with state, so it must outlive requests; a
``kubernetes`` cluster keeps its HTTP client. The registry builds each provider on first use from
the stored row and rebuilds it when the row changes (``updated_at``), e.g. a new kubeconfig. A
``sim`` cluster is never rebuilt while registered (its nodes and instances live in it); all sim
clusters share the registry's clock, which tests replace with a ``ManualClock``.

A provider is held for one registration: the row's id *and* its ``key_salt`` (random per
registration, migration 0016). SQLite gives a new row the highest id plus one, so a cluster
removed and registered again, under any name, can come back with the removed one's id; a
replica that never saw the removal (``forget`` runs only where the DELETE was served) would
otherwise answer the new cluster with the old one's provider: its sim state, its kubeconfig.
A new salt under a known id retires the old provider and builds the new one, and the health
loop's pass (``retire_removed``, on every replica) retires those of registrations no longer in
the store, so another replica's removal does not leave a provider (a kubernetes one's
connections) behind for good.

A ``kubernetes`` provider pre-pulls (``ImagePrewarmer``) through the sink the platform gave
(``send_prewarms_to``: the P2P coordinator's prewarm jobs of that cluster).

The registry reads a cluster through ``ClusterRef``: the few facts it needs to build a provider.
The platform store's ``Cluster`` row has them, and so can any plain object: the providers know
nothing of the ORM.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gaia.clock import Clock, RealClock
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import ChangeOf, ClusterProvider, PrewarmSink
from gaia.providers.sim import SimCluster
from gaia.security import SecretBox

# What the registry's listeners hear (``watch_changes``): the (cluster id, namespace, app) of an
# instance that changed, or None for a change that is no one app's (a node's)
Heard = tuple[int, str, str] | None


class ClusterRef(Protocol):
    """What building a provider needs to know of a registered cluster."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def zone(self) -> str: ...
    @property
    def key_salt(self) -> str: ...
    @property
    def updated_at(self) -> dt.datetime: ...
    @property
    def sim_spec(self) -> dict[str, Any] | None: ...
    @property
    def kubeconfig_encrypted(self) -> bytes | None: ...


_Ref = TypeVar("_Ref", bound=ClusterRef)


@dataclass(frozen=True)
class _Held:
    """A built provider, the registration and row version it was built from, and when (the
    registry's count of builds)."""

    key_salt: str
    updated_at: dt.datetime
    provider: ClusterProvider
    build: int


class ProviderRegistry:
    def __init__(self, *, secrets: SecretBox, clock: Clock | None = None) -> None:
        self._secrets = secrets
        self.clock: Clock = clock or RealClock()
        self._lock = threading.Lock()
        # cluster id -> the provider of its current registration (one per id: a new
        # registration under the id replaces and retires the old one's)
        self._providers: dict[int, _Held] = {}
        self._retired: list[ClusterProvider] = []
        self._builds = 0
        # told of every change to an instance in any cluster (the app controller's wake)
        self._listeners: list[Callable[[Heard], None]] = []
        # where a kubernetes cluster's pre-pulls go (the P2P coordinator's; None: nowhere)
        self._prewarms_for: Callable[[ClusterRef], PrewarmSink] | None = None

    def send_prewarms_to(self, sink_for: Callable[[ClusterRef], PrewarmSink]) -> None:
        """Give every kubernetes provider built from now on ``sink_for(cluster)`` for its
        ``prewarm_image`` (``KubernetesCluster``): the platform wires it once, before any
        provider is built. A sim cluster pulls for itself and takes none."""
        with self._lock:
            self._prewarms_for = sink_for

    def catch_up(self) -> None:
        """Bring every provider that simulates time up to now: the sim runs its transitions
        only when called, so one due meanwhile (a start, a probe) is heard now, as a real
        cluster's informer would have heard it when it happened. The app controller calls this
        at each tick, before it asks whether anything changed."""
        with self._lock:
            providers = [held.provider for held in self._providers.values()]
        for provider in providers:
            advance = getattr(provider, "advance", None)  # the sim's; real clusters push
            if advance is not None:
                advance()

    def watch_changes(self, listener: Callable[[Heard], None]) -> None:
        """``listener((cluster id, namespace, app))`` at every instance change the providers
        report (informer events, the sim's transitions), ``listener(None)`` at a change that is
        no one app's (a node's), for the providers built so far and those built later."""
        with self._lock:
            self._listeners.append(listener)
            providers = [(cid, held.provider) for cid, held in self._providers.items()]
        for cluster_id, provider in providers:
            _watch(provider, cluster_id, listener)

    def for_cluster(self, cluster: ClusterRef) -> ClusterProvider:
        with self._lock:
            known = self._providers.get(cluster.id)
            if (
                known is not None
                and known.key_salt == cluster.key_salt
                and (known.updated_at == cluster.updated_at or cluster.kind == "sim")
            ):
                # A sim cluster *is* its in-memory state: rebuilding it would wipe every
                # instance, so it lives as long as the registration does.
                return known.provider
            provider = self._build(cluster)
            for listener in self._listeners:
                _watch(provider, cluster.id, listener)
            if known is not None:
                self._retired.append(known.provider)
            self._builds += 1
            self._providers[cluster.id] = _Held(
                key_salt=cluster.key_salt,
                updated_at=cluster.updated_at,
                provider=provider,
                build=self._builds,
            )
            return provider

    def peek(self, cluster_id: int) -> ClusterProvider | None:
        with self._lock:
            known = self._providers.get(cluster_id)
            return known.provider if known else None

    def forget(self, cluster_id: int) -> None:
        with self._lock:
            known = self._providers.pop(cluster_id, None)
            if known is not None:
                self._retired.append(known.provider)

    def retire_removed(self, read_registered: Callable[[], list[_Ref]]) -> list[_Ref]:
        """``read_registered()`` (every registered cluster, read now), having retired the
        providers of registrations not among them: clusters removed through another replica,
        whose ``forget`` this one never heard. A provider built once the read may have begun is
        kept: its cluster may have been registered after the read saw the table."""
        with self._lock:
            built_before = self._builds + 1
        clusters = read_registered()
        registered = {(c.id, c.key_salt) for c in clusters}
        with self._lock:
            for cluster_id, held in list(self._providers.items()):
                if held.build < built_before and (cluster_id, held.key_salt) not in registered:
                    del self._providers[cluster_id]
                    self._retired.append(held.provider)
        return clusters

    async def close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for provider in retired:
            await provider.close()

    async def close(self) -> None:
        with self._lock:
            providers = [held.provider for held in self._providers.values()] + self._retired
            self._providers.clear()
            self._retired = []
        for provider in providers:
            await provider.close()

    def _build(self, cluster: ClusterRef) -> ClusterProvider:
        if cluster.kind == "sim":
            return SimCluster(
                name=cluster.name, spec=cluster.sim_spec or {}, zone=cluster.zone, clock=self.clock
            )
        if cluster.kubeconfig_encrypted is None:
            raise ValueError(f"cluster {cluster.name} has no kubeconfig")
        kubeconfig = self._secrets.decrypt(cluster.kubeconfig_encrypted)
        sink = self._prewarms_for(cluster) if self._prewarms_for is not None else None
        return KubernetesCluster(name=cluster.name, kubeconfig=kubeconfig, prewarms=sink)


def _watch(provider: ClusterProvider, cluster_id: int, listener: Callable[[Heard], None]) -> None:
    # an optional part of the port: adapters that hear changes say so (both of ours do)
    watch = getattr(provider, "watch_changes", None)
    if watch is not None:

        def heard(of: ChangeOf) -> None:
            listener(None if of is None else (cluster_id, *of))

        watch(heard)
