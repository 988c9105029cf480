"""The registries an agent may reach, and how it talks to them.

The agent reaches only the registries in its registries file (``load_registries``): a JSON
object ``{"<host[:port]>": {"url": "https://...", "username": "...", "password": "..."}}``, with
``"default": true`` on the one used when a client does not name the registry (podman's mirror
has no ``ns=``). The file is the agent's Secret; its passwords are never logged.

Authentication is the registry's own: a request answered 401 with ``WWW-Authenticate: Basic``
is repeated with the configured credentials; with ``Bearer realm=...,service=...,scope=...`` (the
distribution token specification) the agent gets a token from the realm (with the credentials
as Basic, or anonymously when it has none), caches it per scope until it expires, and repeats
the request with it. The ``Authorization`` that worked for a repository is sent with the next
request for it (until the token expires or the registry answers 401 again): without that, every
piece fetched from the registry would cost two requests, the first one refused.

**Access check.** Before the agent hands a node a blob from the swarm or its cache, it asks the
registry whether this node's credentials may read that repository's blob (a HEAD, remembered for
``ACCESS_TTL_S``). A node thus never gets, through the P2P path, a blob it could not pull
itself, whatever other nodes hold (the leak of mirrors that serve any cached blob to anyone).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from gaia.node.p2p.peers import BODY_LOWAT

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
    # may be empty ({}): the platform's own registry comes with the coordinator's answer
    if not isinstance(raw, dict):
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

    def __init__(
        self,
        registries: Mapping[str, Registry],
        *,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,  # tests count the requests
    ) -> None:
        self.registries = dict(registries)
        # one TLS context for every registry: the system's CAs, and the private CAs the
        # coordinator hands over for the platform's registry (added as they come; the context
        # is read at each new connection)
        self._tls = ssl.create_default_context()
        self._cas: set[str] = set()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=5.0), transport=transport, verify=self._tls
        )
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        # (host, repository) -> (Authorization that worked, until when it may be sent first)
        self._auth: dict[tuple[str, str], tuple[str, float]] = {}
        # (host, repository, digest) -> (until when, the blob's size; 0 for a manifest)
        self._access: dict[tuple[str, str, str], tuple[float, int]] = {}
        self._lock = asyncio.Lock()
        self.bytes_fetched = 0

    async def close(self) -> None:
        await self._client.aclose()

    def use_platform_registry(
        self, host: str, url: str, username: str, password: str, *, ca_pem: str | None = None
    ) -> None:
        """The platform's registry, with this node's account (from the coordinator at each
        registration): added, or its credentials replaced; a registries file's URL and
        ``default`` flag for it are kept. Cached authorisations for it are dropped when they
        change. ``ca_pem``: the private CA that signs its certificate, trusted from now on."""
        if ca_pem and ca_pem not in self._cas:
            self._tls.load_verify_locations(cadata=ca_pem)
            self._cas.add(ca_pem)
        known = self.registries.get(host)
        if known is not None and (known.url, known.username, known.password) == (
            url,
            username,
            password,
        ):
            return
        if known is not None:  # the operator's URL (scheme, proxy) wins; the account is ours
            url = known.url
            if (known.username, known.password) == (username, password):
                return
        self.registries[host] = Registry(
            host, url, username, password, default=known.default if known else False
        )
        for cache in (self._tokens, self._auth):
            for key in [k for k in cache if k[0] == host]:
                del cache[key]
        self._access = {k: v for k, v in self._access.items() if k[0] != host}

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
        response = await self._open(registry, method, path, headers=headers)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def _open(
        self,
        registry: Registry,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``request`` with the final answer's body not read yet (the caller reads and closes
        it); an answer it does not return (a 401 it retries) is closed here."""
        url = f"{registry.url}{path}"
        sent = dict(headers or {})
        key = (registry.host, _repository_of(path))
        remembered = self._auth.get(key)
        if remembered is not None and remembered[1] > time.monotonic():
            sent["Authorization"] = remembered[0]
        response = await self._send(method, url, sent)
        if response.status_code != 401:
            return response
        await response.aread()  # the challenge, or the 401 passed on to the client
        await response.aclose()
        self._auth.pop(key, None)
        challenge = response.headers.get("www-authenticate", "")
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic" and registry.username:
            authorization, until = _basic(registry), float("inf")
        elif scheme.lower() == "bearer":
            try:
                token, until = await self._token(registry, dict(_CHALLENGE_PARAM.findall(params)))
            except UpstreamError as exc:
                if exc.status == 401:  # our credentials are refused: the registry's own 401
                    return response  # and challenge go to the client, which may try its own
                raise
            authorization = f"Bearer {token}"
        else:
            return response
        sent["Authorization"] = authorization
        response = await self._send(method, url, sent)
        if response.status_code != 401:
            self._auth[key] = (authorization, until)
        return response

    async def _send(self, method: str, url: str, headers: Mapping[str, str]) -> httpx.Response:
        request = self._client.build_request(method, url, headers=headers)
        return await self._client.send(request, stream=True)

    async def _token(self, registry: Registry, challenge: Mapping[str, str]) -> tuple[str, float]:
        """A token for the challenge's scope and until when it may be used (cached)."""
        realm = challenge.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise UpstreamError(502, f"registry {registry.host}: a token realm that is not a URL")
        scope = challenge.get("scope", "")
        key = (registry.host, scope)
        # one token request per scope at a time: the first pieces of a layer all meet the same
        # 401 at once, and each would otherwise ask the token service for the same token
        async with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached
            params = {
                k: v for k, v in (("service", challenge.get("service")), ("scope", scope)) if v
            }
            headers = {"Authorization": _basic(registry)} if registry.username else {}
            r = await self._client.get(realm, params=params, headers=headers)
            if r.status_code != 200:
                raise UpstreamError(
                    401 if r.status_code in (401, 403) else 502,
                    f"registry {registry.host}: the token service answered {r.status_code}",
                )
            try:
                body = r.json()
                token = body.get("token") or body.get("access_token")
                ttl = float(body.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                token, ttl = None, 0.0
            if not isinstance(token, str):
                raise UpstreamError(
                    502, f"registry {registry.host}: the token service sent no token"
                )
            self._tokens[key] = (token, time.monotonic() + max(ttl - 10, 5))
            return self._tokens[key]

    async def blob_size(self, registry: Registry, repository: str, digest: str) -> int:
        """HEAD the blob: its size, and proof this node may read it (remembered a while)."""
        r = await self.request(registry, "HEAD", f"/v2/{repository}/blobs/{digest}")
        if r.status_code != 200:
            raise UpstreamError(
                r.status_code if r.status_code in (401, 403, 404) else 502,
                f"registry {registry.host} answered {r.status_code} for {repository}@{digest}",
                headers=_challenge_of(r),
            )
        size = int(r.headers.get("content-length", "0"))
        self._access[(registry.host, repository, digest)] = (time.monotonic() + ACCESS_TTL_S, size)
        return size

    async def check_access(self, registry: Registry, repository: str, digest: str) -> int:
        """The blob's size; UpstreamError unless the registry lets this node read it (the
        answer is remembered ``ACCESS_TTL_S``)."""
        found = self._access.get((registry.host, repository, digest))
        if found is not None and found[0] > time.monotonic():
            return found[1]
        return await self.blob_size(registry, repository, digest)

    async def check_manifest_access(self, registry: Registry, repository: str, digest: str) -> None:
        """Raise UpstreamError unless the registry lets this node read the manifest (cached)."""
        key = (registry.host, repository, digest)
        found = self._access.get(key)
        if found is not None and found[0] > time.monotonic():
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
        self._access[key] = (time.monotonic() + ACCESS_TTL_S, 0)

    async def blob_range(
        self, registry: Registry, repository: str, digest: str, start: int, end: int
    ) -> bytes:
        """Bytes ``[start, end)`` of a blob (one back-to-source piece)."""
        if end <= start:
            return b""
        r = await self._open(
            registry,
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            headers={"Range": f"bytes={start}-{end - 1}"},
        )
        try:
            content = await _receive(r) if r.status_code in (200, 206) else b""
        finally:
            await r.aclose()
        if r.status_code == 206:
            data = content
        elif r.status_code == 200:  # a registry that ignores Range: take our slice
            data = content[start:end]
        else:
            raise UpstreamError(
                502, f"registry {registry.host} answered {r.status_code} for a piece of {digest}"
            )
        if len(data) != end - start:
            raise UpstreamError(502, f"registry {registry.host} sent a short piece of {digest}")
        self.bytes_fetched += len(data)
        return data


async def _receive(response: httpx.Response) -> bytes:
    """A piece's body, with the socket waking the loop once per ``BODY_LOWAT`` bytes, not per
    packet (``SO_RCVLOWAT``; the bytes still to come, when fewer): on a slow link, httpx's
    per-read work (h11 events, a ``bytes`` per read) for each ~1.4 KB packet cost more CPU than
    the bytes (``gaia.node.p2p.peers``, "Wake-ups"). Without a plain length (chunked,
    compressed) or a socket, it is read as httpx reads it."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    length = response.headers.get("content-length", "")
    if sock is None or not length.isdigit() or "content-encoding" in response.headers:
        return await response.aread()
    total = int(length)
    chunks: list[bytes] = []
    got, lowat = 0, 1
    try:
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            got += len(chunk)
            # every byte read from the socket has been handed on (h11 buffers none of the
            # body), so at least ``total - got`` bytes are still to come on it (more with TLS)
            wanted = max(1, min(total - got, BODY_LOWAT))
            if wanted != lowat:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
                lowat = wanted
    finally:
        if lowat != 1:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    return b"".join(chunks)


def _basic(registry: Registry) -> str:
    pair = f"{registry.username}:{registry.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _repository_of(path: str) -> str:
    """The repository a distribution API path names (``/v2/<name>/blobs/...``); "" for
    ``/v2/``. Credentials are remembered per repository, as token scopes are."""
    rest = path.removeprefix("/v2/")
    for marker in ("/blobs/", "/manifests/"):
        if marker in rest:
            return rest.rpartition(marker)[0]
    return ""


def _challenge_of(response: httpx.Response) -> dict[str, str]:
    challenge = response.headers.get("www-authenticate")
    return {"WWW-Authenticate": challenge} if challenge else {}
