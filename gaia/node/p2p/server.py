"""The agent's two HTTP faces: the registry mirror (for containerd and podman) and the peer server.

**Mirror** (``mirror_app``; listen on the node's loopback): the OCI distribution read API.

- ``GET|HEAD /v2/``: 200, so clients see a registry.
- ``GET|HEAD /v2/<name>/manifests/<tag>``: always the registry (tags move); the client's
  ``Accept`` is forwarded and the registry's media type and ``Docker-Content-Digest`` returned.
  The agent tells the coordinator which blobs the manifest names (the console's per-image view).
- ``GET|HEAD /v2/<name>/manifests/<digest>``: from the node's cache, else the registry (then
  cached with its media type). Manifests are not swarmed: a few KiB cost more to coordinate than
  to fetch, and N of them are noise beside one image's layers in the registry's egress.
- ``GET|HEAD /v2/<name>/blobs/<digest>``: after the registry confirmed that this node may read
  it (``Upstream.check_access``), from the cache or the swarm download, streamed piece by piece
  as pieces arrive; ``Range: bytes=a-b`` (also ``a-`` and ``-n``) answers 206 with
  ``Content-Range``, an unsatisfiable range 416. ``Docker-Content-Digest`` on every answer.
- ``?ns=<registry host>`` (containerd adds it when it uses a mirror) names the registry; without
  it the default registry of the registries file.
- ``GET /metrics``: the agent's figures, for Prometheus.

Errors use the distribution specification's body ``{"errors": [{"code", "message"}]}``; a 401
of the registry is passed on with its challenge so the client falls back to the next host.

**Peer server** (``peer_app``; listen on the node's address): ``GET
/p2p/v1/blobs/<digest>/pieces/<i>`` with ``X-Gaia-Ticket`` checked against this node's own ticket
key (docs/p2p.md: the coordinator MACs each assignment's ticket with its parent's key, so a
ticket another node minted with its own key is refused here) and naming this blob and this
piece (a whole-blob ticket, from a Gaia before piece tickets, only while the coordinator's last
registration answer did not say it mints piece tickets for this node), at most
``upload_slots`` pieces at a time (503 beyond: the requester reports it and gets another
parent), paced by the node's upload limit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gaia.domain.swarm import piece_range
from gaia.node.p2p.cache import BlobCache, digest_hex
from gaia.node.p2p.download import (
    TICKET_HEADER,
    DigestMismatch,
    Download,
    Downloader,
    RateLimit,
)
from gaia.node.p2p.upstream import Registry, Upstream, UpstreamError
from gaia.node.p2p.wire import Coordinator, CoordinatorUnavailable, ManifestSeen

log = logging.getLogger(__name__)

# the OCI distribution specification's repository name and reference grammar
NAME = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MAX_MANIFEST = 4 << 20


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"errors": [{"code": code, "message": message}]}
    return JSONResponse(body, status_code=status, headers=headers)


def _upstream_error(exc: UpstreamError) -> Response:
    code = {401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN"}.get(exc.status, "UNAVAILABLE")
    return _error(exc.status, code, str(exc), exc.headers)


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` with ``end`` exclusive, None for the whole blob, "unsatisfiable"."""
    if not header:
        return None
    m = RANGE.fullmatch(header.strip())
    if m is None:
        return None  # a multi-range or another unit: the whole blob (allowed by RFC 9110)
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end


class Mirror:
    """The state behind ``mirror_app`` and ``peer_app``."""

    def __init__(
        self,
        *,
        node: str,
        cache: BlobCache,
        upstream: Upstream,
        downloader: Downloader,
        coordinator: Coordinator | None,
        upload_slots: int = 8,
        upload_rate: float = 0,
        prefetch: bool = True,
    ) -> None:
        self.node = node
        self.prefetch = prefetch
        self.cache = cache
        self.upstream = upstream
        self.downloader = downloader
        self.coordinator = coordinator
        self.ticket_key: bytes | None = None
        # the coordinator mints piece-bound tickets for this node (its registration answer):
        # then a whole-blob ticket is refused
        self.piece_tickets = False
        self.upload_gate = asyncio.Semaphore(upload_slots)
        self.upload_slots = upload_slots
        self.upload_limit = RateLimit(upload_rate)
        self.bytes_uploaded = 0
        self.pieces_uploaded = 0
        self.tickets_refused = 0
        self.manifests = cache.root / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ mirror

    async def manifest(self, request: Request, name: str, reference: str) -> Response:
        registry = self.upstream.registry(request.query_params.get("ns"))
        accept = request.headers.get("accept") or ", ".join(MANIFEST_TYPES)
        body, media_type, digest = await self.fetch_manifest(
            registry, name, reference, accept=accept, prefetch=request.method == "GET"
        )
        return self._manifest_response(request, body, media_type, digest)

    async def fetch_manifest(
        self, registry: Registry, name: str, reference: str, *, accept: str, prefetch: bool
    ) -> tuple[bytes, str, str]:
        """A manifest (body, media type, digest): by digest from the cache once the registry
        confirmed this node may read it, else from the registry (by tag always). The
        coordinator hears which blobs it names; with ``prefetch`` their downloads start."""
        if DIGEST.fullmatch(reference):
            cached = self._cached_manifest(reference)
            if cached is not None:
                await self.upstream.check_manifest_access(registry, name, reference)
                return cached[0], cached[1], reference
        r = await self.upstream.request(
            registry, "GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": accept}
        )
        if r.status_code != 200:
            raise UpstreamError(
                r.status_code if r.status_code in (401, 403, 404) else 502,
                f"registry {registry.host} answered {r.status_code} for {name}:{reference}",
                headers={"WWW-Authenticate": r.headers["www-authenticate"]}
                if "www-authenticate" in r.headers
                else None,
            )
        body = r.content
        if len(body) > MAX_MANIFEST:
            raise UpstreamError(502, f"{name}:{reference}: a manifest over {MAX_MANIFEST} bytes")
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if DIGEST.fullmatch(reference) and digest != reference:
            raise UpstreamError(502, f"{name}@{reference}: the registry sent another manifest")
        media_type = r.headers.get("content-type", MANIFEST_TYPES[0]).split(";")[0]
        self._store_manifest(digest, body, media_type)
        blobs = await self._tell_manifest(registry, name, reference, digest, media_type, body)
        if prefetch:
            self._prefetch(registry, name, blobs)
        return body, media_type, digest

    def _manifest_response(
        self, request: Request, body: bytes, media_type: str, digest: str
    ) -> Response:
        headers = {
            "Docker-Content-Digest": digest,
            "Content-Length": str(len(body)),
            "Content-Type": media_type,
        }
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        return Response(body, status_code=200, headers=headers, media_type=media_type)

    def _cached_manifest(self, digest: str) -> tuple[bytes, str] | None:
        hexpart = digest_hex(digest)
        try:
            body = (self.manifests / hexpart).read_bytes()
            media_type = (self.manifests / f"{hexpart}.type").read_text()
        except OSError:
            return None
        if hashlib.sha256(body).hexdigest() != hexpart:
            return None
        return body, media_type

    def _store_manifest(self, digest: str, body: bytes, media_type: str) -> None:
        hexpart = digest_hex(digest)
        (self.manifests / f"{hexpart}.type").write_text(media_type)
        tmp = self.manifests / f"{hexpart}.tmp"
        tmp.write_bytes(body)
        tmp.replace(self.manifests / hexpart)

    async def _tell_manifest(
        self,
        registry: Registry,
        name: str,
        reference: str,
        digest: str,
        media_type: str,
        body: bytes,
    ) -> list[tuple[str, int]]:
        blobs: list[tuple[str, int]] = []
        try:
            doc: Any = json.loads(body)
            for item in [doc.get("config") or {}, *(doc.get("layers") or [])]:
                if isinstance(item, dict) and DIGEST.fullmatch(str(item.get("digest", ""))):
                    blobs.append((item["digest"], int(item.get("size") or 0)))
        except (ValueError, AttributeError, TypeError):
            pass
        if self.coordinator is None:
            return blobs
        seen = ManifestSeen(registry.host, name, reference, digest, media_type, tuple(blobs))
        try:
            await self.coordinator.manifest(self.node, seen)
        except CoordinatorUnavailable:
            pass
        except Exception as exc:  # the figures are not worth failing a pull for
            log.info("p2p: the coordinator did not take manifest %s: %s", digest, exc)
        return blobs

    def _prefetch(self, registry: Registry, name: str, blobs: list[tuple[str, int]]) -> None:
        """Start every blob of an image manifest a client just read: it will ask for all of
        them, a few at a time (containerd: three); fetching all at once keeps the node's link
        busy through each layer's last pieces, and the swarm has every layer in play."""
        if not self.prefetch:
            return
        for digest, _ in blobs:
            if self.cache.size(digest) is None:
                self.downloader.blob(registry, name, digest)

    async def blob(self, request: Request, name: str, digest: str) -> Response:
        registry = self.upstream.registry(request.query_params.get("ns"))
        size = await self.upstream.check_access(registry, name, digest)
        path = self.cache.path(digest)
        if path is not None:
            size = path.stat().st_size
            return self._blob_response(request, digest, size, self._file_chunks(digest, path))
        if request.method == "HEAD":  # the registry's HEAD answered it: no download for a HEAD
            return self._blob_response(request, digest, size, None)
        download = self.downloader.blob(registry, name, digest)
        await download.ready()
        return self._blob_response(request, digest, download.size, None, download)

    def _blob_response(
        self,
        request: Request,
        digest: str,
        size: int,
        chunks: Callable[[int, int], AsyncIterator[bytes]] | None,
        download: Download | None = None,
    ) -> Response:
        wanted = parse_range(request.headers.get("range"), size)
        headers = {
            "Docker-Content-Digest": digest,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if wanted == "unsatisfiable":
            headers["Content-Range"] = f"bytes */{size}"
            return _error(416, "RANGE_INVALID", "the range is outside the blob", headers)
        start, end = wanted if isinstance(wanted, tuple) else (0, size)
        status = 206 if isinstance(wanted, tuple) else 200
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        if chunks is not None:
            body = chunks(start, end)
        else:
            assert download is not None
            body = self._download_chunks(download, start, end)
        return StreamingResponse(body, status_code=status, headers=headers)

    def _file_chunks(self, digest: str, path: Path) -> Callable[[int, int], AsyncIterator[bytes]]:
        async def chunks(start: int, end: int) -> AsyncIterator[bytes]:
            with self.cache.pinned(digest), path.open("rb") as f:
                f.seek(start)
                left = end - start
                while left > 0:
                    data = await asyncio.to_thread(f.read, min(left, 1 << 20))
                    if not data:
                        raise OSError(f"{digest}: the cached file is shorter than it was")
                    left -= len(data)
                    yield data

        return chunks

    async def _download_chunks(
        self, download: Download, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """Pieces in order as they arrive; once all are in, the whole-digest check must pass.
        When it fails, the connection is cut (an exception ends the body short of its
        ``Content-Length``), even if the download then recovers from the registry: bytes of the
        bad copy went out, and only a cut makes the client retry instead of keeping them. The
        blob is pinned while it streams: a cache cap smaller than the blob would otherwise
        evict it the moment it is complete, under this reader."""
        piece = download.piece
        first, last = start // piece, (end - 1) // piece
        attempt = download.attempt
        with self.cache.pinned(download.digest):
            for index in range(first, last + 1):
                data = await download.wait_piece(index)
                if download.attempt != attempt:
                    raise DigestMismatch(f"{download.digest}: the swarm's copy failed its digest")
                p_start, _ = piece_range(index, download.size, piece)
                lo = max(start - p_start, 0)
                hi = min(end - p_start, len(data))
                yield data[lo:hi]
            await download.wait()
            if download.attempt != attempt:
                raise DigestMismatch(f"{download.digest}: the swarm's copy failed its digest")

    # ------------------------------------------------------------------ peers

    def ticket_ok(self, ticket: str, digest: str, piece: int) -> bool:
        """A ticket the coordinator MACed with this node's key for ``digest`` and ``piece``
        (``{node}.{digest}.{piece}.{expires}.{mac}``), not expired; or, while the coordinator
        mints whole-blob tickets for this node (a Gaia before piece tickets), one for
        ``digest`` (``{node}.{digest}.{expires}.{mac}``). A node name may hold dots but no
        ``:``, so the digest field is found whole."""
        if self.ticket_key is None:
            return False
        body, dot, mac = ticket.rpartition(".")
        good = hmac.new(self.ticket_key, body.encode(), hashlib.sha256).hexdigest()
        if not dot or not hmac.compare_digest(good, mac):
            return False
        node, named, rest = body.partition(f".{digest}.")
        if not node or not named:
            return False  # another blob's
        fields = rest.split(".")
        if len(fields) == 2:
            bound, expires = fields
            if bound != str(piece):
                return False  # another piece's
        elif len(fields) == 1 and not self.piece_tickets:
            (expires,) = fields
        else:
            return False
        return expires.isdigit() and int(expires) >= time.time()

    async def piece(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        if not DIGEST.fullmatch(digest):
            return _error(400, "DIGEST_INVALID", "not a sha256 digest")
        index = int(request.path_params["index"])
        if not self.ticket_ok(request.headers.get(TICKET_HEADER, ""), digest, index):
            self.tickets_refused += 1
            return _error(403, "DENIED", "no valid ticket from the coordinator for this piece")
        if self.upload_gate.locked():
            return _error(503, "TOOMANYREQUESTS", f"all {self.upload_slots} upload slots busy")
        async with self.upload_gate:
            data = await asyncio.to_thread(self.downloader.piece_held, digest, index)
            if data is None:
                return _error(404, "BLOB_UNKNOWN", f"piece {index} of {digest} is not here")
            await self.upload_limit.take(len(data))
            self.bytes_uploaded += len(data)
            self.pieces_uploaded += 1
        return Response(data, media_type="application/octet-stream")

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> bytes:
        """The agent's figures in the Prometheus text format."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_AgentCollector(self))
        return generate_latest(registry)


class _AgentCollector(Collector):
    """The agent's figures, read when scraped (the counters live with the parts that count)."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        m, f = self.mirror, self.mirror.downloader.figures
        by_source = (
            ("gaia_p2p_agent_bytes", "Bytes of blobs fetched, by source.", f.bytes_from_peers,
             f.bytes_from_registry),
            ("gaia_p2p_agent_pieces", "Pieces fetched, by source.", f.pieces_from_peers,
             f.pieces_from_registry),
        )  # fmt: skip
        for name, text, peer, registry in by_source:
            family = CounterMetricFamily(name, text, labels=["source"])
            family.add_metric(["peer"], peer)
            family.add_metric(["registry"], registry)
            yield family
        counters = (
            ("gaia_p2p_agent_pieces_failed", "Pieces a parent or the registry failed to send.",
             f.pieces_failed),
            ("gaia_p2p_agent_pieces_corrupt", "Pieces that failed their SHA-256.",
             f.pieces_corrupt),
            ("gaia_p2p_agent_coordinator_fallbacks",
             "Blobs fetched straight from the registry, the coordinator away.",
             f.coordinator_fallbacks),
            ("gaia_p2p_agent_coordinator_retries",
             "Coordinator calls tried again while it was overloaded.", f.coordinator_retries),
            ("gaia_p2p_agent_digest_mismatches", "Assembled blobs that failed their digest.",
             f.digest_mismatches),
            ("gaia_p2p_agent_blobs_completed", "Blobs verified into the cache.",
             f.blobs_completed),
            ("gaia_p2p_agent_uploaded_bytes", "Bytes of pieces sent to peers.", m.bytes_uploaded),
            ("gaia_p2p_agent_uploaded_pieces", "Pieces sent to peers.", m.pieces_uploaded),
            ("gaia_p2p_agent_tickets_refused", "Peer requests without a valid ticket.",
             m.tickets_refused),
            ("gaia_p2p_agent_cache_evicted", "Blobs evicted from the cache.", m.cache.evicted),
        )  # fmt: skip
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        yield GaugeMetricFamily(
            "gaia_p2p_agent_cache_bytes",
            "Bytes in the cache (blobs being fetched at their full size).",
            value=m.cache.used_bytes,
        )
        yield GaugeMetricFamily(
            "gaia_p2p_agent_downloads_active",
            "Blobs being fetched.",
            value=len(m.downloader.active),
        )


def mirror_app(mirror: Mirror) -> Starlette:
    async def base(request: Request) -> Response:
        return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})

    async def v2(request: Request) -> Response:
        rest = request.path_params["rest"]
        name, kind, reference = _split(rest)
        if name is None or not NAME.fullmatch(name) or len(name) > 255:
            return _error(404, "NAME_INVALID", "not a repository path of the distribution API")
        try:
            if kind == "manifests" and (TAG.fullmatch(reference) or DIGEST.fullmatch(reference)):
                return await mirror.manifest(request, name, reference)
            if kind == "blobs" and DIGEST.fullmatch(reference):
                return await mirror.blob(request, name, reference)
        except UpstreamError as exc:
            return _upstream_error(exc)
        except httpx.TransportError as exc:
            # the registry did not answer (refused, unreachable, timed out): a 502 the runtime
            # falls back on (containerd tries its next host), not a 500 with a stack trace
            log.warning("p2p: %s %s: the registry did not answer: %r", kind, name, exc)
            return _upstream_error(UpstreamError(502, f"the registry did not answer: {exc!r}"))
        return _error(404, "UNSUPPORTED", "this mirror serves reads of manifests and blobs only")

    async def metrics(request: Request) -> Response:
        return Response(mirror.metrics(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v2/", base, methods=["GET", "HEAD"]),
            Route("/v2/{rest:path}", v2, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


def peer_app(mirror: Mirror) -> Starlette:
    return Starlette(
        routes=[
            Route("/p2p/v1/blobs/{digest}/pieces/{index:int}", mirror.piece, methods=["GET"]),
        ]
    )


def _split(rest: str) -> tuple[str | None, str, str]:
    for kind in ("manifests", "blobs"):
        marker = f"/{kind}/"
        if marker in rest:
            name, _, reference = rest.rpartition(marker)
            return name, kind, reference
    return None, "", ""
