"""The ``kubernetes`` provider, first cut: kubeconfig parsing and the API server health probe.

Registration validates the kubeconfig (current context, server URL, credentials) so a broken one
is refused at the API edge with a message naming what is missing. Health is ``GET /readyz`` with
the kubeconfig's credentials: 200 is Healthy, any other answer is Unhealthy, no answer within the
timeout is Unreachable. The real-Kubernetes issue replaces the HTTP details with a maintained
client (list+watch, apply) behind the same port.

Client certificates must reach ``ssl`` as files; they are written to a private temporary
directory, loaded, and removed at once. The kubeconfig's content never appears in messages.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from gaia.domain.errors import Unsupported
from gaia.domain.resources import ResourceVector
from gaia.providers.kubernetes.kubeconfig import parse_kubeconfig, parse_quantity, ssl_context
from gaia.providers.port import ClusterHealth, HealthState, Node


class KubernetesCluster:
    kind = "kubernetes"

    def __init__(self, *, name: str, kubeconfig: str) -> None:
        self.name = name
        self._creds = parse_kubeconfig(kubeconfig)
        headers = {"Accept": "application/json"}
        if self._creds.token:
            headers["Authorization"] = f"Bearer {self._creds.token}"
        self._client: httpx.AsyncClient | None = None
        self._headers = headers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._creds.server,
                headers=self._headers,
                verify=ssl_context(self._creds),
                trust_env=False,
            )
        return self._client

    async def check_health(self, *, timeout: float) -> ClusterHealth:
        try:
            response = await self._http().get("/readyz", timeout=timeout)
        except ssl.SSLError as exc:
            return ClusterHealth(HealthState.UNREACHABLE, f"TLS failure: {exc.reason}")
        except httpx.TimeoutException:
            return ClusterHealth(HealthState.UNREACHABLE, f"no answer within {timeout:g}s")
        except httpx.HTTPError as exc:
            return ClusterHealth(HealthState.UNREACHABLE, type(exc).__name__)
        if response.status_code == 200:
            return ClusterHealth(HealthState.HEALTHY, "API server ready")
        if response.status_code in (401, 403):
            return ClusterHealth(
                HealthState.UNHEALTHY,
                f"API server refused the credentials ({response.status_code})",
            )
        return ClusterHealth(
            HealthState.UNHEALTHY, f"API server not ready (HTTP {response.status_code})"
        )

    async def list_nodes(self) -> list[Node]:
        response = await self._http().get("/api/v1/nodes", timeout=10)
        response.raise_for_status()
        nodes = []
        for item in response.json().get("items", []):
            meta = item.get("metadata", {})
            status = item.get("status", {})
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions", [])
            )
            labels = meta.get("labels", {}) or {}
            capacity = status.get("allocatable") or status.get("capacity") or {}
            addresses = status.get("addresses", []) or []
            nodes.append(
                Node(
                    name=meta.get("name", ""),
                    ready=ready,
                    schedulable=not item.get("spec", {}).get("unschedulable", False),
                    zone=labels.get("topology.kubernetes.io/zone", ""),
                    labels=labels,
                    host_ip=next(
                        (a.get("address", "") for a in addresses if a.get("type") == "InternalIP"),
                        "",
                    ),
                    capacity=ResourceVector(
                        cpu=int(parse_quantity(capacity.get("cpu", "0")) * 1000),
                        memory=int(parse_quantity(capacity.get("memory", "0")) // 2**20),
                    ),
                    allocated=ResourceVector(),
                )
            )
        return nodes

    def _not_yet(self, what: str) -> Unsupported:
        return Unsupported(
            f"{what} is not available on kubernetes clusters yet: the real-Kubernetes adapter "
            "currently offers health and node listing only"
        )

    async def add_node(self, spec: Any) -> Node:
        raise self._not_yet("adding nodes")

    async def set_schedulable(self, name: str, schedulable: bool) -> Node:
        raise self._not_yet("cordoning nodes")

    async def drain(self, name: str) -> list[str]:
        raise self._not_yet("draining nodes")

    async def remove_node(self, name: str) -> None:
        raise self._not_yet("removing nodes")

    async def list_instances(self, *, namespace: str | None = None, app: str | None = None) -> Any:
        raise self._not_yet("running apps")

    async def create_instance(self, spec: Any) -> Any:
        raise self._not_yet("running apps")

    async def replace_image(self, *, namespace: str, name: str, image: str, version: str) -> Any:
        raise self._not_yet("running apps")

    async def restart_instance(self, *, namespace: str, name: str) -> Any:
        raise self._not_yet("running apps")

    async def delete_instance(self, *, namespace: str, name: str) -> None:
        raise self._not_yet("running apps")

    async def apply_service(self, spec: Any) -> Any:
        raise self._not_yet("services")

    async def get_service(self, *, namespace: str, name: str) -> Any:
        raise self._not_yet("services")

    async def delete_service(self, *, namespace: str, name: str) -> None:
        raise self._not_yet("services")

    async def apply_config(self, config: Any) -> None:
        raise self._not_yet("configs and secrets")

    async def delete_config(self, *, namespace: str, name: str, secret: bool) -> None:
        raise self._not_yet("configs and secrets")

    async def list_configs(self, *, namespace: str) -> Any:
        raise self._not_yet("configs and secrets")

    async def events(self, *, since: int = 0, limit: int = 1000) -> Any:
        return []

    async def metrics(self, *, namespace: str | None = None, names: Any = None) -> Any:
        raise self._not_yet("metrics")

    async def logs(self, *, namespace: str, name: str, tail: int = 100, since: Any = None) -> Any:
        raise self._not_yet("logs")

    async def exec(self, *, namespace: str, name: str, command: Any, timeout: float = 10.0) -> Any:
        raise self._not_yet("exec")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
