"""Clusters: registration, kubeconfig secrecy, background health, removal.

The health tests stand a plain HTTP server in for a kube-apiserver's ``/readyz`` (the probe is
one GET); the real control plane arrives with the Kubernetes issue and runs the same probe.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.platform import Platform
from gaia.providers.sim import SimCluster
from tests.conftest import World

TOKEN = "s3cr3t-kube-token-do-not-leak"


def kubeconfig(server: str) -> str:
    return f"""
apiVersion: v1
kind: Config
current-context: prod
contexts:
- name: prod
  context: {{cluster: bj, user: gaia}}
clusters:
- name: bj
  cluster: {{server: "{server}"}}
users:
- name: gaia
  user: {{token: {TOKEN}}}
"""


class ReadyzHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/readyz" and self.headers.get("Authorization") == f"Bearer {TOKEN}"
        self.send_response(200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"unauthorized")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def apiserver() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ReadyzHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(platform: Platform) -> None:
    loop = ClusterHealthLoop(db=platform.db, providers=platform.providers, interval=1, timeout=1)
    asyncio.run(loop.start(loops=1))


def test_kubeconfig_is_encrypted_and_never_returned_or_recorded(
    client: TestClient, admin: dict[str, str], platform: Platform, apiserver
) -> None:
    url = f"http://127.0.0.1:{apiserver.server_address[1]}"
    r = client.post(
        "/api/v1/clusters",
        json={
            "name": "bj-prod",
            "kind": "kubernetes",
            "region": "ap-beijing",
            "zone": "bj-3",
            "labels": {"env": "prod"},
            "kubeconfig": kubeconfig(url),
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.json()["has_kubeconfig"] is True and "kubeconfig" not in r.json()
    everything = [
        client.get("/api/v1/clusters/bj-prod", headers=admin).text,
        client.get("/api/v1/clusters", headers=admin).text,
        client.get("/api/v1/records", headers=admin).text,
        client.get("/api/v1/events", headers=admin).text,
    ]
    assert all(TOKEN not in page for page in everything)
    with platform.db.engine.connect() as conn:
        stored = conn.execute(text("SELECT kubeconfig_encrypted FROM clusters")).scalar_one()
        records = conn.execute(text("SELECT summary, error FROM operation_records")).all()
    assert TOKEN.encode() not in bytes(stored)
    assert platform.secrets.decrypt(bytes(stored)).count(TOKEN) == 1
    assert all(TOKEN not in (s + e) for s, e in records)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("not: [valid", "not valid YAML"),
        ("kind: Config\n", "no current-context"),
        (kubeconfig("ftp://x").replace("ftp", "ftp"), "http(s) URL"),
        (kubeconfig("https://x").replace("token:", "tokenFile:"), "refers to a file"),
    ],
)
def test_broken_kubeconfig_is_refused_with_the_reason(
    client: TestClient, admin: dict[str, str], config: str, fragment: str
) -> None:
    r = client.post(
        "/api/v1/clusters",
        json={"name": "bad", "kind": "kubernetes", "kubeconfig": config},
        headers=admin,
    )
    assert r.status_code == 422 and fragment in r.json()["message"]


def test_health_goes_unreachable_when_the_api_server_stops_and_recovers(
    client: TestClient, admin: dict[str, str], platform: Platform, apiserver
) -> None:
    port = apiserver.server_address[1]
    client.post(
        "/api/v1/clusters",
        json={
            "name": "bj-prod",
            "kind": "kubernetes",
            "kubeconfig": kubeconfig(f"http://127.0.0.1:{port}"),
        },
        headers=admin,
    )
    _probe(platform)
    assert client.get("/api/v1/clusters/bj-prod", headers=admin).json()["health"] == "Healthy"

    apiserver.shutdown()
    apiserver.server_close()
    _probe(platform)  # one pass, bounded by the 1 s probe timeout
    body = client.get("/api/v1/clusters/bj-prod", headers=admin).json()
    assert body["health"] == "Unreachable"
    events = client.get(
        "/api/v1/events", params={"object_name": "bj-prod", "type": "Warning"}, headers=admin
    ).json()["items"]
    assert [e["reason"] for e in events] == ["ClusterUnreachable"]

    # Restart an API server on the same port: the next pass sees it again.
    revived = http.server.ThreadingHTTPServer(("127.0.0.1", port), ReadyzHandler)
    threading.Thread(target=revived.serve_forever, daemon=True).start()
    try:
        _probe(platform)
        assert client.get("/api/v1/clusters/bj-prod", headers=admin).json()["health"] == "Healthy"
    finally:
        revived.shutdown()
        revived.server_close()


def test_health_loop_interval_and_timeout_keep_the_30s_promise(platform: Platform) -> None:
    # Defaults: a dead cluster is marked within one interval plus one probe timeout.
    from gaia.settings import Settings

    defaults = Settings()
    assert (
        defaults.cluster_health_interval_seconds + defaults.cluster_health_timeout_seconds + 1 <= 30
    )


def test_dead_cluster_can_be_removed_and_takes_its_quotas(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    client.post("/api/v1/businesses", json={"name": "ocr"}, headers=admin)
    client.post(
        "/api/v1/clusters",
        json={
            "name": "gone",
            "kind": "kubernetes",
            "kubeconfig": kubeconfig(f"http://127.0.0.1:{_closed_port()}"),
        },
        headers=admin,
    )
    client.put("/api/v1/businesses/ocr/quotas/gone", json={"hard": {"cpu": 4}}, headers=admin)
    _probe(platform)
    assert client.get("/api/v1/clusters/gone", headers=admin).json()["health"] == "Unreachable"
    assert client.delete("/api/v1/clusters/gone", headers=admin).status_code == 409
    r = client.delete("/api/v1/clusters/gone", params={"force": "true"}, headers=admin)
    assert r.status_code == 204
    assert client.get("/api/v1/clusters/gone", headers=admin).status_code == 404
    assert client.get("/api/v1/businesses/ocr/quotas", headers=admin).json()["items"] == []


def test_sim_cluster_reports_nodes_and_can_be_cut_off(world: World, platform: Platform) -> None:
    _probe(platform)
    body = world.client.get("/api/v1/clusters/sim-1", headers=world.admin).json()
    assert (body["health"], body["node_count"], body["ready_node_count"]) == ("Healthy", 4, 4)
    cluster_id = 1
    provider = platform.providers.peek(cluster_id)
    assert isinstance(provider, SimCluster)
    provider.reachable = False
    _probe(platform)
    body = world.client.get("/api/v1/clusters/sim-1", headers=world.admin).json()
    assert body["health"] == "Unreachable"


def test_cluster_visibility_follows_quota(world: World, make_user) -> None:
    c = world.client
    c.post("/api/v1/clusters", json={"name": "sim-2", "kind": "sim"}, headers=world.admin)
    names = [
        x["name"] for x in c.get("/api/v1/clusters", headers=world.as_("viewer")).json()["items"]
    ]
    assert names == ["sim-1"]
    assert c.get("/api/v1/clusters/sim-2", headers=world.as_("viewer")).status_code == 404
    loner = make_user("loner")
    assert c.get("/api/v1/clusters", headers=loner).json()["items"] == []


def test_sim_spec_is_validated(client: TestClient, admin: dict[str, str]) -> None:
    r = client.post(
        "/api/v1/clusters", json={"name": "x", "kind": "sim", "sim": {"nodes": -1}}, headers=admin
    )
    assert r.status_code == 422 and "sim.nodes" in r.json()["message"]
    r = client.post(
        "/api/v1/clusters", json={"name": "x", "kind": "sim", "kubeconfig": "a"}, headers=admin
    )
    assert r.status_code == 422 and "only for kind=kubernetes" in r.json()["message"]
