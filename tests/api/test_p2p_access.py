"""The access check at ``POST .../p2p/tasks`` against the platform's real registry (Debian's
docker-registry, run by Gaia and trusting Gaia's tokens; gaia.api.node_access): a node opens a
blob's swarm only when its account may pull the repository and the registry links the digest
there, and another registry's task cannot name a blob the platform's registry stores."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gaia.platform import Platform, registry_service
from tests.conftest import World
from tests.support.apps_harness import template
from tests.support.images import RegistryClient
from tests.support.kube import free_port
from tests.support.p2p import need, random_image

P2P = "/api/v1/clusters/sim-1/p2p"


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: what is tested here is the registry check, not the database."""
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def registry(platform: Platform, tmp_path: Path) -> Iterator[str]:
    need("docker-registry")
    listen = f"127.0.0.1:{free_port()}"
    settings = platform.settings.model_copy(
        update={"registry_listen": listen, "data_dir": tmp_path / "data"}
    )
    platform.registry = registry_service(settings, platform.secrets)
    platform.registry.start()
    yield platform.registry.address
    platform.registry.stop()


def _push(platform: Platform, address: str, repository: str, seed: int) -> list[str]:
    """Push an image into ``repository`` with a token Gaia signs; its blobs' digests."""
    image = random_image(2, 1 << 20, seed=seed)
    token = platform.registry.signer.issue(
        subject="test",
        access=[{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    )
    client = RegistryClient(url=f"http://{address}", host=address)
    client.http.headers["Authorization"] = f"Bearer {token.token}"
    try:
        client.push(image, repository=repository, tag="v1")
    finally:
        client.close()
    return [layer.blob.digest for layer in image.layers]


def test_a_task_opens_only_for_a_blob_the_nodes_account_may_read(
    world: World, platform: Platform, registry: str
) -> None:
    c = world.client
    alpha_layer, _ = _push(platform, registry, "alpha/web", seed=1)
    beta_layer, _ = _push(platform, registry, "beta/api", seed=2)
    r = c.post(
        "/api/v1/businesses/alpha/apps",
        json={"name": "web", "cluster": "sim-1", "replicas": 1,
              "templates": [template("v1", f"{registry}/alpha/web:v1")]},
        headers=world.admin,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    asyncio.run(platform.app_controller().start(loops=1))
    (instance,) = c.get("/api/v1/businesses/alpha/apps/web/instances", headers=world.admin).json()[
        "items"
    ]
    busy = instance["node"]
    nodes = [n["name"] for n in c.get("/api/v1/clusters/sim-1/nodes", headers=world.admin).json()[
        "items"
    ]]  # fmt: skip
    idle = next(n for n in nodes if n != busy)
    token = c.get(f"{P2P}/agent-token", headers=world.admin).json()["token"]
    agent = {"Authorization": f"Bearer {token}"}
    for node in (busy, idle):
        body = {"node": node, "zone": "z", "address": f"{node}:7001", "upload_slots": 4}
        assert c.post(f"{P2P}/agents", json=body, headers=agent).status_code == 200

    def task(node: str, repository: str, digest: str, registry_host: str = registry) -> object:
        body = {"node": node, "registry": registry_host, "repository": repository,
                "digest": digest, "size": 1 << 20}  # fmt: skip
        return c.post(f"{P2P}/tasks", json=body, headers=agent)

    # the node running alpha's instance: alpha's blob, linked in alpha/web
    r = task(busy, "alpha/web", alpha_layer)
    assert r.status_code == 200, r.text
    r = c.post(f"{P2P}/tasks/{alpha_layer}/schedule", json={"node": busy, "want": 1},
               headers=agent)  # fmt: skip
    assert r.status_code == 200, r.text
    # beta's blob named under alpha's repository: the registry does not link it there
    r = task(busy, "alpha/web", beta_layer)
    assert r.status_code == 403 and "is not in alpha/web" in r.json()["message"], r.text
    # beta's own repository: no beta instance on the node
    r = task(busy, "beta/api", beta_layer)
    assert r.status_code == 403 and "may not pull" in r.json()["message"], r.text
    # the idle node may pull nothing of alpha's
    r = task(idle, "alpha/web", alpha_layer)
    assert r.status_code == 403 and "may not pull" in r.json()["message"], r.text
    # another registry's task naming a blob the platform's registry stores: refused
    r = task(idle, "library/nginx", alpha_layer, registry_host="docker.io")
    assert r.status_code == 403 and "is in the platform's registry" in r.json()["message"]
    # and one the platform's registry does not store: swarmed as before
    r = task(idle, "library/nginx", "sha256:" + "e" * 64, registry_host="docker.io")
    assert r.status_code == 200, r.text
