"""Apps pull from Gaia's registry with the pull secret the platform injects, on a real kubelet.

The registry is the one ``gaia up`` runs (``tests/delivery/test_registry_real.py``'s ``up``),
behind Gaia's token auth. The real node's containerd reaches it over plain HTTP
(``certs.d/<host:port>/hosts.toml``). Instances are created through the Kubernetes provider
exactly as the app controller creates them: with the business's pull account, the provider keeps
the ``gaia-registry-pull`` Secret in the namespace and names it in the pod.

- with the pull secret, the kubelet pulls the business's private image and the pod serves;
- without it, the same image is refused (401 from the registry): the pull secret is what
  made the difference, not an open registry;
- another business's pull account cannot pull it either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gaia.domain.resources import ResourceVector
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import InstanceSpec, PullSecret
from tests.conftest import start_real_bed
from tests.delivery.test_registry_real import Up, push, up  # noqa: F401 (the fixture)

# SQLite only: what is tested here is the pull, not the database
from tests.node.p2p.test_kubelet_pull import database_url  # noqa: F401 (the fixture)
from tests.support.images import web_image
from tests.support.kube import ControlPlane
from tests.support.node import RealNode
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, RealNode]]:
    plane, node = start_real_bed(tmp_path_factory, "registry-pull")
    try:
        yield plane, node
    finally:
        node.stop()
        plane.stop()


def _spec(
    namespace: str, node: str, image: str, instance_id: int, pull: PullSecret | None
) -> InstanceSpec:
    return InstanceSpec(
        namespace=namespace,
        app="web",
        instance_id=instance_id,
        version="v1",
        image=image,
        node=node,
        resources=ResourceVector(cpu=100, memory=64),
        pull_secret=pull,
    )


def _pod(api: httpx.Client, namespace: str, name: str) -> dict[str, Any]:
    r = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return r.json() if r.status_code == 200 else {}


def _waiting_reason(pod: dict[str, Any]) -> str:
    for status in pod.get("status", {}).get("containerStatuses", []):
        waiting = status.get("state", {}).get("waiting") or {}
        if waiting.get("reason"):
            return f"{waiting['reason']}: {waiting.get('message', '')}"
    return ""


def test_the_kubelet_pulls_a_private_image_with_the_injected_pull_secret(
    bed: tuple[ControlPlane, RealNode],
    up: Up,  # noqa: F811 (the fixture)
) -> None:
    plane, node = bed
    host = up.registry
    hosts = node.work / "containerd" / "certs.d" / host / "hosts.toml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(
        f'server = "http://{host}"\n\n'
        f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    image = web_image("registry-pull")
    r = push(up, image, "alpha/web:v1", f"dev:{up.tokens['dev']}")
    assert r.returncode == 0, r.stderr
    reference = f"{host}/alpha/web:v1"
    namespace = f"alpha-{int(time.time()) % 100000}"
    other = f"beta-{int(time.time()) % 100000}"
    registry = up.platform.registry
    alpha = PullSecret(host, *registry.pull_credentials("alpha"))
    beta = PullSecret(host, *registry.pull_credentials("beta"))
    provider = KubernetesCluster(name="registry-pull", kubeconfig=plane.kubeconfig_text())
    api = plane.http_client()
    try:
        asyncio.run(provider.create_instance(_spec(namespace, node.name, reference, 0, alpha)))

        def serving() -> bool:
            pod = _pod(api, namespace, "web-0")
            ip = pod.get("status", {}).get("podIP")
            if not ip or pod["status"].get("phase") != "Running":
                return False
            try:
                return httpx.get(f"http://{ip}:8080/", timeout=2).text == "web registry-pull\n"
            except httpx.HTTPError:
                return False

        eventually(serving, "the pod pulled with the pull secret serves", timeout_s=90)

        # without the secret, and with another business's, the registry refuses the pull
        asyncio.run(provider.create_instance(_spec(namespace, node.name, reference, 1, None)))
        asyncio.run(provider.create_instance(_spec(other, node.name, reference, 2, beta)))
        for ns, name in ((namespace, "web-1"), (other, "web-2")):
            eventually(
                lambda ns=ns, name=name: (
                    "ImagePull" in _waiting_reason(_pod(api, ns, name))
                    or "ErrImagePull" in _waiting_reason(_pod(api, ns, name))
                ),
                f"{ns}/{name} refused its pull",
                timeout_s=60,
            )
            reason = _waiting_reason(_pod(api, ns, name))
            assert (
                "401" in reason or "authorization" in reason.lower() or "denied" in reason.lower()
            ), reason
        secret = api.get(f"/api/v1/namespaces/{namespace}/secrets/gaia-registry-pull").json()
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
    finally:
        for ns in (namespace, other):
            api.delete(f"/api/v1/namespaces/{ns}")
        api.close()
        asyncio.run(provider.close())
        hosts.unlink(missing_ok=True)
