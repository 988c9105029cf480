"""An overloaded coordinator is waited for; an unreachable one is not (gaia.node.p2p.download).

Seen in bench/p2p.py at N = 32 on two cores: the platform answered some schedule calls after the
agents' 10 s timeout, and every agent that saw one fetched that whole blob from the registry
(2.4 F of registry egress instead of 1.0 F). Now a timeout, 5xx or 429 is tried again for up to
``coordinator_patience_s``; only a coordinator that cannot be reached sends the blob to the
registry at once. The coordinator here is the real platform over HTTP, behind a wrapper that
makes its first calls fail the way an overloaded one does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gaia.node.p2p.cache import BlobCache
from gaia.node.p2p.client import HttpCoordinator
from gaia.node.p2p.download import Download, Downloader
from gaia.node.p2p.upstream import Registry as UpstreamRegistry
from gaia.node.p2p.upstream import Upstream
from gaia.node.p2p.wire import AgentInfo, Assignment, CoordinatorUnavailable
from gaia.platform import Platform
from tests.support import p2p
from tests.support.p2p import Registry, random_image

MiB = 1 << 20
REPO = "p2p/patience"


class Flaky:
    """The real coordinator; the first ``fail`` calls of ``method`` raise instead."""

    def __init__(self, real: HttpCoordinator, method: str, fail: int, *, overloaded: bool):
        self.real, self.method, self.fail, self.overloaded = real, method, fail, overloaded
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name != self.method:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.failed < self.fail:
                self.failed += 1
                raise CoordinatorUnavailable("made to fail", overloaded=self.overloaded)
            return await attr(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, str, bytes]]:
    registry = Registry(tmp_path_factory.mktemp("registry")).start()
    image = random_image(1, 3 * MiB, seed=33)
    registry.push(image, REPO, "v1")
    blob = image.layers[0].blob
    yield registry, blob.digest, blob.data
    registry.stop()


@pytest.mark.parametrize(
    ("method", "overloaded", "falls_back"),
    [
        ("schedule", True, False),
        ("report", True, False),
        ("open_task", True, False),
        ("schedule", False, True),
    ],
)
def test_a_slow_coordinator_is_waited_for_and_a_gone_one_is_not(
    platform: Platform,
    tmp_path: Path,
    pushed: tuple[Registry, str, bytes],
    method: str,
    overloaded: bool,
    falls_back: bool,
) -> None:
    registry, digest, data = pushed

    async def scenario(origin: str, token: str) -> None:
        upstream = Upstream(
            {registry.host: UpstreamRegistry(registry.host, registry.url, default=True)}
        )
        async with HttpCoordinator(origin=origin, cluster="sim-1", token=token) as real:
            await real.register(AgentInfo("n1", "z1", "127.0.0.1:1", 4))
            flaky = Flaky(real, method, 2, overloaded=overloaded)
            downloader = Downloader(
                node="n1",
                cache=BlobCache(tmp_path / "cache", max_bytes=64 * MiB),
                upstream=upstream,
                coordinator=flaky,  # type: ignore[arg-type]
                coordinator_patience_s=10,
            )
            try:
                download = downloader.blob(upstream.registry(None), REPO, digest)
                assert download.task is not None
                await download.task
                assert download.error is None, download.error
                assert download.path is not None
                assert (
                    hashlib.sha256(download.path.read_bytes()).digest()
                    == hashlib.sha256(data).digest()
                )
            finally:
                await downloader.close()
                await upstream.close()
        f = downloader.figures
        assert flaky.failed == (1 if falls_back else 2)  # a gone one is not asked again
        assert f.coordinator_fallbacks == (1 if falls_back else 0)
        assert f.coordinator_retries == (0 if falls_back else 2)
        if not falls_back:
            # through the swarm: one registry lease per piece
            assert f.pieces_from_registry == -(-len(data) // MiB)

    with p2p.served_coordinator(platform) as up:
        asyncio.run(scenario(up.origin, up.token))


def test_a_coordinator_that_forgot_the_node_is_joined_again_not_left_for_the_registry(
    platform: Platform, tmp_path: Path, pushed: tuple[Registry, str, bytes]
) -> None:
    """An overloaded platform that answered heartbeats late forgot the node (404 "not
    registered") in the middle of its download: the agent registers again with the pieces it
    holds, opens the task again, and the blob goes on through the swarm."""
    registry, digest, data = pushed

    async def scenario(origin: str, token: str) -> Downloader:
        upstream = Upstream(
            {registry.host: UpstreamRegistry(registry.host, registry.url, default=True)}
        )
        async with HttpCoordinator(origin=origin, cluster="sim-1", token=token) as real:
            info = AgentInfo("n1", "z1", "127.0.0.1:1", 4)
            await real.register(info)
            calls = 0

            class Forgetful:
                def __getattr__(self, name: str) -> Any:
                    return getattr(real, name)

                async def schedule(self, *args: Any, **kwargs: Any) -> Any:
                    nonlocal calls
                    calls += 1
                    if calls == 2:  # after the first piece's lease: the node is forgotten
                        for c in platform.p2p._clusters.values():
                            platform.p2p._forget(c, "n1")
                    return await real.schedule(*args, **kwargs)

            downloader = Downloader(
                node="n1",
                cache=BlobCache(tmp_path / "cache", max_bytes=64 * MiB),
                upstream=upstream,
                coordinator=Forgetful(),  # type: ignore[arg-type]
                slots=1,
            )

            async def declare(held: Any) -> None:
                await real.register(info, held)

            downloader.declare = declare
            try:
                download = downloader.blob(upstream.registry(None), REPO, digest)
                assert download.task is not None
                await download.task
                assert download.error is None, download.error
                assert download.path is not None and download.path.read_bytes() == data
                assert download.rejoined
            finally:
                await downloader.close()
                await upstream.close()
        return downloader

    with p2p.served_coordinator(platform) as up:
        downloader = asyncio.run(scenario(up.origin, up.token))
    f = downloader.figures
    assert f.coordinator_fallbacks == 0
    assert f.pieces_from_registry == -(-len(data) // MiB)  # every piece leased, none refetched


def test_a_parent_whose_kept_alive_connection_closed_is_asked_again(tmp_path: Path) -> None:
    """A parent that closed a kept-alive connection just as the request went out answered
    nothing: the piece is asked for once more on a new connection instead of reporting the
    parent unreachable (which makes the coordinator forget every piece it holds of the blob:
    seen in bench/p2p.py as registry refetches)."""
    piece = b"p" * 4096
    digest = "sha256:" + hashlib.sha256(piece).hexdigest()

    async def scenario() -> tuple[bool, int]:
        connections = 0

        async def parent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.readuntil(b"\r\n\r\n")
            if connections == 1:  # as a server timing out an idle connection would
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(piece) + piece)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(parent, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        upstream = Upstream({})
        downloader = Downloader(
            node="n1",
            cache=BlobCache(tmp_path / "cache", max_bytes=MiB),
            upstream=upstream,
            coordinator=None,
        )
        async with server:
            d = Download(UpstreamRegistry("r", "http://r"), REPO, digest, size=len(piece))
            d.piece = MiB
            d.part = downloader.cache.partial(digest, size=len(piece), piece_size=MiB)
            report = await downloader._fetch_one(
                d, Assignment(0, "peer", parent="n2", address=address), None, "ticket"
            )
        await downloader.close()
        await upstream.close()
        return report.ok, connections

    ok, connections = asyncio.run(scenario())
    assert ok and connections == 2
