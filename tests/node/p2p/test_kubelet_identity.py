"""The real kubelet's projected ServiceAccount token proves a P2P agent's node to Gaia.

The agent pod of ``deploy/p2p-agent/daemonset.yaml`` gets its identity from a projected
``serviceAccountToken`` volume (audience ``gaia-p2p``): the kubelet of the real node
(``tests/support/node.py``) asks the API server for a token bound to the pod and writes it into
the pod's volume. That file, read as the agent reads it, gets the node's own registry account
from Gaia (which reviews it with the cluster's TokenReview) and nothing for another node.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from gaia.platform import Platform, registry_service
from tests.conftest import start_real_bed
from tests.support.kube import ControlPlane
from tests.support.node import RealNode
from tests.support.paths import REPO
from tests.support.waiting import eventually

MANIFEST = REPO / "deploy" / "p2p-agent" / "daemonset.yaml"
NAMESPACE = "gaia-system"  # the manifest's, and GAIA_P2P_AGENT_SERVICE_ACCOUNT's default

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, RealNode]]:
    plane, node = start_real_bed(tmp_path_factory, "p2p-identity")
    try:
        yield plane, node
    finally:
        node.stop()
        plane.stop()


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: what is tested here is the kubelet's token, not the database."""
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def _manifest(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == kind]
    return dict(doc)


def _agent_pod(node: RealNode) -> dict[str, Any]:
    """The DaemonSet's pod on the real node: its account and identity volume as written, a
    container that only sleeps (the node's web image) in place of the agent."""
    template = _manifest("DaemonSet")["spec"]["template"]["spec"]
    (identity,) = [v for v in template["volumes"] if v["name"] == "identity"]
    (mount,) = [m for m in template["containers"][0]["volumeMounts"] if m["name"] == "identity"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p2p-agent-identity", "namespace": NAMESPACE},
        "spec": {
            "nodeName": node.name,
            "serviceAccountName": template["serviceAccountName"],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "volumes": [identity],
            "containers": [{"name": "agent", "image": node.images.web_v1, "volumeMounts": [mount]}],
        },
    }


def test_the_kubelets_projected_token_gets_its_node_and_no_other(
    bed: tuple[ControlPlane, RealNode],
    platform: Platform,
    client: TestClient,
    admin: dict[str, str],
) -> None:
    plane, node = bed
    api = plane.http_client()
    pod_name = "p2p-agent-identity"
    try:
        if api.get(f"/api/v1/namespaces/{NAMESPACE}").status_code == 404:
            api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        account = _manifest("ServiceAccount")
        r = api.post(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", json=account)
        assert r.status_code in (201, 409), r.text
        r = api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=_agent_pod(node))
        assert r.status_code == 201, r.text
        uid = r.json()["metadata"]["uid"]
        volume = node.kubelet_dir / "root" / "pods" / uid / "volumes" / "kubernetes.io~projected"
        token_file = volume / "identity" / "token"
        eventually(token_file.exists, "the kubelet wrote the pod's token", timeout_s=90)
        token = token_file.read_text().strip()

        r = client.post(
            "/api/v1/clusters",
            json={"name": "real", "kind": "kubernetes", "kubeconfig": plane.kubeconfig_text()},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        settings = platform.settings.model_copy(update={"registry_url": "http://127.0.0.1:5999"})
        platform.registry = registry_service(settings, platform.secrets)
        agent = {"Authorization": f"Bearer {token}"}

        def register(as_node: str) -> httpx.Response:
            body = {"node": as_node, "zone": "z", "address": f"{node.ip}:65002", "upload_slots": 4}
            return client.post("/api/v1/clusters/real/p2p/agents", json=body, headers=agent)

        r = register(node.name)
        assert r.status_code == 200, r.text
        (creds,) = r.json()["registries"].values()
        assert creds["username"] == f"node+real+{node.name}"
        r = register("some-other-node")
        assert r.status_code == 403, r.text
    finally:
        api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}")
        eventually(
            lambda: api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}").status_code == 404,
            "the agent pod gone",
            timeout_s=60,
        )
        api.close()
