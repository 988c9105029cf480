"""``GET /api/v1/search`` (issue 20, the console's search box): businesses, apps, instances by
name, nodes by name, each within what the caller may see."""

from __future__ import annotations

from typing import Any

from tests.conftest import World
from tests.support.apps_harness import BIZ, template


def _find(world: World, q: str, who: str) -> list[tuple[str, str]]:
    r = world.client.get("/api/v1/search", params={"q": q}, headers=world.as_(who))
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return [(i["kind"], i["name"]) for i in items]


def test_search_finds_what_the_caller_may_see_only(world: World) -> None:
    v1 = template("v1", "registry.local/web:v1", cpu=0.1, memory=64)
    body = {"name": "webshop", "cluster": "sim-1", "templates": [v1], "replicas": 2}
    r = world.client.post(f"{BIZ}/apps", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    assert ("app", "webshop") in _find(world, "shop", "viewer")
    assert ("business", "alpha") in _find(world, "alph", "viewer")
    assert ("instance", "webshop-1") in _find(world, "webshop-1", "viewer")
    assert _find(world, "webshop-7", "viewer") == []  # no such instance id
    # another business's member sees none of it, not even that it exists
    assert _find(world, "shop", "outsider") == [] and _find(world, "alph", "outsider") == []
    nodes = [n for kind, n in _find(world, "sim-1-node", "platform-admin") if kind == "node"]
    assert nodes and all(n.startswith("sim-1-node") for n in nodes)


def test_search_refuses_what_is_not_a_search(world: World) -> None:
    for q in ("a", "x" * 101, "web shop", "%"):
        r = world.client.get("/api/v1/search", params={"q": q}, headers=world.admin)
        assert r.status_code == 422, (q, r.text)
