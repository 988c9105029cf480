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
of the cluster each time (bench/p2p_task_access.py: at 1,000 nodes x 10 instances the listing
was most of a ``POST tasks``'s CPU). A listing shared by all nodes is up to NODE_CACHE_S old, so
a node that a caller needs a business for and does not find it on is checked on a listing at
most NODE_RECHECK_S old: an instance placed a moment ago pulls its image at once. Callers that
ask at the same time share the one listing in flight.

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
NODE_RECHECK_S = 1.0  # a business missing on a node is looked for on a listing this recent
Hosting = Mapping[str, frozenset[str]]  # node -> the businesses with an instance on it


async def node_businesses(
    plat: Platform, cluster: str, node: str, *, wanted: Collection[str] = ()
) -> frozenset[str]:
    """The businesses with an instance on ``node`` of ``cluster`` now (the cluster is the truth
    of where instances run), from a listing shared by every node (module docstring).
    ``wanted``: the businesses the caller needs; one missing from a listing older than
    ``NODE_RECHECK_S`` is looked for on a new one (at most one per ``NODE_RECHECK_S`` and
    cluster, however many nodes are refused)."""
    hosted = (await _hosting(plat, cluster, max_age=NODE_CACHE_S)).get(node, frozenset())
    if any(b not in hosted for b in wanted):
        hosted = (await _hosting(plat, cluster, max_age=NODE_RECHECK_S)).get(node, frozenset())
    return hosted


async def _hosting(plat: Platform, cluster: str, *, max_age: float) -> Hosting:
    """The cluster's instances by node, listed at most ``max_age`` seconds ago, or the listing
    in flight (one per cluster: callers at the same time share it)."""
    service = plat.registry
    found = service.node_cache.get(cluster)
    if found is not None and time.monotonic() - found[0] < max_age:
        return found[1]
    loop = asyncio.get_running_loop()
    pending = service.node_listings.get(cluster)
    if pending is None or pending.get_loop() is not loop:
        pending = loop.create_task(_list_hosting(plat, cluster), name=f"instances of {cluster}")
        service.node_listings[cluster] = pending

        def _forget(done: asyncio.Task[Hosting], cluster: str = cluster) -> None:
            if service.node_listings.get(cluster) is done:
                del service.node_listings[cluster]

        pending.add_done_callback(_forget)
    # shielded: a caller that gives up (its request cancelled) does not cancel the others'
    return await asyncio.shield(pending)


async def _list_hosting(plat: Platform, cluster: str) -> Hosting:
    started = time.monotonic()
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
