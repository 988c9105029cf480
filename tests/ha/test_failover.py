"""Issue 21's failover: three Gaia replicas on one PostgreSQL, the leader killed (``SIGKILL``)
in the middle of a gray upgrade of a 50-instance GPU app on a real control plane.

Everything is real: ``gaia up`` processes (``tests/support/replicas.py``), a PostgreSQL server,
etcd + kube-apiserver + kube-controller-manager with KWOK nodes that carry FAKE GPUs (extended
resources; no GPU exists here), and a webhook receiver that counts each notification it gets.
What must hold, each checked from outside Gaia:

- a new leader of the ``controllers`` group within 15 s of the kill (``/metrics``);
- the upgrade finishes (``Succeeded``), every instance in place (the pod UIDs of before), on
  the new image;
- no instance lost or duplicated: exactly one pod per instance id, 50 in all;
- no GPU card held by two pods, from the API server's view (``gaia.io/gpu-ids`` per node);
- no notification delivered twice (the webhook's idempotency keys are all distinct).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gaia.kube.labels import APP_LABEL, GPU_IDS_ANNOTATION
from gaia.monitor.alerting.channels.webhook import IDEMPOTENCY_HEADER
from tests.conftest import start_plane
from tests.support.http_fakes import WebhookReceiver
from tests.support.kube import ControlPlane, fake_node
from tests.support.postgres import PostgresServer
from tests.support.replicas import ReplicaSet
from tests.support.waiting import eventually

INSTANCES = 50
NODES = 13  # 4 cards each: 52 cards for 50 one-card instances
BIZ = "/api/v1/businesses/hab"
ADMIN_PASSWORD = "ha-admin-password-1"
METRICS_TOKEN = "ha-metrics-token-1"
SECRET_KEY = "Z2FpYS1oYS10ZXN0LXNlY3JldC1rZXktMzItYnl0ZXM="  # 32 bytes, urlsafe base64


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_plane(tmp_path_factory, "ha-plane")
    plane.ensure_controller_manager()  # ResourceQuota usage, for quota admission
    api = plane.http_client()
    for i in range(NODES):
        r = api.post("/api/v1/nodes", json=fake_node(f"ha-{i:02d}", gpus=4))
        assert r.status_code == 201, r.text
    api.close()
    yield plane
    plane.stop()


@pytest.fixture
def replicas(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[ReplicaSet]:
    url = postgres_server.create_database("gaia_ha")
    env = {
        "GAIA_DATABASE_URL": url,
        "GAIA_SECRET_KEY": SECRET_KEY,
        "GAIA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GAIA_METRICS_TOKEN": METRICS_TOKEN,
        "GAIA_EGRESS_ALLOW_CIDRS": "127.0.0.0/8",  # the control plane and the webhook are local
        "GAIA_METRICS_INTERVAL_SECONDS": "2",
        "GAIA_ALERT_EVAL_INTERVAL_SECONDS": "2",
        "GAIA_CLUSTER_HEALTH_INTERVAL_SECONDS": "2",
        "GAIA_LOG_COLLECT_INTERVAL_SECONDS": "60",
    }
    rs = ReplicaSet(work=tmp_path, env=env, metrics_token=METRICS_TOKEN)
    first, *others = rs.add(3)
    first.start()  # the first migrates and creates the admin; the others find both done
    first.wait_ready()
    for replica in others:
        replica.start()
    for replica in others:
        replica.wait_ready()
    yield rs
    rs.stop()


def _api(base: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _call(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    r = client.request(method, path, json=body)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else None


def _pods(kube: httpx.Client) -> list[dict[str, Any]]:
    r = kube.get("/api/v1/namespaces/hab/pods", params={"labelSelector": f"{APP_LABEL}=web"})
    assert r.status_code == 200, r.text
    return cast(list[dict[str, Any]], r.json()["items"])


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_killing_the_leader_mid_upgrade_loses_nothing(
    plane: ControlPlane, replicas: ReplicaSet
) -> None:
    kube = plane.http_client()
    with WebhookReceiver() as receiver:
        token = _call(
            _api(replicas.replicas[0].url),
            "POST",
            "/api/v1/auth/login",
            {"username": "admin", "password": ADMIN_PASSWORD},
        )["token"]
        # every call goes to whichever replica is alive: a client behind a load balancer
        clients = {r.name: _api(r.url, token) for r in replicas.replicas}

        def gaia() -> httpx.Client:
            return clients[replicas.live()[0].name]

        _call(gaia(), "POST", "/api/v1/businesses", {"name": "hab"})
        _call(
            gaia(),
            "POST",
            "/api/v1/clusters",
            {"name": "kube", "kind": "kubernetes", "kubeconfig": plane.kubeconfig_text()},
        )
        hard = {"cpu": 1000, "memory": 10_000_000, "local_disk": 100_000, "gpu": 100}
        _call(gaia(), "PUT", f"{BIZ}/quotas/kube", {"hard": hard})

        def template(name: str, image: str) -> dict[str, Any]:
            return {
                "name": name,
                "image": image,
                "resources": {"cpu": 0.1, "memory": 64, "gpu": 1},
                "readiness": {"kind": "http", "port": 8080, "path": "/ready"},
            }

        _call(
            gaia(),
            "POST",
            f"{BIZ}/apps",
            {
                "name": "web",
                "cluster": "kube",
                "templates": [
                    template("v1", "registry.local/ha/web:v1"),
                    template("v2", "registry.local/ha/web:v2"),
                ],
                "replicas": INSTANCES,
            },
        )
        # a notification for each instance that runs (fires at once, resolves when its
        # container restarts for the upgrade, fires again): many deliveries across the kill
        hook = _call(
            gaia(),
            "POST",
            "/api/v1/alerts/channels",
            {"business": "hab", "name": "hook", "kind": "webhook", "config": {"url": receiver.url}},
        )
        _call(
            gaia(),
            "POST",
            "/api/v1/alerts/policies",
            {
                "business": "hab",
                "name": "web instance ready",
                "scope": {"kind": "app", "app": "web"},
                "metric": "gaia_instance_ready",
                "comparison": ">=",
                "threshold": 1,
                "for_seconds": 0,
                "severity": "info",
                "channel_ids": [hook["id"]],
            },
        )
        eventually(
            lambda: sum(_ready(p) for p in _pods(kube)) == INSTANCES,
            f"{INSTANCES} instances ready",
            timeout_s=180,
            interval_s=1,
        )
        before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in _pods(kube)}
        eventually(lambda: len(receiver.requests) > 0, "a first notification", timeout_s=60)

        leader = replicas.leader_of("controllers")
        assert leader is not None, "no replica leads the controllers"
        upgrade = _call(
            gaia(),
            "POST",
            f"{BIZ}/apps/web/upgrades",
            {"template": "v2", "instance_ids": list(range(INSTANCES)), "max_unavailable": 5},
        )

        def upgraded() -> int:
            return sum(
                1
                for p in _pods(kube)
                if p["spec"]["containers"][0]["image"].endswith(":v2") and _ready(p)
            )

        # kill the leader once the upgrade is under way, not finished
        eventually(lambda: upgraded() >= 5, "a first batch upgraded", timeout_s=120, interval_s=0.2)
        assert upgraded() < INSTANCES, "the upgrade finished before the kill: make it longer"
        leader.kill()
        killed_at = time.monotonic()
        new_leader = None
        while time.monotonic() - killed_at < 15:
            new_leader = replicas.leader_of("controllers")
            if new_leader is not None:
                break
            time.sleep(0.2)
        took = time.monotonic() - killed_at
        assert new_leader is not None and new_leader is not leader, (
            f"no new controllers leader within 15 s of the kill ({took:.1f} s)"
        )

        def state() -> str:
            return str(_call(gaia(), "GET", f"{BIZ}/apps/web/upgrades/{upgrade['id']}")["state"])

        eventually(
            lambda: state() == "Succeeded", "the upgrade finishes", timeout_s=180, interval_s=1
        )
        eventually(lambda: upgraded() == INSTANCES, "every instance on v2", timeout_s=60)

        pods = _pods(kube)
        names = collections.Counter(p["metadata"]["name"] for p in pods)
        assert len(pods) == INSTANCES and set(names) == set(before), (
            f"instances lost or added: {sorted(set(before) ^ set(names))}"
        )
        moved = [
            p["metadata"]["name"]
            for p in pods
            if p["metadata"]["uid"] != before[p["metadata"]["name"]]
        ]
        assert moved == [], f"recreated instead of upgraded in place: {moved}"

        cards: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for p in pods:
            ids = p["metadata"].get("annotations", {}).get(GPU_IDS_ANNOTATION, "")
            assert ids, f"{p['metadata']['name']} holds no card"
            for card in ids.split(","):
                cards[(p["spec"]["nodeName"], card)].append(p["metadata"]["name"])
        shared = {k: v for k, v in cards.items() if len(v) > 1}
        assert shared == {}, f"cards given to two instances: {shared}"

        # deliveries after the kill settle; then every notification arrived exactly once
        time.sleep(6)
        keys = collections.Counter(
            r.headers.get(IDEMPOTENCY_HEADER.lower()) for r in receiver.requests
        )
        assert None not in keys, "a notification without its idempotency key"
        twice = {k: n for k, n in keys.items() if n > 1}
        assert twice == {}, f"notifications delivered more than once: {twice}"
        print(
            f"new leader {new_leader.name} {took:.1f} s after the kill; "
            f"{len(receiver.requests)} notifications, each once"
        )
    kube.close()
