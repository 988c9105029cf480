"""deploy/p2p-agent/daemonset.yaml: the flags it passes are the agent's own, its init container
writes containerd's host files, and the real API server accepts the objects (server-side dry
run on the test control plane)."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import yaml

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
                r = api.post(
                    f"/apis/apps/v1/namespaces/{ns}/daemonsets", json=doc, params={"dryRun": "All"}
                )
            assert r.status_code in (200, 201, 409), (doc["kind"], r.text)
