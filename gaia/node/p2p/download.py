"""The agent's downloader: one download per blob, pieces from peers or (once) the registry.

``Downloader.blob(registry, repository, digest)`` returns the blob's ``Download``, starting it
or joining the one in flight, so many clients asking for one layer cost one download. A
download:

1. checks with the registry that this node may read the blob, and learns its size (a HEAD);
2. opens the blob's swarm at the coordinator and resumes any partial file in the cache (the
   pieces that still verify are declared to the coordinator at once, before the first
   ``schedule``, so it does not hand this node a lease for a piece it has: such a lease would
   hold a parent's upload slot, or the piece's one registry fetch, until it expired);
3. keeps up to ``slots`` pieces in flight: it asks the coordinator (``schedule``) for
   assignments, fetches each from the named parent (with the assignment's ticket, which only
   that parent's peer server takes) or from the
   registry (a Range GET), checks it against its SHA-256 (a registry piece's hash is computed
   and reported: it becomes the piece's hash for everyone), writes it at its offset and reports
   it; a parent that refuses, stalls past ``piece_timeout_s`` or sends a corrupt piece is
   reported ``ok: false`` with the reason, and the coordinator hands the piece to someone else;
4. when every piece is in, hashes the whole file against the digest and moves it into the
   cache; on a mismatch it tells the coordinator and fetches the blob from the registry alone
   (``Download.attempt`` counts up, so readers that streamed bytes of the bad copy are cut).

If the coordinator cannot be reached (``CoordinatorUnavailable``), the download goes on without
it, every remaining piece straight from the registry: slower for the cluster, never stuck. A
coordinator that is there but slow is waited for (``coordinator_patience_s``), and one that
answers 404 (it forgot this node or the blob: it restarted, or, overloaded, it missed this node's
heartbeats) is joined again once, with the pieces held, and asked again: a busy platform must
not turn into every node fetching whole blobs from the registry (``bench/p2p.py``, N = 32).
A piece from the registry that fails is tried again (``REGISTRY_TRIES``) before the download
gives up.
Readers can stream a download as it runs (``Download.wait_piece``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx

from gaia.domain.swarm import piece_range, piece_size
from gaia.node.p2p.cache import BlobCache, Partial
from gaia.node.p2p.client import KEEPALIVE_S, CoordinatorRefused
from gaia.node.p2p.peers import PeerClient, PeerError
from gaia.node.p2p.upstream import Registry, Upstream, UpstreamError
from gaia.node.p2p.wire import (
    Assignment,
    BlobRef,
    Coordinator,
    CoordinatorUnavailable,
    PieceReport,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
TICKET_HEADER = "X-Gaia-Ticket"
REGISTRY_TRIES = 3  # attempts per piece on the direct path, with a short pause between
Declare = Callable[[Mapping[str, Sequence[int]]], Awaitable[None]]


class DigestMismatch(Exception):
    """The assembled blob did not hash to its digest (raised to readers of the bad copy)."""


class RateLimit:
    """A token bucket in bytes per second (0: unlimited); ``take`` waits until ``n`` fit."""

    def __init__(self, rate: float, *, burst_s: float = 0.25) -> None:
        self.rate = rate
        self.capacity = max(rate * burst_s, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            if self.tokens < 0:
                # debt is paid by waiting; the next taker waits behind it (lock held)
                await asyncio.sleep(-self.tokens / self.rate)
                self.stamp = time.monotonic()
                self.tokens = 0.0


@dataclass
class Figures:
    """What this agent fetched, for its /metrics."""

    bytes_from_peers: int = 0
    bytes_from_registry: int = 0
    pieces_from_peers: int = 0
    pieces_from_registry: int = 0
    pieces_failed: int = 0
    pieces_corrupt: int = 0
    coordinator_fallbacks: int = 0
    coordinator_retries: int = 0  # calls tried again while the coordinator was overloaded
    digest_mismatches: int = 0
    blobs_completed: int = 0


@dataclass
class Download:
    registry: Registry
    repository: str
    digest: str
    size: int = 0
    piece: int = 0
    part: Partial | None = None
    path: Path | None = None  # the complete blob, once verified
    error: BaseException | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    attempt: int = 0  # 1 once the swarm's copy failed the digest and the registry's is fetched
    rejoined: bool = False  # the coordinator forgot the node or blob once, and it joined again

    @property
    def finished(self) -> bool:
        return self.path is not None or self.error is not None

    async def ready(self) -> None:
        """Wait until size and piece size are known (or the download failed)."""
        async with self.changed:
            await self.changed.wait_for(lambda: self.part is not None or self.finished)
        if self.error is not None and self.part is None and self.path is None:
            raise self.error

    async def wait_piece(self, index: int) -> bytes:
        """The bytes of piece ``index`` once they are here (raises if the download failed)."""
        async with self.changed:
            await self.changed.wait_for(
                lambda: (
                    self.path is not None
                    or self.error is not None
                    or (self.part is not None and self.part.has(index))
                )
            )
        if self.path is None and self.error is None:
            assert self.part is not None
            try:
                return self.part.read_piece(index)
            except FileNotFoundError:
                pass  # finished meanwhile: the file moved into the cache (or was dropped)
        path = await self.wait()
        start, end = piece_range(index, self.size, self.piece)
        with path.open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    async def wait(self) -> Path:
        async with self.changed:
            await self.changed.wait_for(lambda: self.finished)
        if self.error is not None:
            raise self.error
        assert self.path is not None
        return self.path

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class Downloader:
    def __init__(
        self,
        *,
        node: str,
        cache: BlobCache,
        upstream: Upstream,
        coordinator: Coordinator | None,
        slots: int = 4,
        download_rate: float = 0,
        piece_timeout_s: float = 30.0,
        coordinator_patience_s: float = 60.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.coordinator_patience_s = coordinator_patience_s
        self.node = node
        self.cache = cache
        self.upstream = upstream
        self.coordinator = coordinator
        self.slots = slots
        self.limit = RateLimit(download_rate)
        # pieces in flight for the whole node, whatever the number of blobs: few at a time, so
        # each piece is complete (and can be passed on) soon, instead of many at a crawl
        self.gate = asyncio.Semaphore(slots)
        self.figures = Figures()
        self.active: dict[str, Download] = {}
        self._peers = PeerClient(timeout_s=piece_timeout_s, connect_s=3.0, keepalive_s=KEEPALIVE_S)
        self._now = now
        # how resumed pieces reach the coordinator before the first schedule (the agent's
        # registration with ``held``); None: they are declared at the next heartbeat only
        self.declare: Declare | None = None

    async def close(self) -> None:
        for download in list(self.active.values()):
            if download.task is not None:
                download.task.cancel()
                with contextlib.suppress(BaseException):
                    await download.task
        await self._peers.aclose()

    def blob(self, registry: Registry, repository: str, digest: str) -> Download:
        """The download of ``digest``: the one in flight, or a new one."""
        found = self.active.get(digest)
        if found is not None and not found.finished:
            return found
        download = Download(registry, repository, digest)
        self.active[digest] = download
        download.task = asyncio.create_task(self._run(download), name=f"p2p {digest[:19]}")
        return download

    def held_partial(self) -> dict[str, list[int]]:
        """The pieces of blobs being fetched now, for the coordinator's ``pieces_held``."""
        return {
            digest: sorted(d.part.pieces)
            for digest, d in list(self.active.items())
            if d.part is not None and d.part.pieces and d.path is None
        }

    def piece_held(self, digest: str, index: int) -> bytes | None:
        """Piece ``index`` of ``digest`` when this node holds it (complete or in flight)."""
        path = self.cache.path(digest)
        if path is not None:
            size = path.stat().st_size
            piece = piece_size(size)
            try:
                start, end = piece_range(index, size, piece)
            except ValueError:
                return None
            with self.cache.pinned(digest), path.open("rb") as f:
                f.seek(start)
                return f.read(end - start)
        download = self.active.get(digest)
        if download is not None and download.part is not None and download.part.has(index):
            try:
                return download.part.read_piece(index)
            except FileNotFoundError:  # finished meanwhile: it is in the cache now
                return self.piece_held(digest, index) if self.cache.size(digest) else None
        return None

    # ------------------------------------------------------------------ one download

    async def _run(self, d: Download) -> None:
        try:
            await self._download(d)
        except asyncio.CancelledError:
            d.error = UpstreamError(503, "the agent is stopping")
            raise
        except Exception as exc:  # the download failed: every reader gets the reason
            log.warning("p2p: %s of %s failed: %s", d.digest, d.repository, exc)
            d.error = exc
        finally:
            await d._notify()
            if self.active.get(d.digest) is d:
                del self.active[d.digest]

    async def _download(self, d: Download) -> None:
        d.size = await self.upstream.check_access(d.registry, d.repository, d.digest)
        swarm = self.coordinator is not None
        hashes: dict[int, str] = {}
        d.piece = piece_size(d.size)
        if swarm:
            assert self.coordinator is not None
            try:
                blob = BlobRef(d.registry.host, d.repository, d.digest, d.size)
                task = await self._patiently(partial(self.coordinator.open_task, self.node, blob))
                d.piece, hashes = task.piece_size, dict(task.hashes)
            except (CoordinatorUnavailable, CoordinatorRefused) as exc:
                swarm = self._fallback(d, exc)
        d.part = self.cache.partial(d.digest, size=d.size, piece_size=d.piece)
        await d._notify()
        if swarm and d.part.pieces and self.declare is not None:
            try:
                await self.declare({d.digest: sorted(d.part.pieces)})
            except (CoordinatorUnavailable, CoordinatorRefused) as exc:
                swarm = self._fallback(d, exc)
        if swarm:
            swarm = await self._swarm(d, hashes)
        if not swarm:
            await self._direct(d)
        path = self.cache.finish(d.part)
        if path is None:
            self.figures.digest_mismatches += 1
            log.warning(
                "p2p: %s did not hash to its digest; fetching it from the registry", d.digest
            )
            if self.coordinator is not None:
                with contextlib.suppress(CoordinatorUnavailable, CoordinatorRefused):
                    await self.coordinator.done(self.node, d.digest, ok=False, reason="digest")
            d.attempt += 1
            d.part = self.cache.partial(d.digest, size=d.size, piece_size=d.piece)
            await d._notify()
            await self._direct(d)
            path = self.cache.finish(d.part)
            if path is None:
                raise UpstreamError(502, f"{d.digest}: the registry's bytes do not match it")
        elif swarm and self.coordinator is not None:
            with contextlib.suppress(CoordinatorUnavailable, CoordinatorRefused):
                await self.coordinator.done(self.node, d.digest, ok=True)
        d.path = path
        self.figures.blobs_completed += 1

    async def _patiently(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, tried again while the coordinator is overloaded (it timed out or answered
        5xx/429) for up to ``coordinator_patience_s``: a busy coordinator must not send whole
        blobs to the registry (bench/p2p.py at N = 32 on two cores: 2.4 F without this). An
        unreachable one raises at once."""
        pause = 0.5
        deadline = time.monotonic() + self.coordinator_patience_s
        while True:
            try:
                return await call()
            except CoordinatorUnavailable as exc:
                if not exc.overloaded or time.monotonic() + pause > deadline:
                    raise
                self.figures.coordinator_retries += 1
                log.info("p2p: the coordinator is slow (%s); trying again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(2 * pause, 5.0)

    async def _asking(self, d: Download, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` patiently; when the coordinator answers 404 (it forgot this node or this
        blob's swarm), join again once (register with the pieces held, open the task) and ask
        again. A second 404 raises: the download then goes on from the registry."""
        try:
            return await self._patiently(call)
        except CoordinatorRefused as exc:
            if exc.status != 404 or d.rejoined:
                raise
            d.rejoined = True
            log.info(
                "p2p: the coordinator forgot %s or this node: joining again (%s)", d.digest, exc
            )
        assert self.coordinator is not None and d.part is not None
        if self.declare is not None:
            await self._patiently(partial(self.declare, {d.digest: sorted(d.part.pieces)}))
        blob = BlobRef(d.registry.host, d.repository, d.digest, d.size)
        await self._patiently(partial(self.coordinator.open_task, self.node, blob))
        return await self._patiently(call)

    def _fallback(self, d: Download, exc: Exception) -> bool:
        self.figures.coordinator_fallbacks += 1
        log.warning(
            "p2p: coordinator unavailable (%s): %s straight from the registry", exc, d.digest
        )
        return False

    async def _swarm(self, d: Download, hashes: dict[int, str]) -> bool:
        """Fetch pieces as the coordinator assigns them; False if it became unavailable.

        Finished pieces are reported with the next ``schedule`` call ("done, next": one round
        trip per piece, not two; the coordinator's CPU per call is what bounds a two-core
        platform at N = 32); only when there is nothing to ask for (every missing piece in
        flight, or no node-wide slot free) do they go in a ``reports`` call of their own, at
        once, since a parent's upload slot is held until its piece is reported."""
        assert self.coordinator is not None and d.part is not None
        inflight: dict[asyncio.Task[PieceReport], Assignment] = {}
        finished: list[PieceReport] = []  # not yet told to the coordinator
        ticket = ""
        try:
            while d.part.missing() or inflight:
                busy = {a.piece for a in inflight.values()}
                missing = [i for i in d.part.missing() if i not in busy]
                if missing and len(inflight) < self.slots:
                    # node-wide slots first, then leases: a lease waiting for a slot would hold
                    # a parent's upload slot (or the piece's one registry fetch) for nothing
                    if inflight or finished:
                        permits = await self._take(
                            min(self.slots - len(inflight), len(missing), 16)
                        )
                    else:
                        await self.gate.acquire()  # wait for one; the long poll holds only it
                        permits = 1
                    if permits:
                        told, finished = finished, []
                        try:
                            schedule = await self._asking(
                                d,
                                partial(
                                    self.coordinator.schedule,
                                    self.node,
                                    d.digest,
                                    want=permits,
                                    wait_s=0.0 if inflight or told else 2.0,
                                    reports=told,
                                ),
                            )
                        except BaseException:
                            self._give(permits)
                            raise
                        hashes.update(schedule.hashes)
                        ticket = schedule.ticket or ticket
                        held = []
                        for a in schedule.assignments:
                            if d.part.has(a.piece):
                                held.append(a)
                            if permits == 0 or d.part.has(a.piece) or a.piece in busy:
                                continue
                            permits -= 1
                            busy.add(a.piece)
                            fetch = self._fetch_one(d, a, hashes.get(a.piece), a.ticket or ticket)
                            task = asyncio.create_task(fetch)
                            # the slot comes back however the task ends (even cancelled unstarted)
                            task.add_done_callback(lambda _: self.gate.release())
                            inflight[task] = a
                        self._give(permits)
                        if held:
                            await self._release_held(d, held)
                        if schedule.complete and not d.part.missing():
                            break
                if finished:
                    told, finished = finished, []
                    await self._asking(
                        d, partial(self.coordinator.report, self.node, d.digest, told)
                    )
                if not inflight:
                    continue
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    a = inflight.pop(t)
                    # the report names the assignment's lease: sent twice (a call repeated
                    # when its answer was lost), it counts once
                    finished.append(replace(t.result(), lease=a.lease))
                await d._notify()  # readers stream the new pieces before anyone is told
            if finished:
                await self._asking(
                    d, partial(self.coordinator.report, self.node, d.digest, finished)
                )
        except (CoordinatorUnavailable, CoordinatorRefused) as exc:
            # away, or busy past the patience, or it forgot this node or blob again after it
            # joined again (the next heartbeat registers with the pieces held); this blob goes
            # on from the registry
            return self._fallback(d, exc)
        finally:
            for t in inflight:  # none left on success; on any error they must not write on
                t.cancel()
        return True

    async def _release_held(self, d: Download, leased: list[Assignment]) -> None:
        """The coordinator leased pieces this node already has (it lost their declaration):
        end those leases at once (``ok: false`` without a parent demotes no one, and frees the
        parent's upload slot or the piece's registry fetch), then declare the pieces again."""
        assert self.coordinator is not None
        reports = [
            PieceReport(a.piece, False, parent=None, reason="held", lease=a.lease) for a in leased
        ]
        await self.coordinator.report(self.node, d.digest, reports)
        if self.declare is not None:
            await self.declare({d.digest: [a.piece for a in leased]})

    async def _take(self, wanted: int) -> int:
        """Up to ``wanted`` node-wide slots that are free now (acquiring a free slot does not
        wait)."""
        taken = 0
        while taken < wanted and not self.gate.locked():
            await self.gate.acquire()
            taken += 1
        return taken

    def _give(self, count: int) -> None:
        for _ in range(count):
            self.gate.release()

    async def _fetch(
        self, d: Download, a: Assignment, expected: str | None, ticket: str
    ) -> PieceReport:
        async with self.gate:
            return await self._fetch_one(d, a, expected, ticket)

    async def _fetch_one(
        self, d: Download, a: Assignment, expected: str | None, ticket: str
    ) -> PieceReport:
        assert d.part is not None
        start, end = piece_range(a.piece, d.size, d.piece)
        data: bytes | bytearray
        try:
            if a.source == "registry":
                data = await self.upstream.blob_range(
                    d.registry, d.repository, d.digest, start, end
                )
            else:
                assert a.address is not None
                answer = await self._peers.get(
                    a.address,
                    f"/p2p/v1/blobs/{d.digest}/pieces/{a.piece}",
                    {TICKET_HEADER: ticket},
                )
                if answer.status != 200:
                    self.figures.pieces_failed += 1
                    reason = "missing" if answer.status == 404 else "refused"
                    return PieceReport(a.piece, False, parent=a.parent, reason=reason)
                data = answer.body
        except (httpx.TimeoutException, httpx.TransportError, PeerError) as exc:
            self.figures.pieces_failed += 1
            if isinstance(exc, PeerError):
                reason = exc.reason
            else:
                reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
            log.warning(
                "p2p: piece %d of %s from %s: %s (%r)",
                a.piece,
                d.digest,
                a.parent or "the registry",
                reason,
                exc,
            )
            return PieceReport(a.piece, False, parent=a.parent, reason=reason)
        except UpstreamError as exc:
            self.figures.pieces_failed += 1
            log.warning("p2p: piece %d of %s from the registry: %s", a.piece, d.digest, exc)
            return PieceReport(a.piece, False, parent=None, reason="registry")
        sha = hashlib.sha256(data).hexdigest()
        if len(data) != end - start or (a.source == "peer" and expected and sha != expected):
            self.figures.pieces_corrupt += 1
            return PieceReport(a.piece, False, parent=a.parent, reason="corrupt")
        await self.limit.take(len(data))
        d.part.write_piece(a.piece, data, sha)
        if a.source == "registry":
            self.figures.pieces_from_registry += 1
            self.figures.bytes_from_registry += len(data)
        else:
            self.figures.pieces_from_peers += 1
            self.figures.bytes_from_peers += len(data)
        return PieceReport(
            a.piece,
            True,
            sha256=sha,
            parent=a.parent if a.source == "peer" else None,
            bytes=len(data),
        )

    async def _direct(self, d: Download) -> None:
        """Every missing piece from the registry, ``slots`` at a time."""
        assert d.part is not None
        gate = asyncio.Semaphore(self.slots)

        async def one(index: int) -> None:
            async with gate:
                for attempt in range(REGISTRY_TRIES):
                    if attempt:
                        await asyncio.sleep(0.5 * attempt)
                    report = await self._fetch(d, Assignment(index, "registry"), None, "")
                    if report.ok:
                        break
                else:
                    raise UpstreamError(502, f"{d.digest}: piece {index} failed ({report.reason})")
                await d._notify()

        await asyncio.gather(*(one(i) for i in d.part.missing()))
