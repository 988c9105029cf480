"""The network's console pages (gaia/console/pages/network.py): an app's network tab (mode,
release policy, addresses, NAT host ports, bandwidth) and its form, the instance table's
bandwidth column, and the platform admins' floating-IP pools page.

Addresses are made as the nodes' plugin makes them: ``POST /clusters/{cluster}/ipam/add`` with
the cluster's IPAM node token (tests/api/test_network.py covers those calls)."""

from __future__ import annotations

import asyncio
import html as html_module
import re
from typing import Any

import pytest

from gaia.console.pages import network as network_pages
from gaia.monitor.metrics.series import Sample
from gaia.platform import Platform
from tests.conftest import World
from tests.console.forms import log_in
from tests.console.test_clusters import html, post
from tests.support.apps_harness import template

CL = "/api/v1/clusters/sim-1"
NET = "/console/b/alpha/apps/web/network"


def _make_app(world: World, *, bandwidth: int = 0, replicas: int = 2, **extra: Any) -> None:
    doc = template("v1", "registry.example.com/web:1", cpu=0.1, memory=64, **extra)
    if bandwidth:
        doc["resources"]["bandwidth"] = bandwidth
    r = world.client.post(
        "/api/v1/businesses/alpha/apps",
        json={"name": "web", "cluster": "sim-1", "replicas": replicas, "templates": [doc]},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text


def _pool(world: World, **extra: str) -> None:
    body = {"name": "rack-a", "subnet": "10.9.0.0/24", "zone": "bj-1", **extra}
    r = world.client.post(f"{CL}/ip-pools", json=body, headers=world.admin)
    assert r.status_code == 201, r.text


def _attach(world: World, pod: str, **body: Any) -> None:
    token = world.client.get(f"{CL}/ipam/token", headers=world.admin).json()["token"]
    r = world.client.post(
        f"{CL}/ipam/add",
        json={"namespace": "alpha", "pod": pod, "container_id": f"c-{pod}", "node": "n1", **body},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text


def _cells(page: str, row_id: str) -> str:
    found = re.search(rf'<tr id="{row_id}">(.*?)</tr>', page, flags=re.S)
    assert found is not None, page[:3000]
    return found.group(1)


def test_an_app_shows_its_mode_policy_addresses_and_bandwidth(world: World) -> None:
    _pool(world)
    _make_app(world, bandwidth=100, network_mode="floating-ip", ip_release="never")
    _attach(world, "web-0", mode="floating-ip", subnet="10.9.0.0/24")
    page = html(world, "viewer", NET)
    assert re.search(r'id="network-mode">floating-ip<', page)
    assert re.search(r'id="network-release">never<', page)
    row = _cells(page, "net-0")
    assert "10.9.0.1" in row or "10.9.0.2" in row, row
    assert "rack-a" in row and "100 Mbit/s" in row
    # the sim cluster has sent no bytes yet: no invented number
    assert "live use: not collected" in row
    assert 'href="/console/b/alpha/apps/web/network"' in page  # the tab
    assert 'id="network-form"' not in page  # a viewer gets no form
    # an address kept for an instance scaled away (policy never) is shown apart
    _attach(world, "web-7", mode="floating-ip", subnet="10.9.0.0/24")
    kept = html(world, "viewer", NET).split('id="network-kept"')[1]
    assert "web-7" in kept and "never" in kept
    shown = world.client.get(
        "/api/v1/businesses/alpha/apps/web/network", params={"kept": "true"}, headers=world.admin
    ).json()
    assert [a["pod"] for a in shown["items"]] == ["web-7"] and shown["kept_total"] == 1
    # the instance table shows the guarantee too
    page = html(world, "viewer", "/console/b/alpha/apps/web/instances")
    assert "guarantee 100 Mbit/s" in _cells(page, "instance-0")


def _link(page: str, pattern: str) -> str:
    found = re.search(pattern, page)
    assert found is not None, page[:3000]
    return html_module.unescape(found.group(1))


def test_the_tab_reads_a_page_of_addresses_and_a_page_of_kept_ones(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of two (the tab's are 50): the addresses shown are those of the page's
    instances, and the kept ones are a page of their own with their own links."""
    monkeypatch.setattr(network_pages, "INSTANCES_PER_PAGE", 2)
    monkeypatch.setattr(network_pages, "KEPT_PER_PAGE", 2)
    _pool(world)
    _make_app(world, replicas=3, network_mode="floating-ip", ip_release="never")
    for pod in ("web-0", "web-2", "web-5", "web-6", "web-7"):
        _attach(world, pod, mode="floating-ip", subnet="10.9.0.0/24")
    page = html(world, "viewer", NET)
    assert "10.9.0." in _cells(page, "net-0") and "rack-a" in _cells(page, "net-0")
    assert "rack-a" not in _cells(page, "net-1")  # no address
    assert 'id="net-2"' not in page  # on the next page of instances
    kept = page.split('id="network-kept"')[1]
    assert "3 addresses kept" in kept
    assert "web-5" in kept and "web-6" in kept and "web-7" not in kept
    # the next page of instances shows instance 2's address
    second = html(world, "viewer", _link(page, r'<a href="([^"]+)" rel="next">'))
    assert "10.9.0." in _cells(second, "net-2") and 'id="net-0"' not in second
    # the next page of kept addresses, with the way back to its first
    more = html(world, "viewer", _link(page, r'<a href="([^"]+)" rel="next" id="kept-next">'))
    kept = more.split('id="network-kept"')[1]
    assert "web-7" in kept and "web-5" not in kept
    assert 'id="kept-next"' not in more and ">First</a>" in more


def test_live_use_is_the_newest_point_of_the_metric_store(world: World, platform: Platform) -> None:
    _make_app(world, bandwidth=100)
    labels = {"business": "alpha", "app": "web", "instance": "web-1"}
    now = platform.clock.now().timestamp()
    sent = "gaia_instance_network_transmit_bytes_per_second"
    asyncio.run(platform.metric_store.write([Sample(sent, labels, 1_250_000.0, now - 5)]))
    page = html(world, "viewer", NET)
    assert "10.00 Mbit/s" in _cells(page, "net-1")  # 1.25 MB/s sent
    assert "live use: not collected" in _cells(page, "net-0")
    page = html(world, "viewer", "/console/b/alpha/apps/web/instances")
    assert "live use: 10.00 Mbit/s sent" in _cells(page, "instance-1")


def test_nat_instances_show_their_mapped_host_ports(world: World) -> None:
    _make_app(world, network_mode="nat")
    _attach(world, "web-1", mode="nat", node_ip="10.9.0.17", ports={"8080/tcp": 30123})
    page = html(world, "developer", NET)
    assert re.search(r'id="network-mode">nat<', page)
    row = _cells(page, "net-1")
    assert "8080/tcp → 30123" in row and "10.9.0.17" in row
    assert "none (floating-ip only)" in page


def test_another_business_sees_nothing(world: World) -> None:
    _make_app(world)
    html(world, "outsider", NET, status=404)
    r = post(world, "outsider", NET, {"mode": "nat", "ip_release": ""})
    assert r.status_code == 404


def test_a_developer_changes_the_network_by_a_new_default_version(world: World) -> None:
    _make_app(world)
    page = html(world, "developer", NET)
    assert 'id="network-form"' in page and re.search(r'id="network-mode">overlay<', page)
    r = post(world, "developer", NET, {"mode": "floating-ip", "ip_release": "app"})
    assert r.status_code == 303, r.text[:2000]
    assert "v1-floating-ip" in r.headers["location"]
    got = world.client.get("/api/v1/businesses/alpha/apps/web/network", headers=world.admin)
    assert got.json()["mode"] == "floating-ip" and got.json()["ip_release"] == "app"
    app = world.client.get("/api/v1/businesses/alpha/apps/web", headers=world.admin).json()
    assert app["default_template"] == "v1-floating-ip"
    # the copy keeps the rest of the template
    t = world.client.get(
        "/api/v1/businesses/alpha/apps/web/templates/v1-floating-ip", headers=world.admin
    ).json()
    assert t["image"] == "registry.example.com/web:1" and t["spec"]["ports"][0]["port"] == 8080


def test_the_form_shows_errors_on_their_fields(world: World) -> None:
    _make_app(world)
    r = post(world, "developer", NET, {"mode": "nat", "ip_release": "never"})
    assert r.status_code == 422
    assert re.search(r'id="n-ip_release"[^>]*aria-invalid="true"', r.text), r.text[:3000]
    assert "a release policy applies to floating-ip only" in r.text
    r = post(world, "developer", NET, {"mode": "carrier-pigeon", "ip_release": ""})
    assert r.status_code == 422 and re.search(r'id="n-mode"[^>]*aria-invalid="true"', r.text)
    r = post(world, "developer", NET, {"mode": "overlay", "ip_release": ""})
    assert r.status_code == 422 and "the app already uses this network" in r.text


def test_a_viewer_cannot_post_the_form(world: World) -> None:
    _make_app(world)
    r = post(world, "viewer", NET, {"mode": "nat", "ip_release": ""})
    assert r.status_code == 403
    app = world.client.get("/api/v1/businesses/alpha/apps/web", headers=world.admin).json()
    assert app["default_template"] == "v1"


def test_admins_list_create_and_delete_pools(world: World) -> None:
    _pool(world)
    node = {"name": "rack-a-1", "cpu": 8, "memory_mib": 16384,
            "labels": {"gaia.io/subnet": "10.9.0.0_24"}}  # fmt: skip
    r = world.client.post(f"{CL}/nodes", json=node, headers=world.admin)
    assert r.status_code == 201, r.text
    _attach(world, "web-0", mode="floating-ip", subnet="10.9.0.0/24")
    page = html(world, "platform-admin", "/console/network")
    assert 'href="/console/network"' in page  # in the navigation
    row = _cells(page, "pool-sim-1-rack-a")
    node_row = re.search(r"<th scope=\"row\">rack-a-1</th>(.*?)</tr>", page, flags=re.S)
    assert node_row is not None and "10.9.0.0/24" in node_row.group(1)
    assert "rack-a" in node_row.group(1)  # the node's pool, by its subnet label
    # a /24 of 254 hosts less the gateway: 253 addresses, one used
    assert re.search(r'class="num used">1<', row) and re.search(r'class="num free">252<', row)
    r = post(
        world,
        "platform-admin",
        "/console/network/pools",
        {"cluster": "sim-1", "name": "rack-b", "subnet": "10.8.0.0/24", "zone": "",
         "gateway": "", "range_start": "", "range_end": ""},
    )  # fmt: skip
    assert r.status_code == 303, r.text[:2000]
    page = html(world, "platform-admin", "/console/network")
    assert "rack-b" in _cells(page, "pool-sim-1-rack-b")
    r = post(world, "platform-admin", "/console/network/sim-1/pools/rack-b/delete", {})
    assert r.status_code == 303 and "Deleted" in r.headers["location"]
    r = post(world, "platform-admin", "/console/network/sim-1/pools/rack-a/delete", {})
    assert r.status_code == 303 and "error=" in r.headers["location"]  # it has an allocation


def test_the_pool_form_shows_errors_on_their_fields(world: World) -> None:
    _pool(world)
    form = {"cluster": "sim-1", "name": "rack-b", "subnet": "10.9.0.0/25", "zone": "",
            "gateway": "", "range_start": "", "range_end": ""}  # fmt: skip
    r = post(world, "platform-admin", "/console/network/pools", form)
    assert r.status_code == 422 and 'value="10.9.0.0/25"' in r.text  # overlaps rack-a
    r = post(world, "platform-admin", "/console/network/pools", {**form, "subnet": "10.7.0.0/24",
             "range_start": "10.6.0.9"})  # fmt: skip
    assert r.status_code == 422
    assert re.search(r'id="pool-range_start"[^>]*aria-invalid="true"', r.text), r.text[:3000]


def test_only_platform_admins_see_the_pools(world: World) -> None:
    for who in ("business-admin", "developer", "viewer"):
        page = html(world, who, "/console/network", status=403)
        assert 'href="/console/network"' not in page
        r = post(world, who, "/console/network/pools", {"cluster": "sim-1", "name": "x"})
        assert r.status_code == 403
    assert 'href="/console/network"' not in html(world, "developer", "/console")


def test_the_pages_speak_chinese(world: World) -> None:
    _pool(world)
    _make_app(world, network_mode="floating-ip", ip_release="never")
    _attach(world, "web-7", mode="floating-ip", subnet="10.9.0.0/24")
    log_in(world.client, "admin")
    r = world.client.post(
        "/console/language", data={"language": "zh-CN", "next": "/console"}, follow_redirects=False
    )
    assert r.status_code == 303
    page = world.client.get(NET).text
    assert "网络" in page and "带宽保障" in page
    assert "保留了 1 个地址" in page  # the kept addresses' count
    assert "浮动 IP 池" in world.client.get("/console/network").text
