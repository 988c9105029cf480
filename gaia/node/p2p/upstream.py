"""The registries an agent may reach, and how it talks to them.

The agent reaches only the registries in its registries file (``load_registries``): a JSON
object ``{"<host[:port]>": {"url": "https://...", "username": "...", "password": "..."}}``, with
``"default": true`` on the one used when a client does not name the registry (podman's mirror
has no ``ns=``). The file is the agent's Secret; its passwords are never logged.

Authentication is the registry's own: a request answered 401 with ``WWW-Authenticate: Basic``
is repeated with the configured credentials; with ``Bearer realm=...,service=...,scope=...`` (the
distribution token specification) the agent gets a token from the realm (with the credentials
as Basic, or anonymously when it has none), caches it per scope until it expires, and repeats
the request with it.

**Access check.** Before the agent hands a node a blob from the swarm or its cache, it asks the
registry whether this node's credentials may read that repository's blob (a HEAD, remembered for
``ACCESS_TTL_S``). A node thus never gets, through the P2P path, a blob it could not pull
itself, whatever other nodes hold (the leak of mirrors that serve any cached blob to anyone).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

ACCESS_TTL_S = 60.0
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class UpstreamError(Exception):
    """The registry refused or failed; ``status`` is what the agent answers its client."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Registry:
    host: str
    url: str
    username: str = ""
    password: str = ""
    default: bool = False

    def __repr__(self) -> str:  # never the password
        return f"Registry({self.host!r}, {self.url!r}, user={self.username!r})"


def load_registries(path: Path) -> dict[str, Registry]:
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected an object of registries by host")
    out = {}
    for host, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ValueError(f"{path}: registry {host!r} needs a url")
        out[host] = Registry(
            host=host,
            url=spec["url"].rstrip("/"),
            username=str(spec.get("username") or ""),
            password=str(spec.get("password") or ""),
            default=bool(spec.get("default")),
        )
    if sum(r.default for r in out.values()) > 1:
        raise ValueError(f"{path}: more than one default registry")
    return out


class Upstream:
    """HTTP to the configured registries, with their authentication (module docstring)."""

    def __init__(self, registries: Mapping[str, Registry], *, timeout_s: float = 30.0) -> None:
        self.registries = dict(registries)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._access: dict[tuple[str, str, str], float] = {}
        self._lock = asyncio.Lock()
        self.bytes_fetched = 0

    async def close(self) -> None:
        await self._client.aclose()

    def registry(self, host: str | None) -> Registry:
        if host:
            found = self.registries.get(host)
            if found is None:
                raise UpstreamError(404, f"registry {host} is not one this agent may reach")
            return found
        for registry in self.registries.values():
            if registry.default:
                return registry
        raise UpstreamError(404, "no registry named (ns=) and no default registry configured")

    async def request(
        self,
        registry: Registry,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request to the registry, authenticated as it asks; the body is read."""
        url = f"{registry.url}{path}"
        sent = dict(headers or {})
        response = await self._client.request(method, url, headers=sent)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("www-authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic" and registry.username:
            sent["Authorization"] = _basic(registry)
        elif scheme.lower() == "bearer":
            token = await self._token(registry, dict(_CHALLENGE_PARAM.findall(params)))
            sent["Authorization"] = f"Bearer {token}"
        else:
            return response
        return await self._client.request(method, url, headers=sent)

    async def _token(self, registry: Registry, challenge: Mapping[str, str]) -> str:
        realm = challenge.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise UpstreamError(502, f"registry {registry.host}: a token realm that is not a URL")
        scope = challenge.get("scope", "")
        key = (registry.host, scope)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        params = {k: v for k, v in (("service", challenge.get("service")), ("scope", scope)) if v}
        headers = {"Authorization": _basic(registry)} if registry.username else {}
        r = await self._client.get(realm, params=params, headers=headers)
        if r.status_code != 200:
            raise UpstreamError(
                401 if r.status_code in (401, 403) else 502,
                f"registry {registry.host}: the token service answered {r.status_code}",
            )
        body = r.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise UpstreamError(502, f"registry {registry.host}: the token service sent no token")
        ttl = float(body.get("expires_in") or 60)
        self._tokens[key] = (token, time.monotonic() + max(ttl - 10, 5))
        return token

    async def blob_size(self, registry: Registry, repository: str, digest: str) -> int:
        """HEAD the blob: its size, and proof this node may read it (remembered a while)."""
        r = await self.request(registry, "HEAD", f"/v2/{repository}/blobs/{digest}")
        if r.status_code != 200:
            raise UpstreamError(
                r.status_code if r.status_code in (401, 403, 404) else 502,
                f"registry {registry.host} answered {r.status_code} for {repository}@{digest}",
                headers=_challenge_of(r),
            )
        self._access[(registry.host, repository, digest)] = time.monotonic() + ACCESS_TTL_S
        return int(r.headers.get("content-length", "0"))

    async def check_access(self, registry: Registry, repository: str, digest: str) -> None:
        """Raise UpstreamError unless the registry lets this node read the blob (cached)."""
        if self._access.get((registry.host, repository, digest), 0.0) > time.monotonic():
            return
        await self.blob_size(registry, repository, digest)

    async def check_manifest_access(self, registry: Registry, repository: str, digest: str) -> None:
        """Raise UpstreamError unless the registry lets this node read the manifest (cached)."""
        key = (registry.host, repository, digest)
        if self._access.get(key, 0.0) > time.monotonic():
            return
        r = await self.request(
            registry,
            "HEAD",
            f"/v2/{repository}/manifests/{digest}",
            headers={"Accept": MANIFEST_ACCEPT},  # without it, OCI manifests are "unknown"
        )
        if r.status_code != 200:
            raise UpstreamError(
                r.status_code if r.status_code in (401, 403, 404) else 502,
                f"registry {registry.host} answered {r.status_code} for {repository}@{digest}",
                headers=_challenge_of(r),
            )
        self._access[key] = time.monotonic() + ACCESS_TTL_S

    async def blob_range(
        self, registry: Registry, repository: str, digest: str, start: int, end: int
    ) -> bytes:
        """Bytes ``[start, end)`` of a blob (one back-to-source piece)."""
        if end <= start:
            return b""
        r = await self.request(
            registry,
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            headers={"Range": f"bytes={start}-{end - 1}"},
        )
        if r.status_code == 206:
            data = r.content
        elif r.status_code == 200:  # a registry that ignores Range: take our slice
            data = r.content[start:end]
        else:
            raise UpstreamError(
                502, f"registry {registry.host} answered {r.status_code} for a piece of {digest}"
            )
        if len(data) != end - start:
            raise UpstreamError(502, f"registry {registry.host} sent a short piece of {digest}")
        self.bytes_fetched += len(data)
        return data


def _basic(registry: Registry) -> str:
    pair = f"{registry.username}:{registry.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _challenge_of(response: httpx.Response) -> dict[str, str]:
    challenge = response.headers.get("www-authenticate")
    return {"WWW-Authenticate": challenge} if challenge else {}
