"""A cluster registered again is a new cluster to every credential derived from it.

SQLite gives a new row the highest id plus one, so a cluster removed while it had the highest
id and registered again under the same name gets the same id back. The P2P agent and node
tokens, the peers' ticket keys and the CNI's IPAM token are derived from the cluster; they
must not carry over to the new registration (migration 0016's ``key_salt``)."""

from __future__ import annotations

from gaia.platform import Platform
from gaia.store.models import Cluster
from tests.conftest import World

NAME = "again-1"
CL = f"/api/v1/clusters/{NAME}"
AGENT = {"node": "n1", "zone": "z1", "address": "n1:7001", "upload_slots": 4}
SANDBOX = {"namespace": "alpha", "pod": "web-0", "container_id": "c0"}


def _bearer(world: World, path: str, **params: str) -> dict[str, str]:
    r = world.client.get(path, params=params, headers=world.admin)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _credentials(world: World) -> dict[str, dict[str, str]]:
    return {
        "cluster-wide agent token": _bearer(world, f"{CL}/p2p/agent-token"),
        "node token": _bearer(world, f"{CL}/p2p/agent-token", node="n1"),
        "IPAM token": _bearer(world, f"{CL}/ipam/token"),
    }


def _accepted(world: World, what: str, headers: dict[str, str]) -> int:
    if what == "IPAM token":
        return world.client.post(f"{CL}/ipam/del", json=SANDBOX, headers=headers).status_code
    return world.client.post(f"{CL}/p2p/agents", json=AGENT, headers=headers).status_code


def _register(world: World) -> None:
    r = world.client.post(
        "/api/v1/clusters", json={"name": NAME, "kind": "sim"}, headers=world.admin
    )
    assert r.status_code == 201, r.text


def _cluster_id(platform: Platform) -> int:
    with platform.db.read_session() as session:
        return session.query(Cluster).filter_by(name=NAME).one().id


def test_the_credentials_of_a_removed_cluster_do_not_open_its_successor(
    world: World, platform: Platform
) -> None:
    _register(world)
    first_id = _cluster_id(platform)
    old = _credentials(world)
    for what, headers in old.items():
        assert _accepted(world, what, headers) == 200, what
    r = world.client.delete(f"{CL}?force=true", headers=world.admin)
    assert r.status_code == 204, r.text
    _register(world)
    new = _credentials(world)
    for what, headers in old.items():
        assert _accepted(world, what, headers) == 401, what
        assert new[what] != headers, what
        assert _accepted(world, what, new[what]) == 200, what
    # the case that made the salt necessary: the new registration has the removed one's id
    # (SQLite reuses the highest id; PostgreSQL's sequence does not, and the test still holds)
    if platform.db.engine.dialect.name == "sqlite":
        assert _cluster_id(platform) == first_id
