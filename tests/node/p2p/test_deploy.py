"""deploy/p2p-agent/daemonset.yaml: the flags it passes are the agent's own, its init container
writes containerd's host files, and the real API server accepts the objects (server-side dry
run on the test control plane)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import yaml

from gaia.domain.agent_identity import AGENT_AUDIENCE
from gaia.settings import Settings
from tests.support.kube import ControlPlane
from tests.support.paths import REPO

MANIFEST = REPO / "deploy" / "p2p-agent" / "daemonset.yaml"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def test_every_flag_of_the_daemonset_is_one_the_agent_takes() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "gaia", "p2p-agent", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    known = set(re.findall(r"(--[a-z][a-z-]+)", help_text))
    (daemonset,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert container["command"][:2] == ["gaia", "p2p-agent"]
        flags = {arg.split("=")[0] for arg in container["command"][2:]}
        assert flags <= known, flags - known
    (init,) = pod["initContainers"]
    assert "--write-containerd-hosts=/host/etc/containerd/certs.d" in init["command"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["certs-d"]["hostPath"]["path"] == "/etc/containerd/certs.d"
    assert volumes["secret"]["secret"]["secretName"] == "gaia-p2p-agent"


def test_the_api_server_accepts_the_manifest(control_plane: ControlPlane) -> None:
    with control_plane.http_client() as api:
        for doc in documents():
            if doc["kind"] == "Namespace":
                r = api.post("/api/v1/namespaces", json=doc, params={"dryRun": "All"})
            else:
                ns = doc["metadata"]["namespace"]
                if api.get(f"/api/v1/namespaces/{ns}").status_code == 404:
                    api.post("/api/v1/namespaces", json={"metadata": {"name": ns}})
                collection = {
                    "DaemonSet": f"/apis/apps/v1/namespaces/{ns}/daemonsets",
                    "ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts",
                }[doc["kind"]]
                r = api.post(collection, json=doc, params={"dryRun": "All"})
            assert r.status_code in (200, 201, 409), (doc["kind"], r.text)


def test_the_agents_prove_their_node_with_the_token_gaia_reviews() -> None:
    """The DaemonSet runs as the ServiceAccount Gaia expects and projects a pod-bound token for
    Gaia's audience into the file the agent reads (tests/api/test_p2p_identity.py shows Gaia
    accepting such a token for its own node only)."""
    (daemonset,) = [d for d in documents() if d["kind"] == "DaemonSet"]
    (account,) = [d for d in documents() if d["kind"] == "ServiceAccount"]
    pod = daemonset["spec"]["template"]["spec"]
    namespace, name = Settings().p2p_agent_service_account.split(":")
    assert (account["metadata"]["namespace"], account["metadata"]["name"]) == (namespace, name)
    assert daemonset["metadata"]["namespace"] == namespace
    assert pod["serviceAccountName"] == name
    volumes = {v["name"]: v for v in pod["volumes"]}
    (source,) = volumes["identity"]["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == AGENT_AUDIENCE
    (agent,) = pod["containers"]
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "identity")
    token_file = f"{mount['mountPath']}/{source['serviceAccountToken']['path']}"
    assert f"--token-file={token_file}" in agent["command"]
