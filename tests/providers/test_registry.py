"""The provider registry serves each cluster registration its own provider.

SQLite gives a new row the highest id plus one, so a cluster removed while it had the highest
id and registered again gets the same id back. Only the replica that served the DELETE forgets
the removed cluster's provider; another replica still holds it under that id, and must build
the new registration's provider rather than answer with the old one's sim state or kubeconfig.
PostgreSQL's sequence gives a new id, and the tests hold there too. The other replica's health
pass retires the providers of clusters removed elsewhere.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.platform import Platform
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import ClusterProvider
from gaia.providers.sim import SimCluster
from gaia.store.models import Cluster

NAME = "again-1"


def _kubeconfig(server: str) -> str:
    return f"""
apiVersion: v1
kind: Config
current-context: c
contexts:
- name: c
  context: {{cluster: k, user: u}}
clusters:
- name: k
  cluster: {{server: "{server}"}}
users:
- name: u
  user: {{token: t}}
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _registration(kind: str, *, nodes: int) -> dict[str, Any]:
    """A cluster of ``kind``; ``nodes`` tells two sim registrations apart."""
    if kind == "sim":
        return {"name": NAME, "kind": "sim", "sim": {"nodes": nodes}}
    server = f"http://127.0.0.1:{_closed_port()}"  # never called: providers connect lazily
    return {"name": NAME, "kind": "kubernetes", "kubeconfig": _kubeconfig(server)}


@pytest.fixture
def other_replica(platform: Platform) -> Iterator[Platform]:
    """A second platform on the same database, as a second replica would be."""
    other = Platform.open(platform.settings, run_migrations=False, clock=platform.clock)
    yield other
    asyncio.run(other.providers.close())
    other.log_store.close()
    other.db.dispose()


def _provider_on(replica: Platform, name: str = NAME) -> tuple[int, ClusterProvider]:
    with replica.db.read_session() as session:
        row = session.query(Cluster).filter_by(name=name).one()
        return row.id, replica.providers.for_cluster(row)


@pytest.mark.parametrize(
    ("first", "second"),
    [("sim", "sim"), ("kubernetes", "sim"), ("sim", "kubernetes"), ("kubernetes", "kubernetes")],
)
def test_a_replica_that_missed_a_removal_serves_the_new_registration_its_own_provider(
    client: TestClient,
    admin: dict[str, str],
    platform: Platform,
    other_replica: Platform,
    first: str,
    second: str,
) -> None:
    r = client.post("/api/v1/clusters", json=_registration(first, nodes=2), headers=admin)
    assert r.status_code == 201, r.text
    first_id, old = _provider_on(other_replica)
    # removed through this replica: the other one is not told
    r = client.delete(f"/api/v1/clusters/{NAME}", headers=admin)
    assert r.status_code == 204, r.text
    r = client.post("/api/v1/clusters", json=_registration(second, nodes=3), headers=admin)
    assert r.status_code == 201, r.text
    second_id, new = _provider_on(other_replica)
    if platform.db.engine.dialect.name == "sqlite":
        assert second_id == first_id  # the case that matters: the id came back
    assert new is not old
    if second == "sim":
        assert isinstance(new, SimCluster)
        assert len(asyncio.run(new.list_nodes())) == 3  # the new spec, not the old state
    else:
        assert isinstance(new, KubernetesCluster)


def test_a_replicas_health_pass_retires_the_provider_of_a_cluster_removed_elsewhere(
    client: TestClient, admin: dict[str, str], other_replica: Platform
) -> None:
    for body in (_registration("kubernetes", nodes=0), {"name": "stays", "kind": "sim"}):
        assert client.post("/api/v1/clusters", json=body, headers=admin).status_code == 201
    removed_id, _ = _provider_on(other_replica)
    stays_id, stays = _provider_on(other_replica, "stays")
    assert client.delete(f"/api/v1/clusters/{NAME}", headers=admin).status_code == 204
    assert other_replica.providers.peek(removed_id) is not None  # not told of the removal
    health = ClusterHealthLoop(
        db=other_replica.db, providers=other_replica.providers, interval=1, timeout=1
    )
    asyncio.run(health.start(loops=1))
    assert other_replica.providers.peek(removed_id) is None
    assert other_replica.providers.peek(stays_id) is stays  # a sim cluster keeps its state


def test_a_provider_built_while_the_registered_clusters_are_read_is_kept(
    client: TestClient, admin: dict[str, str], other_replica: Platform
) -> None:
    r = client.post("/api/v1/clusters", json=_registration("sim", nodes=2), headers=admin)
    assert r.status_code == 201, r.text
    built: list[tuple[int, ClusterProvider]] = []

    def read_that_saw_the_table_before_the_registration() -> list[Cluster]:
        built.append(_provider_on(other_replica))  # a request meanwhile, on the new cluster
        return []

    other_replica.providers.retire_removed(read_that_saw_the_table_before_the_registration)
    [(cluster_id, provider)] = built
    assert other_replica.providers.peek(cluster_id) is provider
