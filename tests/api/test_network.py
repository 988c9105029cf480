"""The Galaxy network through the API (issue 19): pools, the CNI plugin's node calls, an app's
addresses, and the scheduler keeping floating-IP instances on nodes of their subnet."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gaia.controllers.floating_ips import FloatingIpSweep
from gaia.platform import Platform
from tests.conftest import World
from tests.support.apps_harness import AppsHarness, template

CL = "/api/v1/clusters/sim-1"
BIZ = "/api/v1/businesses/alpha"
POOL = {"name": "rack-a", "subnet": "10.9.0.0/24", "zone": "", "range_start": "10.9.0.10"}


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


def _pool(world: World, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = world.client.post(f"{CL}/ip-pools", json=body or POOL, headers=world.admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _node_token(world: World, cluster: str = "sim-1") -> dict[str, str]:
    r = world.client.get(f"/api/v1/clusters/{cluster}/ipam/token", headers=world.admin)
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert token.startswith("gaia-ipam-")
    return {"Authorization": f"Bearer {token}"}


def _add(
    world: World, node: dict[str, str], pod: str, container: str, **extra: Any
) -> dict[str, Any]:
    body = {
        "namespace": "alpha",
        "pod": pod,
        "container_id": container,
        "node": extra.pop("on", "n1"),
        "mode": "floating-ip",
        "subnet": "10.9.0.0/24",
        **extra,
    }
    r = world.client.post(f"{CL}/ipam/add", json=body, headers=node)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _sandbox(pod: str, container: str) -> dict[str, str]:
    return {"namespace": "alpha", "pod": pod, "container_id": container}


def test_pools_are_listed_with_their_use_and_bad_pools_are_refused(world: World) -> None:
    c, admin = world.client, world.admin
    created = _pool(world)
    assert created | {"created_at": None} == {
        "name": "rack-a",
        "subnet": "10.9.0.0/24",
        "zone": "",
        "gateway": "10.9.0.1",
        "range_start": "10.9.0.10",
        "range_end": "10.9.0.254",
        "size": 245,
        "used": 0,
        "created_by": "admin",
        "created_at": None,
    }
    bad = c.post(f"{CL}/ip-pools", json={"name": "x", "subnet": "10.9.0.7/24"}, headers=admin)
    assert bad.status_code == 422 and "CIDR" in bad.json()["message"], bad.text
    wide = c.post(f"{CL}/ip-pools", json={"name": "y", "subnet": "10.9.0.0/16"}, headers=admin)
    assert wide.status_code == 409 and "overlaps pool 'rack-a'" in wide.json()["message"]
    outside = {"name": "z", "subnet": "10.9.5.0/24", "range_end": "10.9.6.9"}
    r = c.post(f"{CL}/ip-pools", json=outside, headers=admin)
    assert r.status_code == 422 and "range_end: 10.9.6.9 is not a host" in r.json()["message"]
    node = _node_token(world)
    _add(world, node, "web-0", "c0")
    page = c.get(f"{CL}/ip-pools", headers=world.as_("viewer")).json()
    assert [(p["name"], p["used"]) for p in page["items"]] == [("rack-a", 1)]
    busy = c.delete(f"{CL}/ip-pools/rack-a", headers=admin)
    assert busy.status_code == 409 and "1 address(es)" in busy.json()["message"]


def test_the_plugin_adds_checks_and_deletes_with_the_node_token(world: World) -> None:
    c = world.client
    _pool(world)
    node = _node_token(world)
    first = _add(world, node, "web-0", "c0")
    assert first == {
        "ip": "10.9.0.10",
        "prefix_len": 24,
        "gateway": "10.9.0.1",
        "pool": "rack-a",
        "policy": "",
        "reused": False,
    }
    assert _add(world, node, "web-0", "c0")["reused"]  # ADD repeated: the same address
    assert _add(world, node, "web-1", "c1")["ip"] == "10.9.0.11"
    r = c.post(f"{CL}/ipam/check", json=_sandbox("web-0", "c0"), headers=node)
    assert r.status_code == 200 and r.json()["ip"] == "10.9.0.10"
    r = c.post(f"{CL}/ipam/del", json=_sandbox("web-0", "c0"), headers=node)
    assert r.json() == {"released": True}
    r = c.post(f"{CL}/ipam/del", json=_sandbox("web-0", "c0"), headers=node)
    assert r.status_code == 200 and r.json() == {"released": False}  # DEL twice is fine
    r = c.post(f"{CL}/ipam/check", json=_sandbox("web-0", "c0"), headers=node)
    assert r.status_code == 404
    # GC: the runtime says only c9 is left on n1; c1 (web-1) lets go of its address
    r = c.post(f"{CL}/ipam/gc", json={"node": "n1", "valid": ["c9"]}, headers=node)
    assert r.json() == {"released": ["web-1"]}


def test_node_calls_take_only_the_clusters_node_token(world: World) -> None:
    c = world.client
    _pool(world)
    body = {**_sandbox("web-0", "c0"), "node": "n1", "mode": "floating-ip", "subnet": "10.9.0.0/24"}
    r = c.post(f"{CL}/ipam/add", json=body, headers=world.admin)
    assert r.status_code == 403 and "IPAM node token" in r.json()["message"]
    wrong = {"Authorization": "Bearer gaia-ipam-" + "0" * 64}
    assert c.post(f"{CL}/ipam/add", json=body, headers=wrong).status_code == 401
    r = c.post(
        "/api/v1/clusters",
        json={"name": "sim-2", "kind": "sim", "region": "r", "zone": "z"},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    other = _node_token(world, "sim-2")
    assert c.post(f"{CL}/ipam/add", json=body, headers=other).status_code == 401
    # and the node token is no user token
    assert c.get(f"{CL}/ip-pools", headers=_node_token(world)).status_code == 401


def test_a_namespace_that_is_no_business_is_refused_clearly(world: World) -> None:
    _pool(world)
    node = _node_token(world)
    body = {**_sandbox("x-0", "c0"), "namespace": "kube-system", "node": "n1"}
    r = world.client.post(
        f"{CL}/ipam/add", json={**body, "mode": "floating-ip", "subnet": "10.9.0.0/24"},
        headers=node,
    )  # fmt: skip
    assert r.status_code == 404 and "no business of Gaia" in r.json()["message"]
    r = world.client.post(
        f"{CL}/ipam/add", json={**body, "namespace": "alpha", "mode": "floating-ip"}, headers=node
    )
    assert r.status_code == 422 and "subnet" in r.json()["message"]


def test_ip_release_needs_the_floating_ip_mode(h: AppsHarness, world: World) -> None:
    bad = template("v1", "shop/web:1", ip_release="never")
    r = world.client.post(
        f"{BIZ}/apps",
        json={"name": "web", "cluster": "sim-1", "templates": [bad], "replicas": 1},
        headers=world.admin,
    )
    assert r.status_code == 422 and "floating-ip' only, not 'overlay'" in r.text


def _floating_app(h: AppsHarness, policy: str = "app", replicas: int = 1) -> None:
    spec = template("v1", "shop/web:1", network_mode="floating-ip", ip_release=policy)
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [spec],
        "replicas": replicas,
        "allow_pending": True,
    }
    h.post(f"{BIZ}/apps", body, status=201)


def _labelled_node(world: World, name: str, subnet: str) -> None:
    label = subnet.replace("/", "_")
    r = world.client.post(
        f"{CL}/nodes",
        json={"name": name, "cpu": 16, "memory_mib": 65536, "labels": {"gaia.io/subnet": label}},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text


def test_floating_ip_instances_wait_for_a_node_whose_subnet_has_a_pool(
    h: AppsHarness, world: World
) -> None:
    _floating_app(h)
    for _ in range(2):
        h.tick()
    message = dict(h.events("web-0"))["FailedScheduling"]
    assert "without a gaia.io/subnet label for floating IPs" in message
    _labelled_node(world, "rack-a-1", "10.9.0.0/24")
    h.tick()
    message = dict(h.events("web-0"))["FailedScheduling"]
    assert "1 node(s) in subnets with no free floating IP" in message  # no pool yet
    _pool(world)
    h.settle(lambda: h.instances("web")[0]["node"] == "rack-a-1")


def test_an_instance_keeps_its_subnet_when_rescheduled(h: AppsHarness, world: World) -> None:
    _pool(world)
    _pool(world, {"name": "rack-b", "subnet": "10.9.1.0/24"})
    _labelled_node(world, "rack-a-1", "10.9.0.0/24")
    _labelled_node(world, "rack-b-1", "10.9.1.0/24")
    _floating_app(h)
    h.settle(lambda: bool(h.instances("web")[0]["node"]))
    node = h.instances("web")[0]["node"]
    subnet = "10.9.0.0/24" if node == "rack-a-1" else "10.9.1.0/24"
    got = _add(world, _node_token(world), "web-0", "c0", on=node, subnet=subnet)
    assert got["policy"] == "app"
    # its node is drained: the instance is made again, only on a node of its own subnet
    r = world.client.post(f"{CL}/nodes/{node}/drain", headers=world.admin)
    assert r.status_code == 200, r.text
    for _ in range(3):
        h.tick()
    events = dict(h.events("web-0"))
    assert f"1 node(s) outside the floating IP's subnet(s) {subnet}" in events["FailedScheduling"]
    assert world.client.post(f"{CL}/nodes/{node}/uncordon", headers=world.admin).status_code == 200
    h.settle(lambda: h.instances("web")[0]["node"] == node)
    network = h.get(f"{BIZ}/apps/web/network")
    assert network["mode"] == "floating-ip" and network["ip_release"] == "app"
    assert [(i["pod"], i["ip"], i["policy"], i["instance"]) for i in network["items"]] == [
        ("web-0", got["ip"], "app", 0)
    ]
    assert (network["total"], network["kept_total"]) == (1, 0)  # its instance is still wanted
    assert network["items"][0]["kept"] is False


def test_nat_ports_are_written_back_and_shown(h: AppsHarness, world: World) -> None:
    spec = template("v1", "shop/web:1", network_mode="nat")
    h.post(f"{BIZ}/apps", {"name": "web", "cluster": "sim-1", "templates": [spec]}, status=201)
    node = _node_token(world)
    r = world.client.post(
        f"{CL}/ipam/add",
        json={
            **_sandbox("web-0", "c0"), "node": "n1", "mode": "nat", "node_ip": "10.77.0.2",
            "ports": {"8080/tcp": 30001},
        },
        headers=node,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    plan = world.client.post(f"{CL}/ipam/plan", json={"namespace": "alpha", "pod": "web-0"},
                             headers=node)  # fmt: skip
    assert plan.json() == {"mode": "nat", "ports": ["8080/tcp"], "policy": ""}
    stray = world.client.post(f"{CL}/ipam/plan", json={"namespace": "alpha", "pod": "x-7"},
                              headers=node)  # fmt: skip
    assert stray.json() == {"mode": "", "ports": [], "policy": ""}  # no app: the plugin's fallback
    shown = h.get(f"{BIZ}/apps/web/network")
    assert shown["mode"] == "nat" and shown["ip_release"] is None
    assert [(i["ip"], i["ports"], i["held"]) for i in shown["items"]] == [
        ("10.77.0.2", {"8080/tcp": 30001}, True)
    ]
    world.client.post(f"{CL}/ipam/del", json=_sandbox("web-0", "c0"), headers=node)
    gone = h.get(f"{BIZ}/apps/web/network")
    assert (gone["items"], gone["total"]) == ([], 0)  # NAT: gone with the sandbox


def test_the_sweep_frees_an_app_address_once_the_app_is_deleted(
    h: AppsHarness, world: World, platform: Platform
) -> None:
    _pool(world)
    _labelled_node(world, "rack-a-1", "10.9.0.0/24")
    _floating_app(h, policy="app", replicas=2)
    node = _node_token(world)
    for i in range(2):
        _add(world, node, f"web-{i}", f"c{i}", on="rack-a-1")
        world.client.post(f"{CL}/ipam/del", json=_sandbox(f"web-{i}", f"c{i}"), headers=node)
    sweep = FloatingIpSweep(db=platform.db)
    h.post(f"{BIZ}/apps/web/scale-in", {"instance_ids": [1]})
    asyncio.run(sweep.start(loops=1))
    assert sweep.freed == 0  # "app": kept while the app exists
    r = world.client.delete(f"{BIZ}/apps/web", headers=world.admin)
    assert r.status_code in (200, 202, 204), r.text
    asyncio.run(sweep.start(loops=1))
    assert sweep.freed == 2
    pools = world.client.get(f"{CL}/ip-pools", headers=world.admin).json()["items"]
    assert pools[0]["used"] == 0


def _network(h: AppsHarness, **params: Any) -> dict[str, Any]:
    return dict(h.get(f"{BIZ}/apps/web/network", **params))


def _pages(h: AppsHarness, limit: int, **params: Any) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _network(h, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(page)
        cursor = page["next_cursor"]
        if not cursor:
            return pages


def test_an_apps_addresses_come_a_page_at_a_time_with_counts_of_every_one(
    h: AppsHarness, world: World
) -> None:
    _pool(world)
    _floating_app(h, policy="never", replicas=4)  # instances 0-3
    node = _node_token(world)
    for pod in ("web-0", "web-1", "web-2", "web-3", "web-7", "web-12"):
        _add(world, node, pod, f"c-{pod}")
    # not addresses of app web: another app's pod, a name the platform never gives, a stray
    for pod in ("web-api-0", "web-07", "webx-1"):
        _add(world, node, pod, f"c-{pod}")

    pages = _pages(h, limit=4)
    assert [len(p["items"]) for p in pages] == [4, 2]
    pods = [a["pod"] for p in pages for a in p["items"]]
    assert pods == ["web-0", "web-1", "web-12", "web-2", "web-3", "web-7"]  # by pod name
    for page in pages:  # counted over every address, on every page
        assert (page["total"], page["kept_total"]) == (6, 2)
        assert page["mode"] == "floating-ip" and page["ip_release"] == "never"
    kept = {a["pod"]: (a["instance"], a["kept"]) for p in pages for a in p["items"]}
    assert kept["web-12"] == (12, True) and kept["web-7"] == (7, True)
    assert kept["web-1"] == (1, False)
    # filters: the kept ones, the wanted ones, chosen instances
    assert [a["pod"] for a in _network(h, kept=True)["items"]] == ["web-12", "web-7"]
    assert len(_network(h, kept=False)["items"]) == 4
    chosen = _network(h, instance=[1, 12, 99])
    assert [a["pod"] for a in chosen["items"]] == ["web-1", "web-12"]
    # a cursor belongs to its list
    wanted = _network(h, kept=False, limit=1)
    r = h.client.get(
        f"{BIZ}/apps/web/network",
        params={"kept": "true", "cursor": wanted["next_cursor"]},
        headers=h.headers,
    )
    assert r.status_code == 422 and "start from page one" in r.json()["message"], r.text
    r = h.client.get(
        f"{BIZ}/apps/web/network", params={"instance": list(range(501))}, headers=h.headers
    )
    assert r.status_code == 422, r.text
    r = h.client.get(f"{BIZ}/apps/web/network", params={"instance": -1}, headers=h.headers)
    assert r.status_code == 422, r.text

    # scaled in: its address is kept (never); the app stopped: every one is
    h.post(f"{BIZ}/apps/web/scale-in", {"instance_ids": [3]})
    assert (_network(h)["total"], _network(h)["kept_total"]) == (6, 3)
    assert _network(h, instance=[3])["items"][0]["kept"] is True
    h.post(f"{BIZ}/apps/web/stop")
    stopped = _network(h, limit=1)
    assert (stopped["total"], stopped["kept_total"]) == (6, 6)
    assert len(_network(h, kept=True)["items"]) == 6
