"""What every credential of a registered cluster is derived from.

The P2P agent and node tokens, the peers' ticket keys (``gaia.controllers.swarm``,
``gaia.controllers.agent_auth``) and the CNI's IPAM node token (``gaia.api.routes.network``)
are keys derived from the platform's secret and one cluster: its id, its name and its
``key_salt`` (the ``clusters`` row, ``gaia.store.models.Cluster``). The salt is random per
registration (migration 0016) because SQLite gives a removed cluster's id to the next cluster
registered: without it, the removed cluster's credentials would open its successor. Clusters
registered before the salt have an empty one and derive exactly what they derived before, so
their agents keep working. The derivation lives here, once, below both the in-memory
coordinator and the API, and is pure: the bytes must never change for a given cluster.
"""

from __future__ import annotations


def cluster_key_material(*, id: int, name: str, salt: str) -> str:
    """A cluster's part of the derivation of its keys: ``id\0name``, then ``\0salt`` where
    the cluster has one (clusters registered before the salt keep what they had)."""
    return f"{id}\0{name}\0{salt}" if salt else f"{id}\0{name}"
