"""Cluster health against a real kube-apiserver: reachable through a TCP relay that the test cuts
and restores, as a network partition or an API server restart would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.platform import Platform
from tests.support.kube import ControlPlane
from tests.support.relay import Relay

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def relay(control_plane: ControlPlane) -> Iterator[Relay]:
    relay = Relay(control_plane.api_port)
    relay.restore()
    yield relay
    relay.cut()


def probe(platform: Platform) -> None:
    loop = ClusterHealthLoop(db=platform.db, providers=platform.providers, interval=1, timeout=1)
    asyncio.run(loop.start(loops=1))


def test_a_real_cluster_goes_unreachable_recovers_and_can_be_removed_dead(
    client: TestClient,
    admin: dict[str, str],
    platform: Platform,
    control_plane: ControlPlane,
    relay: Relay,
) -> None:
    kubeconfig = control_plane.kubeconfig_text().replace(
        control_plane.server, f"https://127.0.0.1:{relay.port}"
    )
    r = client.post(
        "/api/v1/clusters",
        json={"name": "real", "kind": "kubernetes", "kubeconfig": kubeconfig},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    probe(platform)
    body = client.get("/api/v1/clusters/real", headers=admin).json()
    assert body["health"] == "Healthy", body

    relay.cut()
    probe(platform)  # one pass: bounded by the probe timeout (1 s in tests, 5 s by default)
    body = client.get("/api/v1/clusters/real", headers=admin).json()
    assert body["health"] == "Unreachable", body

    relay.restore()
    probe(platform)
    assert client.get("/api/v1/clusters/real", headers=admin).json()["health"] == "Healthy"

    relay.cut()
    probe(platform)
    assert client.get("/api/v1/clusters/real", headers=admin).json()["health"] == "Unreachable"
    assert client.delete("/api/v1/clusters/real", headers=admin).status_code == 204
    assert client.get("/api/v1/clusters/real", headers=admin).status_code == 404
