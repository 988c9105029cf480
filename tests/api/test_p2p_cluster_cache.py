"""The P2P agent calls' cluster lookup is cached (``GAIA_P2P_CLUSTER_CACHE_SECONDS``,
``gaia.store.cache.CommitClearedCache``): agents call several times a second, and reading the
cluster on every call was most of a call's CPU. A change on this replica reaches the next call;
another replica's cache holds an answer for the TTL at most."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, update

from gaia.platform import Platform
from gaia.store.cache import CommitClearedCache
from gaia.store.clusters import cluster_changed
from gaia.store.models import Cluster
from tests.conftest import World

P2P = "/api/v1/clusters/sim-1/p2p"
HEARTBEAT = {"node": "n1", "zone": "z1", "address": "n1:7001", "upload_slots": 4}


def agent_headers(world: World) -> dict[str, str]:
    r = world.client.get(f"{P2P}/agent-token", headers=world.admin)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def heartbeat(world: World, agent: dict[str, str]) -> int:
    return world.client.post(f"{P2P}/agents", json=HEARTBEAT, headers=agent).status_code


@pytest.fixture
def cluster_reads(platform: Platform) -> Iterator[list[str]]:
    """The SELECTs from the clusters table, as the database sees them."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM clusters" in statement:
            seen.append(statement)

    event.listen(platform.db.engine, "before_cursor_execute", note)
    yield seen
    event.remove(platform.db.engine, "before_cursor_execute", note)


def test_agent_calls_read_their_cluster_once_until_it_changes(
    world: World, platform: Platform, cluster_reads: list[str]
) -> None:
    agent = agent_headers(world)
    cluster_reads.clear()
    for _ in range(10):
        assert heartbeat(world, agent) == 200
    assert len(cluster_reads) == 1
    r = world.client.patch("/api/v1/clusters/sim-1", json={"zone": "z9"}, headers=world.admin)
    assert r.status_code == 200, r.text
    cluster_reads.clear()
    assert heartbeat(world, agent) == 200
    assert len(cluster_reads) == 1  # read again after the change, then kept again
    assert heartbeat(world, agent) == 200
    assert len(cluster_reads) == 1


def test_the_health_loops_observations_keep_the_lookup(world: World, platform: Platform) -> None:
    agent = agent_headers(world)
    assert heartbeat(world, agent) == 200
    generation = platform.p2p_clusters.generation
    with platform.db.write_session() as session:
        row = session.query(Cluster).filter_by(name="sim-1").one()
        row.health = "Unreachable"
        row.health_message = "probe timed out"
    assert platform.p2p_clusters.generation == generation


def test_a_removed_cluster_is_refused_at_once_and_a_new_one_of_its_name_found_at_once(
    world: World,
) -> None:
    old = agent_headers(world)
    assert heartbeat(world, old) == 200
    r = world.client.delete("/api/v1/clusters/sim-1?force=true", headers=world.admin)
    assert r.status_code == 204, r.text
    assert heartbeat(world, old) == 401
    r = world.client.post(
        "/api/v1/clusters", json={"name": "sim-1", "kind": "sim"}, headers=world.admin
    )
    assert r.status_code == 201, r.text
    assert heartbeat(world, agent_headers(world)) == 200  # the refusal was not kept


class SteppedClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_another_replica_keeps_an_answer_for_the_ttl_at_most(platform: Platform) -> None:
    # a second replica's cache: nothing it watches commits the change
    clock = SteppedClock()
    there: CommitClearedCache[str, int] = CommitClearedCache(ttl_seconds=5, clock=clock)
    there.put("sim-1", 1, generation=there.generation)
    clock.t += 4.9
    assert there.get("sim-1") == 1
    clock.t += 0.1
    assert there.get("sim-1") is None


def test_a_bulk_update_of_clusters_clears_the_cache_after_its_commit(platform: Platform) -> None:
    cache: CommitClearedCache[str, int] = CommitClearedCache(ttl_seconds=60)
    cache.watch(platform.db, changed=cluster_changed, bulk=(Cluster,))
    cache.put("sim-1", 1, generation=cache.generation)
    with platform.db.write_session() as session:
        session.execute(update(Cluster).where(Cluster.name == "sim-1").values(description="x"))
        assert cache.get("sim-1") == 1  # not before the commit
    assert cache.get("sim-1") is None
