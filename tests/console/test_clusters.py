"""The console's cluster pages: the clusters list, one cluster's nodes, and one node's GPU tree.

Each test logs a role in (the session cookie of an API login) and reads the HTML: what rows the
role sees, that filters and pages are applied on the server, that actions change the cluster and
come back with the API's message, and that destructive buttons say what they will do.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gaia.api.deps import SESSION_COOKIE
from gaia.platform import Platform
from gaia.store.models import Cluster
from tests.conftest import World
from tests.console.forms import send_form_token
from tests.support.apps_harness import AppsHarness, template

NODES = "/api/v1/clusters/sim-1/nodes"


def as_user(world: World, who: str) -> TestClient:
    """The shared client, logged in to the console as ``who`` (its API session token)."""
    token = world.as_(who)["Authorization"].removeprefix("Bearer ")
    world.client.cookies.set(SESSION_COOKIE, token)
    send_form_token(world.client, token)
    return world.client


def html(world: World, who: str, url: str, status: int = 200) -> str:
    response = as_user(world, who).get(url)
    assert response.status_code == status, response.text[:2000]
    return response.text


def post(world: World, who: str, url: str, data: dict[str, Any]) -> Any:
    return as_user(world, who).post(url, data=data, follow_redirects=False)


def rows(page: str) -> list[str]:
    """The row headers (first cells) of the page's tables' bodies."""
    return re.findall(r'<th scope="row"><a href="[^"]*">([^<]+)</a>', page)


def node_names(page: str) -> list[str]:
    return [r for r in rows(page) if "-node-" in r or r.startswith("extra")]


@pytest.fixture
def second_cluster(world: World) -> None:
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "sim-2", "kind": "sim", "region": "ap-shanghai", "zone": "ap-shanghai-2"},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------- the clusters list


def test_clusters_list_shows_only_the_clusters_a_role_can_see(
    world: World, second_cluster: None
) -> None:
    assert rows(html(world, "platform-admin", "/console/clusters")) == ["sim-1", "sim-2"]
    page = html(world, "viewer", "/console/clusters")
    assert rows(page) == ["sim-1"]  # alpha holds a quota in sim-1 only
    assert "ap-beijing-1" in page and "Last checked" in page
    assert '<th scope="col" class="num">Nodes ready / total</th>' in page


def test_clusters_list_filters_and_pages_on_the_server(world: World, second_cluster: None) -> None:
    admin = "platform-admin"
    assert rows(html(world, admin, "/console/clusters?q=-2")) == ["sim-2"]
    assert rows(html(world, admin, "/console/clusters?region=ap-beijing")) == ["sim-1"]
    assert rows(html(world, admin, "/console/clusters?health=Healthy")) == []
    page = html(world, admin, "/console/clusters?health=Unknown")
    assert rows(page) == ["sim-1", "sim-2"]
    first = html(world, admin, "/console/clusters?size=1")
    assert rows(first) == ["sim-1"]
    assert "Page 1 of 2" in first and 'href="?size=1&amp;page=2"' in first
    assert rows(html(world, admin, "/console/clusters?size=1&page=2")) == ["sim-2"]
    assert "No cluster matches the filters." in html(world, admin, "/console/clusters?q=nope")


# ---------------------------------------------------------------- one cluster's nodes


def test_cluster_page_lists_nodes_with_allocation_filters_and_pages(world: World) -> None:
    page = html(world, "viewer", "/console/clusters/sim-1")
    assert node_names(page) == [f"sim-1-node-{i}" for i in range(4)]
    assert 'role="meter"' in page and "0 / 32 cores" in page and "Tesla P40" in page
    first = html(world, "viewer", "/console/clusters/sim-1?size=3")
    assert node_names(first) == ["sim-1-node-0", "sim-1-node-1", "sim-1-node-2"]
    assert "Page 1 of 2" in first
    assert node_names(html(world, "viewer", "/console/clusters/sim-1?size=3&page=2")) == [
        "sim-1-node-3"
    ]
    assert node_names(html(world, "viewer", "/console/clusters/sim-1?q=node-2")) == ["sim-1-node-2"]
    assert node_names(html(world, "viewer", "/console/clusters/sim-1?status=cordoned")) == []


def test_viewers_see_nodes_without_actions_and_admins_with_confirmed_ones(world: World) -> None:
    viewer = html(world, "viewer", "/console/clusters/sim-1")
    assert "/cordon" not in viewer and "data-confirm" not in viewer and "Add a node" not in viewer
    admin = html(world, "platform-admin", "/console/clusters/sim-1")
    assert 'action="/console/clusters/sim-1/nodes/sim-1-node-0/cordon"' in admin
    assert re.search(r'data-confirm="Drain sim-1-node-0\?[^"]*its 0 instances are evicted', admin)
    assert re.search(
        r'data-confirm="Remove sim-1-node-0 from sim-1\? Removal is refused while instances '
        r"are bound to it \(0 now\)",
        admin,
    )
    assert 'id="add-node"' in admin and 'name="memory_mib"' in admin


def test_an_admin_adds_a_node_and_sees_validation_errors_next_to_the_fields(
    world: World,
) -> None:
    url = "/console/clusters/sim-1/nodes"
    r = post(world, "platform-admin", url, {"name": "extra-1", "cpu": "8", "memory_mib": "16384"})
    assert r.status_code == 303 and "ok=node+extra-1+added" in r.headers["location"]
    page = html(world, "platform-admin", r.headers["location"])
    assert "node extra-1 added" in page and "extra-1" in node_names(page)

    bad = post(world, "platform-admin", url, {"name": "extra-2", "cpu": "0", "memory_mib": "16"})
    assert bad.status_code == 422
    assert 'id="err-cpu"' in bad.text and 'id="err-memory_mib"' in bad.text
    assert 'value="extra-2"' in bad.text  # what was typed is kept
    nodes = world.client.get(NODES, headers=world.admin).json()["items"]
    assert "extra-2" not in [n["name"] for n in nodes]


def test_cordon_uncordon_drain_and_remove_come_back_with_the_apis_message(
    world: World, platform: Platform
) -> None:
    base = "/console/clusters/sim-1/nodes/sim-1-node-3"
    here = "/console/clusters/sim-1?q=node-3"
    r = post(world, "platform-admin", f"{base}/cordon", {"next": here})
    assert r.status_code == 303 and r.headers["location"].startswith(here + "&ok=")
    page = html(world, "platform-admin", r.headers["location"])
    assert "cordoned: no new instances are placed on it" in page
    assert node_names(html(world, "viewer", "/console/clusters/sim-1?status=cordoned")) == [
        "sim-1-node-3"
    ]
    r = post(world, "platform-admin", f"{base}/uncordon", {"next": here})
    assert "uncordoned" in html(world, "platform-admin", r.headers["location"])

    # An instance bound to the node: remove is refused until the node is drained.
    harness = AppsHarness(platform=platform, client=world.client, headers=world.admin)
    for n in range(3):
        world.client.post(f"{NODES}/sim-1-node-{n}/cordon", headers=world.admin)
    _app(harness, "web", template("v1", "shop/web:1", cpu=1, memory=256))
    r = post(world, "platform-admin", f"{base}/remove", {"next": here})
    page = html(world, "platform-admin", r.headers["location"])
    assert 'class="flash error"' in page and "sim-1-node-3" in node_names(page)
    r = post(world, "platform-admin", f"{base}/drain", {"next": here})
    drained = html(world, "platform-admin", r.headers["location"])
    assert "1 instance evicted, its app recreates it" in drained
    r = post(world, "platform-admin", f"{base}/remove", {"next": base})
    assert r.headers["location"].startswith("/console/clusters/sim-1?ok=")
    assert "sim-1-node-3" not in node_names(html(world, "viewer", "/console/clusters/sim-1"))


def test_a_viewer_cannot_act_on_nodes(world: World) -> None:
    r = post(world, "viewer", "/console/clusters/sim-1/nodes/sim-1-node-0/cordon", {})
    assert r.status_code == 303 and "error=" in r.headers["location"]
    assert 'class="flash error"' in html(world, "viewer", r.headers["location"])
    nodes = world.client.get(NODES, headers=world.admin).json()["items"]
    assert nodes and all(n["schedulable"] for n in nodes)


def test_missing_and_hidden_clusters_and_nodes_answer_404(
    world: World, second_cluster: None
) -> None:
    assert "not found" in html(world, "viewer", "/console/clusters/nope", status=404)
    html(world, "viewer", "/console/clusters/sim-2", status=404)  # alpha has no quota there
    html(world, "outsider", "/console/clusters/sim-2/nodes/sim-2-node-0", status=404)
    html(world, "viewer", "/console/clusters/sim-1/nodes/nope", status=404)


# ---------------------------------------------------------------- one node and its GPU tree


def _app(harness: AppsHarness, name: str, tmpl: dict[str, Any], biz: str = "alpha") -> str:
    """Create an app of one instance and let the controller bind it; returns its node."""
    harness.post(
        f"/api/v1/businesses/{biz}/apps",
        {"name": name, "cluster": "sim-1", "templates": [tmpl], "replicas": 1},
        status=201,
    )
    harness.tick()
    instances = harness.get(f"/api/v1/businesses/{biz}/apps/{name}/instances")["items"]
    assert instances[0]["node"], instances
    return str(instances[0]["node"])


def test_node_page_draws_the_schedulers_gpu_tree_and_who_holds_each_gpu(
    world: World, platform: Platform
) -> None:
    harness = AppsHarness(platform=platform, client=world.client, headers=world.admin)
    for n in range(1, 4):  # everything lands on node 0
        world.client.post(f"{NODES}/sim-1-node-{n}/cordon", headers=world.admin)
    assert _app(harness, "train", template("v1", "ml/train:1", gpu=2)) == "sim-1-node-0"
    assert _app(harness, "infer", template("v1", "ml/infer:1", gpu=0.5), "beta") == "sim-1-node-0"
    url = "/console/clusters/sim-1/nodes/sim-1-node-0"

    admin = html(world, "platform-admin", url)
    tree = admin[admin.index('<ul class="gpu-tree"') : admin.index("</ul>\n  </li>\n</ul>")]
    # pcie-2socket: two sockets (SOC), an upper switch per socket (PXB), a switch per pair (PIX)
    for link in ("SOC", "PXB", "PIX"):
        assert f"<strong>{link}</strong>" in tree
    assert tree.count("CPU socket, NUMA node 0") == 1 and "CPU socket, NUMA node 1" in tree
    assert tree.count('<li class="gpu') == 8
    assert tree.count("alpha / train / ") == 2  # two whole cards, linked
    assert "beta / infer / " in tree and "50% of the card" in tree
    assert "Link matrix" in admin and "Instances on this node" in admin

    viewer = html(world, "viewer", url)  # alpha's viewer: beta's instance stays anonymous
    assert "alpha / train / " in viewer and "beta / infer" not in viewer
    assert "another business" in viewer
    assert "data-confirm" not in viewer


def test_pages_speak_simplified_chinese_for_a_zh_cn_user(world: World) -> None:
    r = world.client.patch(
        "/api/v1/users/viewer", json={"language": "zh-CN"}, headers=world.as_("viewer")
    )
    assert r.status_code == 200, r.text
    page = html(world, "viewer", "/console/clusters")
    assert "最近检查" in page and "就绪节点 / 总数" in page
    page = html(world, "viewer", "/console/clusters/sim-1")
    assert "节点" in page and "已请求 / 容量" in page
    page = html(world, "viewer", "/console/clusters/sim-1/nodes/sim-1-node-0")
    assert "GPU 拓扑" in page and "跨 CPU 插槽" in page


def test_a_kubernetes_cluster_has_no_add_form_and_says_why(
    world: World, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = """
apiVersion: v1
kind: Config
current-context: prod
contexts:
- name: prod
  context: {cluster: bj, user: gaia}
clusters:
- name: bj
  cluster: {server: "https://127.0.0.1:9"}
users:
- name: gaia
  user: {token: not-a-real-token}
"""
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "k8s-1", "kind": "kubernetes", "region": "r", "kubeconfig": kubeconfig},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    with platform.db.read_session() as session:
        row = session.query(Cluster).filter_by(name="k8s-1").one()
        provider = platform.providers.for_cluster(row)

    async def no_nodes() -> list[Any]:  # no Kubernetes to ask here
        return []

    monkeypatch.setattr(provider, "list_nodes", no_nodes)
    page = html(world, "platform-admin", "/console/clusters/k8s-1")
    assert 'id="add-node"' not in page and "This cluster has no nodes." in page
    assert "Nodes join a Kubernetes cluster by themselves" in page


def test_the_images_page_shows_what_the_node_agents_pulled_and_from_where(world: World) -> None:
    c = world.client
    token = c.get("/api/v1/clusters/sim-1/p2p/agent-token", headers=world.admin).json()["token"]
    agent = {"Authorization": f"Bearer {token}"}
    layer = "sha256:" + "a" * 64
    for node in ("n1", "n2"):
        body = {"node": node, "zone": "z1", "address": f"{node}:7001", "upload_slots": 4}
        assert c.post("/api/v1/clusters/sim-1/p2p/agents", json=body, headers=agent).is_success
        seen = {
            "node": node, "registry": "registry.local", "repository": "team/web",
            "reference": "v1", "digest": "sha256:" + "c" * 64,
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "blobs": [{"digest": layer, "size": 1 << 20}],
        }  # fmt: skip
        assert c.post("/api/v1/clusters/sim-1/p2p/manifests", json=seen, headers=agent).is_success
        task = {"node": node, "registry": "registry.local", "repository": "team/web",
                "digest": layer, "size": 1 << 20}  # fmt: skip
        assert c.post("/api/v1/clusters/sim-1/p2p/tasks", json=task, headers=agent).is_success
        out = c.post(f"/api/v1/clusters/sim-1/p2p/tasks/{layer}/schedule",
                     json={"node": node, "wire": 2, "want": 1}, headers=agent).json()  # fmt: skip
        (grant,) = out["assignments"]
        report = {"piece": 0, "ok": True, "sha256": "f" * 64, "parent": grant["parent"],
                  "bytes": 1 << 20}  # fmt: skip
        r = c.post(f"/api/v1/clusters/sim-1/p2p/tasks/{layer}/reports",
                   json={"node": node, "reports": [report]}, headers=agent)  # fmt: skip
        assert r.is_success, r.text
        c.post(f"/api/v1/clusters/sim-1/p2p/tasks/{layer}/done",
               json={"node": node, "ok": True}, headers=agent)  # fmt: skip
    page = html(world, "platform-admin", "/console/clusters/sim-1/images")
    (row,) = re.findall(r"<tr>\s*<td>registry\.local/team/web:v1</td>.*?</tr>", page, re.S)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells == ["2", "1.0 MB", "1.0 MB", "50%"]  # nodes, from peers, from registry, share
    assert "n1:7001" in page and "n2:7001" in page
    assert "that you may pull are listed" not in page
    # a viewer sees the nodes, not another registry's image names (the API's scoping)
    page = html(world, "viewer", "/console/clusters/sim-1/images")
    assert "registry.local/team/web" not in page and "n1:7001" in page
    assert "that you may pull are listed" in page
    assert 'href="/console/clusters/sim-1/images"' in html(
        world, "viewer", "/console/clusters/sim-1"
    )
    html(world, "viewer", "/console/clusters/nope/images", status=404)
