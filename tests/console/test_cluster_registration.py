"""Cluster registration and removal (gaia/console/pages/clusters.py): platform admins only;
a kubeconfig is never echoed back; removal lists what the cluster still holds first."""

from __future__ import annotations

from tests.conftest import World
from tests.console.test_clusters import as_user, html, post

KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n# SECRET-kubeconfig-marker\n"


def test_a_developer_cannot_register_or_remove_clusters(world: World) -> None:
    for who in ("developer", "business-admin"):
        assert 'href="/console/clusters/new"' not in html(world, who, "/console/clusters")
        assert as_user(world, who).get("/console/clusters/new").status_code == 403
        r = post(world, who, "/console/clusters/new", {"name": "x", "kind": "sim"})
        assert r.status_code == 403
        assert as_user(world, who).get("/console/clusters/sim-1/delete").status_code in (403, 404)
        assert post(world, who, "/console/clusters/sim-1/delete", {}).status_code in (403, 404)
    assert 'href="/console/clusters/new"' in html(world, "platform-admin", "/console/clusters")


def test_an_admin_registers_a_sim_cluster(world: World) -> None:
    form = {"name": "sim-9", "kind": "sim", "region": "r", "nodes": "2", "cpu": "8", "gpus": "0"}
    r = post(world, "platform-admin", "/console/clusters/new", form)
    assert r.status_code == 303, r.text[:2000]
    assert "sim-9" in html(world, "platform-admin", "/console/clusters")


def test_form_errors_on_fields_and_the_kubeconfig_never_echoed(world: World) -> None:
    r = post(world, "platform-admin", "/console/clusters/new", {"name": "k", "kind": "kubernetes"})
    assert r.status_code == 422 and 'id="err-kubeconfig"' in r.text
    r = post(
        world,
        "platform-admin",
        "/console/clusters/new",
        {"name": "s", "kind": "sim", "cpu": "many"},
    )
    assert r.status_code == 422 and 'id="err-cpu"' in r.text
    r = post(
        world,
        "platform-admin",
        "/console/clusters/new",
        {"name": "Bad Name", "kind": "kubernetes", "kubeconfig": KUBECONFIG},
    )
    assert r.status_code == 422 and "SECRET-kubeconfig-marker" not in r.text
    r = as_user(world, "platform-admin").post(
        "/console/clusters/new",
        data={"name": "Bad Name", "kind": "kubernetes"},
        files={"kubeconfig_file": ("config", KUBECONFIG.encode())},
        follow_redirects=False,
    )
    assert r.status_code == 422 and "SECRET-kubeconfig-marker" not in r.text


def test_removal_lists_what_the_cluster_holds_before_the_delete(world: World) -> None:
    page = html(world, "platform-admin", "/console/clusters/sim-1")
    assert 'href="/console/clusters/sim-1/delete"' in page
    assert 'href="/console/clusters/sim-1/delete"' not in html(
        world, "developer", "/console/clusters/sim-1"
    )
    page = html(world, "platform-admin", "/console/clusters/sim-1/delete")
    assert 'id="held-quotas"' in page and '<th scope="row">alpha</th>' in page
    r = post(world, "platform-admin", "/console/clusters/sim-1/delete", {"force": "true"})
    assert r.status_code == 303 and "ok=" in r.headers["location"], r.headers["location"]
    assert as_user(world, "platform-admin").get("/console/clusters/sim-1").status_code == 404


def test_the_registration_pages_speak_chinese(world: World) -> None:
    r = world.client.patch("/api/v1/users/admin", json={"language": "zh-CN"}, headers=world.admin)
    assert r.status_code == 200
    assert "注册集群" in html(world, "platform-admin", "/console/clusters/new")
    assert "集群中仍有的内容" in html(world, "platform-admin", "/console/clusters/sim-1/delete")
