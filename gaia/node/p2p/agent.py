"""``gaia p2p-agent``: the agent's process: cache, upstream, downloader, two servers, heartbeat.

``P2PAgent.run()`` serves the mirror (loopback: containerd and podman on this node) and the peer
server (the node's address: other agents) with uvicorn, and registers with the coordinator every
``heartbeat_s`` (the first answer brings this node's own ticket key, which the peer server needs
before it hands out a piece). Without a coordinator (none configured, or unreachable) it still
serves as a caching mirror straight from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from gaia.node.p2p.cache import BlobCache
from gaia.node.p2p.download import Downloader
from gaia.node.p2p.server import Mirror, mirror_app, peer_app
from gaia.node.p2p.upstream import MANIFEST_ACCEPT, Registry, Upstream, UpstreamError
from gaia.node.p2p.wire import AgentInfo, Coordinator, CoordinatorUnavailable

log = logging.getLogger(__name__)
HELD_BLOBS = 256  # blobs per pieces_held declaration (the API's bound)


@dataclass(frozen=True)
class AgentConfig:
    node: str
    zone: str
    listen: tuple[str, int]
    peer_listen: tuple[str, int]
    advertise: str  # host:port other agents reach the peer server at
    cache_dir: Path
    cache_max_bytes: int
    # pieces served at once: 4 rather than 8 finished N = 16 nodes 10 % sooner in bench/p2p.py
    # (1.18 vs 1.31 x the bound; a parent's uplink split 8 ways holds 8 children's download
    # slots on slow pieces) and kept the coordinator under its timeouts at N = 32
    upload_slots: int = 4
    coordinator_patience_s: float = 60.0
    download_slots: int = 4
    upload_rate: float = 0
    download_rate: float = 0
    heartbeat_s: float = 10.0


class P2PAgent:
    def __init__(
        self,
        config: AgentConfig,
        registries: dict[str, Registry],
        coordinator: Coordinator | None,
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.cache = BlobCache(config.cache_dir, max_bytes=config.cache_max_bytes)
        self.upstream = Upstream(registries)
        self.downloader = Downloader(
            node=config.node,
            cache=self.cache,
            upstream=self.upstream,
            coordinator=coordinator,
            slots=config.download_slots,
            coordinator_patience_s=config.coordinator_patience_s,
            download_rate=config.download_rate,
        )
        self.mirror = Mirror(
            node=config.node,
            cache=self.cache,
            upstream=self.upstream,
            downloader=self.downloader,
            coordinator=coordinator,
            upload_slots=config.upload_slots,
            upload_rate=config.upload_rate,
        )
        self.downloader.declare = self.declare
        self.registered = asyncio.Event()
        self._prewarms: dict[str, asyncio.Task[None]] = {}
        self._servers: list[uvicorn.Server] = []

    def held(self, limit: int = HELD_BLOBS) -> dict[str, list[int]]:
        """What this node holds, for ``pieces_held``: the pieces of blobs being fetched (a
        resumed download's included), then the most recently used complete blobs, ``limit``
        blobs in all (the API's bound)."""
        held = dict(list(self.downloader.held_partial().items())[:limit])
        for digest, pieces in reversed(list(self.cache.held(limit).items())):
            if len(held) >= limit:
                break
            held.setdefault(digest, pieces)
        return held

    async def declare(self, held: Mapping[str, Sequence[int]]) -> None:
        """Tell the coordinator about pieces now (a resumed download), not at the next
        heartbeat; raises CoordinatorUnavailable or CoordinatorRefused."""
        assert self.coordinator is not None
        answer = await self.coordinator.register(self._info(), held)
        self.mirror.ticket_key = answer.ticket_key
        self.mirror.piece_tickets = answer.tickets >= 2

    def _info(self) -> AgentInfo:
        return AgentInfo(
            self.config.node, self.config.zone, self.config.advertise, self.config.upload_slots
        )

    async def register_once(self) -> bool:
        if self.coordinator is None:
            return False
        try:
            answer = await self.coordinator.register(self._info(), self.held())
        except CoordinatorUnavailable as exc:
            log.warning("p2p agent: the coordinator is unavailable: %s", exc)
            return False
        self.mirror.ticket_key = answer.ticket_key
        self.mirror.piece_tickets = answer.tickets >= 2
        self.config_heartbeat = answer.heartbeat_s
        for host, (url, username, password) in answer.registries.items():
            self.upstream.use_platform_registry(
                host, url, username, password, ca_pem=answer.registry_cas.get(host)
            )
        self.registered.set()
        for pid, image in answer.prewarm:
            if pid not in self._prewarms:
                self._prewarms[pid] = asyncio.create_task(
                    self.prewarm(image), name=f"prewarm {pid}"
                )
        # a job finished here and no longer named is forgotten (the platform makes one per app
        # and image, so an agent that lives long sees many): named again (not done by the
        # coordinator's count), it is taken up again
        named = {pid for pid, _ in answer.prewarm}
        for pid in [p for p, task in self._prewarms.items() if p not in named and task.done()]:
            del self._prewarms[pid]
        return True

    async def prewarm(self, image: str) -> None:
        """Pull ``image`` into the cache before anyone asks (the platform's prewarm job): its
        manifest (for an index, this node's platform's manifest), then every blob through the
        swarm. The coordinator follows the progress through the usual manifest and done calls."""
        try:
            host, repository, reference = parse_image(image)
            registry = self.upstream.registry(host)
            body, media_type, _ = await self.mirror.fetch_manifest(
                registry, repository, reference, accept=MANIFEST_ACCEPT, prefetch=True
            )
            chosen = platform_manifest(body, media_type)
            if chosen is not None:
                await self.mirror.fetch_manifest(
                    registry, repository, chosen, accept=MANIFEST_ACCEPT, prefetch=True
                )
            log.info("p2p agent: prewarming %s", image)
        except (UpstreamError, ValueError) as exc:
            log.warning("p2p agent: prewarm of %s failed: %s", image, exc)

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.register_once()
            await asyncio.sleep(getattr(self, "config_heartbeat", self.config.heartbeat_s))

    def _server(self, app: object, where: tuple[str, int]) -> uvicorn.Server:
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host=where[0],
            port=where[1],
            log_level="warning",
            access_log=False,
            lifespan="off",
            # well past the clients' keep-alive expiry (KEEPALIVE_S): a connection is closed by
            # the client that stopped using it, never by this server as a request arrives
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        # two servers in one loop: the process's signal handlers (cli) stop both, so uvicorn
        # must not install its own (the last one installed would stop only its server)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._servers.append(server)
        return server

    async def run(self) -> None:
        mirror = self._server(mirror_app(self.mirror), self.config.listen)
        peers = self._server(peer_app(self.mirror), self.config.peer_listen)
        heartbeat = asyncio.create_task(self._heartbeat(), name="p2p heartbeat")
        try:
            await asyncio.gather(mirror.serve(), peers.serve())
        finally:
            heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await heartbeat
            await self.downloader.close()
            await self.upstream.close()

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True


def parse_image(image: str) -> tuple[str, str, str]:
    """``host[:port]/repository:tag`` or ``…@sha256:…`` as (registry host, repository,
    reference). The registry host is always named (a prewarm names its registry)."""
    host, slash, rest = image.partition("/")
    if not slash or not rest:
        raise ValueError(f"{image!r}: expected <registry>/<repository>[:tag|@digest]")
    if "@" in rest:
        repository, _, reference = rest.partition("@")
    else:
        repository, colon, reference = rest.rpartition(":")
        if not colon or "/" in reference:
            repository, reference = rest, "latest"
    return host, repository, reference


def platform_manifest(body: bytes, media_type: str) -> str | None:
    """For an image index, the digest of this machine's platform's manifest (linux and this
    architecture); None for an image manifest."""
    if "index" not in media_type and "manifest.list" not in media_type:
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for entry in json.loads(body).get("manifests") or []:
        want = entry.get("platform") or {}
        if want.get("os") == "linux" and want.get("architecture") == arch:
            return str(entry["digest"])
    raise ValueError(f"the index has no manifest for linux/{arch}")
