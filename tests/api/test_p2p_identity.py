"""A P2P agent proves its node (docs/p2p.md, "Threat model"), against a real kube-apiserver.

The agents' calls name a node, and the answer to ``POST .../p2p/agents`` carries that node's
registry account: a token must speak for that node alone. Here the agents' pods run on two KWOK
nodes of the session's control plane, each with a projected ServiceAccount token bound to its
pod (TokenRequest, audience ``gaia-p2p``), which Gaia sends to the cluster's TokenReview.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from gaia.platform import Platform, registry_service
from tests.conftest import World
from tests.support.kube import ControlPlane, fake_node

LAYER = "sha256:" + "a" * 64
REGISTRY = "http://127.0.0.1:5999"


@dataclass
class Bed:
    """The cluster ``kube`` in Gaia; agents' pods on nodes ``a`` and ``b`` of the real plane."""

    world: World
    platform: Platform
    plane: ControlPlane
    api: httpx.Client
    namespace: str
    nodes: dict[str, str]  # "a"/"b" -> node name
    pods: dict[str, dict[str, Any]]  # node name -> its agent pod

    @property
    def p2p(self) -> str:
        return "/api/v1/clusters/kube/p2p"

    def token(
        self,
        node: str,
        *,
        audience: str = "gaia-p2p",
        account: str = "gaia-p2p-agent",
        pod: dict[str, Any] | None = None,
    ) -> str:
        """A TokenRequest for ``account``, bound to ``node``'s agent pod (or ``pod``)."""
        bound = pod or self.pods[node]
        r = self.api.post(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
            json={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience],
                    "expirationSeconds": 600,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": bound["metadata"]["name"],
                        "uid": bound["metadata"]["uid"],
                    },
                },
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["status"]["token"])

    def register(self, token: str, node: str) -> httpx.Response:
        body = {"node": node, "zone": "z1", "address": f"{node}:7001", "upload_slots": 4}
        return self.world.client.post(
            f"{self.p2p}/agents", json=body, headers={"Authorization": f"Bearer {token}"}
        )


def _pod(api: httpx.Client, namespace: str, name: str, node: str, account: str) -> dict[str, Any]:
    r = api.post(
        f"/api/v1/namespaces/{namespace}/pods",
        json={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": node,
                "serviceAccountName": account,
                "containers": [{"name": "agent", "image": "gaia:latest"}],
            },
        },
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture
def bed(world: World, platform: Platform, control_plane: ControlPlane) -> Iterator[Bed]:
    suffix = uuid.uuid4().hex[:6]
    namespace = f"p2p-{suffix}"
    api = control_plane.http_client()
    nodes = {side: f"p2p-{side}-{suffix}" for side in ("a", "b")}
    for name in nodes.values():
        assert api.post("/api/v1/nodes", json=fake_node(name)).status_code == 201
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": namespace}}).status_code == 201
    for account in ("gaia-p2p-agent", "someone-else"):
        r = api.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": account}}
        )
        assert r.status_code == 201, r.text
    pods = {
        node: _pod(api, namespace, f"agent-{side}", node, "gaia-p2p-agent")
        for side, node in nodes.items()
    }
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "kube", "kind": "kubernetes", "kubeconfig": control_plane.kubeconfig_text()},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    platform.p2p_auth.service_account = f"{namespace}:gaia-p2p-agent"
    settings = platform.settings.model_copy(update={"registry_url": REGISTRY})
    platform.registry = registry_service(settings, platform.secrets)
    yield Bed(world, platform, control_plane, api, namespace, nodes, pods)
    api.delete(f"/api/v1/namespaces/{namespace}")
    for name in nodes.values():
        api.delete(f"/api/v1/nodes/{name}")
    api.close()


def test_a_pod_bound_token_gets_its_own_nodes_registry_account_only(bed: Bed) -> None:
    a, b = bed.nodes["a"], bed.nodes["b"]
    token = bed.token(a)
    r = bed.register(token, a)
    assert r.status_code == 200, r.text
    (creds,) = r.json()["registries"].values()
    assert creds["username"] == f"node+kube+{a}"
    r = bed.register(token, b)
    assert r.status_code == 403, r.text
    assert "registries" not in r.text and f"node+kube+{b}" not in r.text
    # the refusal is on the records, under the node the token proved
    records = bed.world.client.get(
        "/api/v1/records", params={"limit": 100}, headers=bed.world.admin
    ).json()["items"]
    (refused,) = [x for x in records if x["path"].endswith("/p2p/agents")]
    assert (refused["actor"], refused["status_code"]) == (f"p2p-agent:{a}", 403)
    # node b's own agent gets node b's account
    (creds,) = bed.register(bed.token(b), b).json()["registries"].values()
    assert creds["username"] == f"node+kube+{b}"


def test_a_node_cannot_act_for_another_in_any_swarm_call(bed: Bed) -> None:
    a, b = bed.nodes["a"], bed.nodes["b"]
    assert bed.register(bed.token(b), b).status_code == 200
    agent = {"Authorization": f"Bearer {bed.token(a)}"}
    c, p2p = bed.world.client, bed.p2p
    task = {"registry": "r.io", "repository": "team/web", "digest": LAYER, "size": 1 << 20}
    calls = [
        ("tasks", task),
        (f"tasks/{LAYER}/schedule", {"want": 1, "wait_s": 0}),
        (f"tasks/{LAYER}/reports", {"reports": [{"piece": 0, "ok": False, "parent": a}]}),
        (f"tasks/{LAYER}/done", {"ok": False, "evicted": True}),
        ("manifests", {"registry": "r.io", "repository": "team/web", "reference": "v1",
                       "digest": LAYER, "media_type": "application/json", "blobs": []}),
    ]  # fmt: skip
    for path, body in calls:
        r = c.post(f"{p2p}/{path}", json={"node": b, **body}, headers=agent)
        assert r.status_code == 403, (path, r.text)
    # the same calls for its own node go through
    assert bed.register(bed.token(a), a).status_code == 200
    manifest = calls[-1][1]
    assert c.post(f"{p2p}/manifests", json={"node": a, **manifest}, headers=agent).is_success
    # its own task passes the identity check and meets the access check: Gaia does not run
    # this platform's registry, so it cannot tell r.io's blobs from its own (docs/p2p.md)
    r = c.post(f"{p2p}/tasks", json={"node": a, **task}, headers=agent)
    assert r.status_code == 403 and "not shared" in r.json()["message"], r.text


def test_a_token_for_another_audience_is_refused(bed: Bed) -> None:
    a = bed.nodes["a"]
    r = bed.register(bed.token(a, audience="https://kubernetes.default.svc"), a)
    assert r.status_code == 401, r.text


def test_another_service_accounts_token_on_the_same_node_is_refused(bed: Bed) -> None:
    """A business's pod on node a may mint a gaia-p2p token for its own account: it is not
    node a's agent."""
    a = bed.nodes["a"]
    other = _pod(bed.api, bed.namespace, "workload", a, "someone-else")
    r = bed.register(bed.token(a, account="someone-else", pod=other), a)
    assert r.status_code == 401, r.text
    assert "not the P2P agents' ServiceAccount" in r.json()["message"]


def test_the_token_of_a_deleted_pod_is_refused(bed: Bed) -> None:
    bed.platform.p2p_auth.review_cache_s = 0  # ask the cluster on every call
    a = bed.nodes["a"]
    token = bed.token(a)
    assert bed.register(token, a).status_code == 200
    pod = bed.pods[a]["metadata"]
    r = bed.api.delete(
        f"/api/v1/namespaces/{bed.namespace}/pods/{pod['name']}",
        params={"gracePeriodSeconds": 0},
    )
    assert r.status_code == 200, r.text
    # the API server keeps a token's successful authentication for 10 s (its token cache)
    deadline = time.monotonic() + 30
    while (r := bed.register(token, a)).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert r.status_code == 401, r.text


def test_an_expired_token_is_refused(bed: Bed) -> None:
    """The same claims as a real token, signed with the cluster's own key, an hour stale."""
    a = bed.nodes["a"]
    real = bed.token(a)
    header = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))
    claims = jwt.decode(real, options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    stale = jwt.encode(claims, bed.plane.pki.sa_private, algorithm="RS256", headers=header)
    fresh = dict(claims, iat=now, nbf=now, exp=now + 600)
    resigned = jwt.encode(fresh, bed.plane.pki.sa_private, algorithm="RS256", headers=header)
    # the forgery is good but for its expiry: the same claims signed fresh are accepted
    assert bed.register(resigned, a).status_code == 200
    r = bed.register(stale, a)
    assert r.status_code == 401, r.text


def test_the_cluster_wide_token_is_refused_on_a_real_cluster_and_node_tokens_bind(
    bed: Bed,
) -> None:
    c, admin, p2p = bed.world.client, bed.world.admin, bed.p2p
    a, b = bed.nodes["a"], bed.nodes["b"]
    r = c.get(f"{p2p}/agent-token", headers=admin)
    assert r.status_code == 409, r.text
    bed.platform.p2p_auth.shared_token_where = "all"  # GAIA_P2P_SHARED_AGENT_TOKEN=all
    shared = c.get(f"{p2p}/agent-token", headers=admin).json()["token"]
    assert bed.register(shared, b).status_code == 200  # the weaker mode: any node
    bed.platform.p2p_auth.shared_token_where = "sim"  # the default
    r = bed.register(shared, a)
    assert r.status_code == 403 and "prove their node" in r.json()["message"]
    r = c.get(f"{p2p}/agent-token", params={"node": a}, headers=admin)
    assert r.status_code == 200 and r.json()["node"] == a
    node_token = r.json()["token"]
    assert bed.register(node_token, a).status_code == 200
    assert bed.register(node_token, b).status_code == 403
    # a node token of one node forged for another: 401
    forged = node_token.rsplit(".", 1)[0] + f".{b}"
    assert bed.register(forged, b).status_code == 401
