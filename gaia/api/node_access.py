"""What a node may read from the platform's registry: shared by the registry's token endpoint
(a node account's token, ``gaia.api.routes.registry``) and the P2P coordinator's access check
at ``POST .../p2p/tasks`` (``gaia.api.routes.p2p``; docs/p2p.md, "Threat model").

```
node account node+<cluster>+<node> ─> node_businesses: the businesses with an instance on the
                                      node now (one listing of the cluster's instances, by node,
                                      shared by every node for NODE_CACHE_S)
POST tasks {registry, repository, digest} ─> check_blob_access:
   the platform's registry ─> the node account may pull the repository (gaia.domain.registry)
                              and the registry links the digest in it (a HEAD, a yes kept 60 s)
   another registry ───────> the digest is no blob of the platform's registry (its storage)
```

Why one listing per cluster: every agent opens its tasks (and asks for its registry token) when
an image rolls out, a thousand nodes within seconds, and a listing per node read every instance
of the cluster each time (bench/p2p_task_access.py, docs/benchmarks.md). A listing shared by
every node may predate an instance placed a moment ago, whose node then pulls its image at once:
so a node that lacks a business the caller needs is looked up again on a listing begun after
the call arrived (what a listing per node gave), at most once per NODE_CACHE_S per node (a node
refused again and again does not list the cluster each time: the old per-node cache's bound).
Callers at the same time share the listing in flight.

Why the second rule: swarms are keyed by digest, so a task that names ``docker.io`` with the
digest of a private layer of the platform's registry would otherwise get that layer from the
nodes that pulled it. Other registries' credentials come from the agents' registries file, one
Secret for every node: a node's root has them already, and the swarm gives it nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping

from gaia.delivery.registry import RegistryUnavailable
from gaia.domain.errors import ClusterUnavailable, Forbidden, GaiaError, InvalidRequest
from gaia.domain.registry import NamespaceKind, RegistryCaller, allowed, parse_repository
from gaia.platform import Platform
from gaia.store import registry as store

log = logging.getLogger(__name__)
NODE_CACHE_S = 5.0  # a listing of a cluster's instances answers for every node this long
Hosting = Mapping[str, frozenset[str]]  # node -> the businesses with an instance on it


async def node_businesses(
    plat: Platform, cluster: str, node: str, *, wanted: Collection[str] = ()
) -> frozenset[str]:
    """The businesses with an instance on ``node`` of ``cluster`` now (the cluster is the truth
    of where instances run), from a listing shared by every node (module docstring).
    ``wanted``: the businesses the caller needs; when one is missing, the node is looked up
    on a listing begun after this call (once per ``NODE_CACHE_S`` per node)."""
    arrived = time.monotonic()
    hosted = (await _hosting(plat, cluster, since=arrived - NODE_CACHE_S)).get(node, frozenset())
    if all(b in hosted for b in wanted):
        return hosted
    service = plat.registry
    checked = service.node_rechecked.get((cluster, node))
    if checked is not None and arrived - checked < NODE_CACHE_S:
        return hosted
    if len(service.node_rechecked) > 10_000:
        service.node_rechecked.clear()
    service.node_rechecked[(cluster, node)] = arrived
    return (await _hosting(plat, cluster, since=arrived)).get(node, frozenset())


async def _hosting(plat: Platform, cluster: str, *, since: float) -> Hosting:
    """The cluster's instances by node from a listing begun at ``since`` (monotonic) or later:
    the last one, the one in flight, or a new one (then shared by callers at the same time)."""
    service = plat.registry
    found = service.node_cache.get(cluster)
    if found is not None and found[0] >= since:
        return found[1]
    loop = asyncio.get_running_loop()
    pending = service.node_listings.get(cluster)
    if pending is None or pending[0] < since or pending[1].get_loop() is not loop:
        task = loop.create_task(_list_hosting(plat, cluster), name=f"instances of {cluster}")
        pending = (time.monotonic(), task)
        service.node_listings[cluster] = pending

        def _forget(done: asyncio.Task[Hosting], cluster: str = cluster) -> None:
            current = service.node_listings.get(cluster)
            if current is not None and current[1] is done:
                del service.node_listings[cluster]

        task.add_done_callback(_forget)
    # shielded: a caller that gives up (its request cancelled) does not cancel the others'
    return await asyncio.shield(pending[1])


async def _list_hosting(plat: Platform, cluster: str) -> Hosting:
    started = time.monotonic()  # the listing is at least this recent
    with plat.db.read_session() as session:
        row = store.cluster_by_name(session, cluster)
    if row is None:
        return {}
    try:
        instances = await plat.providers.for_cluster(row).list_instances()
    except GaiaError as exc:  # not kept: the next caller asks again
        log.warning("registry: instances of %s unreadable: %s", cluster, exc)
        return {}
    by_node: dict[str, set[str]] = {}
    for i in instances:
        if i.node:
            by_node.setdefault(i.node, set()).add(i.namespace)
    hosting = {node: frozenset(businesses) for node, businesses in by_node.items()}
    cache = plat.registry.node_cache
    if len(cache) > 1000:
        cache.clear()
    found = cache.get(cluster)
    if found is None or found[0] < started:  # a later listing may have ended first
        cache[cluster] = (started, hosting)
    return hosting


async def check_blob_access(
    plat: Platform, *, cluster: str, node: str, registry: str, repository: str, digest: str
) -> None:
    """Raise ``Forbidden`` unless ``node`` may read blob ``digest`` of ``repository`` in
    ``registry`` (host[:port], as the agent names it); see the module docstring."""
    service = plat.registry
    if not service.enabled:
        return  # no platform registry: nothing of the platform's to keep from a node
    if registry == service.address:
        try:
            repo = parse_repository(repository)
        except InvalidRequest as exc:
            raise Forbidden(f"the platform's registry has no repository '{repository}'") from exc
        needs = [repo.owner] if repo.kind is NamespaceKind.BUSINESS else []
        hosted = await node_businesses(plat, cluster, node, wanted=needs)
        if "pull" not in allowed(RegistryCaller(node_businesses=hosted), repo):
            raise Forbidden(
                f"node '{node}' may not pull {repo.name}: no business with an instance on the "
                "node owns it (fetch it from the registry, which will refuse it too)"
            )
        try:
            linked = await service.blob_linked(repo.name, digest)
        except RegistryUnavailable as exc:  # 503: the agent fetches from the registry
            raise ClusterUnavailable(f"the platform's registry did not answer: {exc}") from exc
        if not linked:
            raise Forbidden(f"blob {digest} is not in {repo.name}")
        return
    held = service.holds_blob(digest)
    if held is None:
        raise Forbidden(
            f"blobs of {registry} are not shared between nodes here: the platform cannot tell "
            "them from its own registry's (it does not run that registry), fetch from the registry"
        )
    if held:
        raise Forbidden(
            f"blob {digest} is in the platform's registry: open its task naming "
            f"{service.address} and a repository this node may pull"
        )
