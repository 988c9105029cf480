"""The mirror streaming a blob while it downloads (gaia.node.p2p.server), in one process against
Debian's docker-registry: the reader's pace is held by the test through a small ASGI driver, so
what happens to a reader when the download finishes under it is deterministic.

- a blob bigger than the cache's cap still reaches a reader whole: it is pinned while it
  streams, and evicted only after;
- a reader that got bytes of a copy failing its digest is cut, even though the download then
  recovers from the registry (and a later reader gets the good blob);
- a HEAD of a blob not in the cache is the registry's answer: no download starts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gaia.node.p2p.cache import BlobCache, Partial
from gaia.node.p2p.download import Downloader
from gaia.node.p2p.server import Mirror, mirror_app
from gaia.node.p2p.upstream import Registry as UpstreamRegistry
from gaia.node.p2p.upstream import Upstream
from tests.support.p2p import Registry, random_image

MiB = 1 << 20
REPO = "p2p/stream"


@dataclass
class Pushed:
    registry: Registry
    layer: str
    data: bytes


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    registry = Registry(tmp_path_factory.mktemp("registry")).start()
    image = random_image(1, int(2.5 * MiB), seed=21)
    registry.push(image, REPO, "v1")
    blob = image.layers[0].blob
    yield Pushed(registry, blob.digest, blob.data)
    registry.stop()


@dataclass
class Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the last body message came (the body was not cut)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)


async def _request(app: object, method: str, path: str, reply: Reply) -> None:
    """One request through the ASGI app; after the first chunk of the body the reader waits
    for ``reply.go_on`` (a slow client)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "root_path": "",
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            reply.status = int(message["status"])  # type: ignore[call-overload]
            raw = message.get("headers") or []
            reply.headers = {k.decode(): v.decode() for k, v in raw}  # type: ignore[attr-defined]
        elif message["type"] == "http.response.body":
            reply.body += bytes(message.get("body", b""))  # type: ignore[call-overload]
            if reply.body and not reply.first_chunk.is_set():
                reply.first_chunk.set()
                await reply.go_on.wait()
            if not message.get("more_body", False):
                reply.complete = True

    await app(scope, receive, send)  # type: ignore[operator]


@dataclass
class Node:
    cache: BlobCache
    upstream: Upstream
    downloader: Downloader
    app: object

    async def close(self) -> None:
        await self.downloader.close()
        await self.upstream.close()


def _node(tmp_path: Path, registry: Registry, *, cap: int, cache: BlobCache | None = None) -> Node:
    cache = cache or BlobCache(tmp_path / "cache", max_bytes=cap)
    upstream = Upstream(
        {registry.host: UpstreamRegistry(registry.host, registry.url, default=True)}
    )
    downloader = Downloader(
        node="n1", cache=cache, upstream=upstream, coordinator=None, download_rate=4 * MiB
    )
    mirror = Mirror(
        node="n1",
        cache=cache,
        upstream=upstream,
        downloader=downloader,
        coordinator=None,
        prefetch=False,
    )
    return Node(cache, upstream, downloader, mirror_app(mirror))


def test_a_blob_bigger_than_the_cap_reaches_a_slow_reader_whole(
    tmp_path: Path, pushed: Pushed
) -> None:
    async def scenario() -> None:
        node = _node(tmp_path, pushed.registry, cap=MiB)
        try:
            reply = Reply()
            reading = asyncio.create_task(
                _request(node.app, "GET", f"/v2/{REPO}/blobs/{pushed.layer}", reply)
            )
            await asyncio.wait_for(reply.first_chunk.wait(), 30)
            # complete, and over the cap (on a quick machine it may have finished already)
            download = node.downloader.active.get(pushed.layer)
            if download is not None:
                await asyncio.wait_for(download.wait(), 30)
            reply.go_on.set()
            await asyncio.wait_for(reading, 30)
            assert reply.status == 200 and reply.complete
            assert bytes(reply.body) == pushed.data
            # the reader gone, the blob is no longer pinned: the next eviction takes it
            node.cache.evict()
            assert node.cache.path(pushed.layer) is None
        finally:
            await node.close()

    asyncio.run(scenario())


class CorruptOnce(BlobCache):
    """A cache whose first assembled copy of a blob has one byte flipped on disk (what a
    piece with no known hash, or a lying registry report, leaves behind)."""

    corrupted = False

    def finish(self, part: Partial) -> Path | None:
        if not self.corrupted:
            self.corrupted = True
            with part.data.open("r+b") as f:
                f.seek(MiB + 3)
                byte = f.read(1)
                f.seek(MiB + 3)
                f.write(bytes([byte[0] ^ 0xFF]))
        return super().finish(part)


def test_a_reader_of_a_copy_that_failed_its_digest_is_cut(tmp_path: Path, pushed: Pushed) -> None:
    async def scenario() -> None:
        cache = CorruptOnce(tmp_path / "cache", max_bytes=64 * MiB)
        node = _node(tmp_path, pushed.registry, cap=64 * MiB, cache=cache)
        try:
            early = Reply()
            path = f"/v2/{REPO}/blobs/{pushed.layer}"
            reading = asyncio.create_task(_request(node.app, "GET", path, early))
            await asyncio.wait_for(early.first_chunk.wait(), 30)
            download = node.downloader.active[pushed.layer]
            await asyncio.wait_for(download.wait(), 30)  # recovered from the registry
            early.go_on.set()
            with pytest.raises(Exception, match="failed its digest"):
                await asyncio.wait_for(reading, 30)
            assert early.status == 200 and not early.complete
            assert node.downloader.figures.digest_mismatches == 1
            late = Reply()
            late.go_on.set()
            await _request(node.app, "GET", path, late)
            assert late.complete and bytes(late.body) == pushed.data
            digest = f"sha256:{hashlib.sha256(late.body).hexdigest()}"
            assert digest == pushed.layer
        finally:
            await node.close()

    asyncio.run(scenario())


def test_a_head_of_a_blob_not_cached_starts_no_download(tmp_path: Path, pushed: Pushed) -> None:
    async def scenario() -> None:
        node = _node(tmp_path, pushed.registry, cap=64 * MiB)
        try:
            reply = Reply()
            reply.go_on.set()
            await _request(node.app, "HEAD", f"/v2/{REPO}/blobs/{pushed.layer}", reply)
            assert reply.status == 200
            assert reply.headers["content-length"] == str(len(pushed.data))
            assert reply.headers["docker-content-digest"] == pushed.layer
            assert not node.downloader.active
            assert not list((tmp_path / "cache" / "partial").iterdir())
        finally:
            await node.close()

    asyncio.run(scenario())
