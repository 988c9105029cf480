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

import base64
import binascii
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gaia.domain.errors import InvalidRequest, Unsupported
from gaia.domain.resources import ResourceVector
from gaia.providers.port import ClusterHealth, HealthState, Node

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def parse_quantity(raw: str) -> float:
    """A Kubernetes quantity (``500m``, ``4``, ``16Gi``, ``1e3``) as a plain number."""
    raw = str(raw).strip()
    for suffix, factor in (*_BINARY.items(), *_DECIMAL.items()):
        if raw.endswith(suffix):
            return float(raw[: -len(suffix)]) * factor
    if raw.endswith("m"):
        return float(raw[:-1]) / 1000
    return float(raw)


@dataclass(frozen=True)
class KubeCredentials:
    server: str
    ca_data: bytes | None
    insecure: bool
    client_cert: bytes | None
    client_key: bytes | None
    token: str | None


def _b64(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"kubeconfig: {field} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"kubeconfig: {field} is not valid base64") from None


def _named(entries: Any, name: str, kind: str) -> dict[str, Any]:
    if not isinstance(entries, list):
        raise InvalidRequest(f"kubeconfig: '{kind}s' must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(kind)
            if not isinstance(body, dict):
                raise InvalidRequest(f"kubeconfig: {kind} '{name}' has no '{kind}' section")
            return body
    raise InvalidRequest(f"kubeconfig: the current context names {kind} '{name}', not present")


def parse_kubeconfig(text: str) -> KubeCredentials:
    """The current context's server and credentials; ``InvalidRequest`` saying what is wrong.

    Only inline data is accepted (``certificate-authority-data``, ``client-certificate-data``,
    ``client-key-data``, ``token``): paths on the uploader's disk mean nothing to the platform.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InvalidRequest("kubeconfig is not valid YAML") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("kubeconfig must be a YAML mapping (kind: Config)")
    current_raw = doc.get("current-context")
    if not isinstance(current_raw, str) or not current_raw:
        raise InvalidRequest("kubeconfig has no current-context")
    context = _named(doc.get("contexts"), current_raw, "context")
    cluster = _named(doc.get("clusters"), str(context.get("cluster", "")), "cluster")
    user_name = context.get("user")
    user = _named(doc.get("users"), str(user_name), "user") if user_name else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise InvalidRequest("kubeconfig: the cluster's server must be an http(s) URL")
    for ref in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
        if ref in cluster or ref in user:
            raise InvalidRequest(
                f"kubeconfig: '{ref}' refers to a file; embed it as '{ref}-data' instead"
            )
    if "exec" in user or "auth-provider" in user:
        raise InvalidRequest(
            "kubeconfig: exec and auth-provider plugins are not supported; use a client "
            "certificate or a service-account token"
        )
    ca = cluster.get("certificate-authority-data")
    cert = user.get("client-certificate-data")
    key = user.get("client-key-data")
    token = user.get("token")
    if (cert is None) != (key is None):
        raise InvalidRequest("kubeconfig: client-certificate-data and client-key-data go together")
    if token is not None and not isinstance(token, str):
        raise InvalidRequest("kubeconfig: token must be a string")
    return KubeCredentials(
        server=server.rstrip("/"),
        ca_data=_b64(ca, "certificate-authority-data") if ca is not None else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        client_cert=_b64(cert, "client-certificate-data") if cert is not None else None,
        client_key=_b64(key, "client-key-data") if key is not None else None,
        token=token,
    )


def _ssl_context(creds: KubeCredentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https://"):
        return False
    if creds.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_data is not None:
        ctx = ssl.create_default_context(cadata=creds.ca_data.decode("ascii", "replace"))
    else:
        ctx = ssl.create_default_context()
    if creds.client_cert is not None and creds.client_key is not None:
        with tempfile.TemporaryDirectory(prefix="gaia-kube-") as tmp:
            cert_path = Path(tmp) / "client.crt"
            key_path = Path(tmp) / "client.key"
            for path, data in ((cert_path, creds.client_cert), (key_path, creds.client_key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx


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
                verify=_ssl_context(self._creds),
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
