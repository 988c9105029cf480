"""The agent's blob cache: complete blobs, partial blobs that survive a restart, LRU under a cap.

Layout under the cache folder:

- ``blobs/<hex>``: a complete blob, named by the hex of its SHA-256, moved there only after the
  whole file hashed to its digest.
- ``partial/<hex>``: a blob being fetched, written piece by piece at each piece's offset, and
  ``partial/<hex>.jsonl``: its journal, JSON lines: first ``{"digest", "size", "piece_size"}``,
  then one ``[index, "<sha256 hex>"]`` per piece written.

**Resumption.** A piece's line is appended after its bytes are written (one small ``O_APPEND``
write: rewriting the whole list per piece cost 8 % of an agent's CPU in ``bench/p2p.py``), so
after a crash the journal can only under-state what the data file holds, end in a torn line
(ignored), or name a piece whose bytes did not reach the disk (the page cache is not flushed per
piece: an fsync per 1 MiB piece would halve the write rate). So a restarted agent does not trust
the journal: it re-reads every listed piece and keeps only those that still hash to the recorded
SHA-256. That costs one read of what was there, once, at the first use of the blob after the
restart.

**Eviction.** Complete blobs are kept in least-recently-used order (by last use, restored from
the files' modification times on start) and evicted while the cache holds more than its cap.
The partial blobs this process writes count against the cap from the moment they are opened
(at their full size: that is the disk they will take), so a download makes room before it
fills the disk, but they are never evicted (a download in flight owns its space). A blob in use
(served to a client, streamed from its download, or passed on to peers right now) is pinned and
never evicted. Partial files nobody resumed for ``PARTIAL_MAX_AGE_S`` are removed at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gaia.domain.swarm import piece_count, piece_range, piece_size

log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")
PARTIAL_MAX_AGE_S = 24 * 3600.0


def digest_hex(digest: str) -> str:
    """The 64 hex characters of a ``sha256:`` digest; ValueError for anything else."""
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or not set(hexpart) <= _HEX:
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    return hexpart


@dataclass
class Partial:
    """A blob being fetched: its data file and the pieces known to be in it."""

    digest: str
    size: int
    piece_size: int
    data: Path
    meta: Path
    pieces: dict[int, str] = field(default_factory=dict)  # piece -> sha256 hex
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def count(self) -> int:
        return piece_count(self.size, self.piece_size)

    def has(self, index: int) -> bool:
        return index in self.pieces

    def missing(self) -> list[int]:
        return [i for i in range(self.count) if i not in self.pieces]

    def write_piece(self, index: int, data: bytes | bytearray, sha256: str) -> None:
        start, end = piece_range(index, self.size, self.piece_size)
        if len(data) != end - start:
            raise ValueError(f"piece {index} has {len(data)} bytes, expected {end - start}")
        fd = os.open(self.data, os.O_WRONLY)
        try:
            os.pwrite(fd, data, start)
        finally:
            os.close(fd)
        with self._lock:
            self.pieces[index] = sha256
            _append(self.meta, f'[{index}, "{sha256}"]\n')

    def read_piece(self, index: int) -> bytes:
        start, end = piece_range(index, self.size, self.piece_size)
        with self.data.open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    def _save(self) -> None:
        """Write the journal afresh: the header and the pieces known now."""
        header = {"digest": self.digest, "size": self.size, "piece_size": self.piece_size}
        lines = [json.dumps(header)] + [json.dumps([i, h]) for i, h in sorted(self.pieces.items())]
        tmp = self.meta.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.meta)


class BlobCache:
    """Complete and partial blobs on disk (see the module docstring)."""

    def __init__(
        self, root: Path, *, max_bytes: int, partial_max_age_s: float = PARTIAL_MAX_AGE_S
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("the cache needs a positive size cap")
        self.root = root
        self.max_bytes = max_bytes
        self.blobs = root / "blobs"
        self.partials = root / "partial"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.partials.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, int] = OrderedDict()  # hex -> size, oldest first
        self._pins: dict[str, int] = {}
        self._partial: dict[str, int] = {}  # hex -> size of partial blobs opened by this process
        self.evicted = 0  # blobs evicted since start
        found = []
        for path in self.blobs.iterdir():
            if len(path.name) == 64 and set(path.name) <= _HEX:
                st = path.stat()
                found.append((st.st_mtime, path.name, st.st_size))
            else:  # a temporary file of an interrupted move
                path.unlink(missing_ok=True)
        for _, name, size in sorted(found):
            self._lru[name] = size
        stale = time.time() - partial_max_age_s
        for path in self.partials.iterdir():
            with contextlib.suppress(OSError):
                if path.suffix == ".tmp" or path.stat().st_mtime < stale:
                    path.unlink()

    # ---------------------------------------------------------------- complete blobs

    def path(self, digest: str) -> Path | None:
        """The complete blob's file, marked as just used; None when it is not complete here."""
        hexpart = digest_hex(digest)
        with self._lock:
            if hexpart not in self._lru:
                return None
            self._lru.move_to_end(hexpart)
        path = self.blobs / hexpart
        with contextlib.suppress(OSError):
            os.utime(path)
        return path

    def size(self, digest: str) -> int | None:
        with self._lock:
            return self._lru.get(digest_hex(digest))

    @property
    def used_bytes(self) -> int:
        """Complete blobs and the partial blobs being written, at their full size."""
        with self._lock:
            return sum(self._lru.values()) + sum(self._partial.values())

    def held(self, limit: int = 256) -> dict[str, list[int]]:
        """The ``limit`` most recently used complete blobs with all their pieces, for the
        coordinator at registration (the API takes at most 256 blobs per call)."""
        with self._lock:
            recent = list(self._lru.items())[-limit:]
        return {
            f"sha256:{h}": list(range(piece_count(size, piece_size(size)))) for h, size in recent
        }

    @contextlib.contextmanager
    def pinned(self, digest: str) -> Iterator[None]:
        """Keep ``digest`` from eviction while the block runs (a client or peer is reading it)."""
        hexpart = digest_hex(digest)
        with self._lock:
            self._pins[hexpart] = self._pins.get(hexpart, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._pins[hexpart] -= 1
                if not self._pins[hexpart]:
                    del self._pins[hexpart]

    def add_complete(self, digest: str, source: Path) -> Path:
        """Move a verified file into the cache (the caller checked its digest), then evict."""
        hexpart = digest_hex(digest)
        target = self.blobs / hexpart
        os.replace(source, target)
        with self._lock:
            self._lru[hexpart] = target.stat().st_size
            self._lru.move_to_end(hexpart)
        self.evict()
        return target

    def evict(self) -> list[str]:
        """Evict least recently used, unpinned complete blobs while over the cap."""
        gone = []
        with self._lock:
            total = sum(self._lru.values()) + sum(self._partial.values())
            for hexpart in list(self._lru):
                if total <= self.max_bytes:
                    break
                if hexpart in self._pins:
                    continue
                total -= self._lru.pop(hexpart)
                (self.blobs / hexpart).unlink(missing_ok=True)
                gone.append(f"sha256:{hexpart}")
            self.evicted += len(gone)
        for digest in gone:
            log.info("p2p cache: evicted %s (over the %d-byte cap)", digest, self.max_bytes)
        return gone

    # ---------------------------------------------------------------- partial blobs

    def partial(self, digest: str, *, size: int, piece_size: int) -> Partial:
        """The partial blob for ``digest``: resumed from disk (every listed piece re-verified)
        when one of the same geometry is there, else a new empty one."""
        hexpart = digest_hex(digest)
        data = self.partials / hexpart
        meta = self.partials / f"{hexpart}.jsonl"
        part = Partial(digest, size, piece_size, data, meta)
        known = _read_journal(meta)
        if (
            data.exists()
            and known is not None
            and known[0].get("size") == size
            and known[0].get("piece_size") == piece_size
        ):
            listed = known[1]
            for index, sha in listed.items():
                if (
                    0 <= index < part.count
                    and hashlib.sha256(part.read_piece(index)).hexdigest() == sha
                ):
                    part.pieces[index] = sha
            if len(part.pieces) < len(listed):
                log.warning(
                    "p2p cache: %s resumed with %d of %d listed pieces (the rest did not verify)",
                    digest,
                    len(part.pieces),
                    len(listed),
                )
        else:
            with data.open("wb") as f:
                f.truncate(size)
        part._save()
        with self._lock:
            self._partial[hexpart] = size
        self.evict()
        return part

    def finish(self, part: Partial) -> Path | None:
        """Hash the whole partial file: when it matches the digest, move it into the cache and
        return the path; otherwise discard it and return None."""
        h = hashlib.sha256()
        with part.data.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        ok = f"sha256:{h.hexdigest()}" == part.digest
        part.meta.unlink(missing_ok=True)
        with self._lock:
            self._partial.pop(digest_hex(part.digest), None)
        if not ok:
            part.data.unlink(missing_ok=True)
            return None
        return self.add_complete(part.digest, part.data)

    def discard(self, part: Partial) -> None:
        with self._lock:
            self._partial.pop(digest_hex(part.digest), None)
        part.meta.unlink(missing_ok=True)
        part.data.unlink(missing_ok=True)


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _read_journal(path: Path) -> tuple[Mapping[str, object], dict[int, str]] | None:
    """A journal's header and its pieces (index -> SHA-256 hex); None without a valid header.
    Lines that do not parse (a torn last line after a crash) are skipped."""
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0]) if lines else None
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    pieces: dict[int, str] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], int)
            and isinstance(entry[1], str)
        ):
            pieces[entry[0]] = entry[1]
    return header, pieces
