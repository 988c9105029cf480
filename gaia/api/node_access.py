"""What a node may read from the platform's registry: shared by the registry's token endpoint
(a node account's token, ``gaia.api.routes.registry``) and the P2P coordinator's access check
at ``POST .../p2p/tasks`` (``gaia.api.routes.p2p``; docs/p2p.md, "Threat model").

```
node account node+<cluster>+<node> ─> node_businesses: the businesses with an instance on the
                                      node now (the cluster's own list, kept NODE_CACHE_S)
POST tasks {registry, repository, digest} ─> check_blob_access:
   the platform's registry ─> the node account may pull the repository (gaia.domain.registry)
                              and the registry links the digest in it (a HEAD, a yes kept 60 s)
   another registry ───────> the digest is no blob of the platform's registry (its storage)
```

Why the second rule: swarms are keyed by digest, so a task that names ``docker.io`` with the
digest of a private layer of the platform's registry would otherwise get that layer from the
nodes that pulled it. Other registries' credentials come from the agents' registries file, one
Secret for every node: a node's root has them already, and the swarm gives it nothing more.
"""

from __future__ import annotations

import logging
import time

from gaia.delivery.registry import RegistryUnavailable
from gaia.domain.errors import ClusterUnavailable, Forbidden, GaiaError, InvalidRequest
from gaia.domain.registry import RegistryCaller, allowed, parse_repository
from gaia.platform import Platform
from gaia.store import registry as store

log = logging.getLogger(__name__)
NODE_CACHE_S = 5.0


async def node_businesses(plat: Platform, cluster: str, node: str) -> frozenset[str]:
    """The businesses with an instance on ``node`` of ``cluster`` now (the cluster is the truth
    of where instances run; its answer is kept a few seconds per node)."""
    cache = plat.registry.node_cache
    now = time.monotonic()
    found = cache.get((cluster, node))
    if found is not None and now - found[0] < NODE_CACHE_S:
        return found[1]
    with plat.db.read_session() as session:
        row = store.cluster_by_name(session, cluster)
    if row is None:
        return frozenset()
    try:
        instances = await plat.providers.for_cluster(row).list_instances()
    except GaiaError as exc:
        log.warning("registry: instances of %s unreadable for node %s: %s", cluster, node, exc)
        return frozenset()
    hosted = frozenset(i.namespace for i in instances if i.node == node)
    if len(cache) > 10_000:
        cache.clear()
    cache[(cluster, node)] = (now, hosted)
    return hosted


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
        hosted = await node_businesses(plat, cluster, node)
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
