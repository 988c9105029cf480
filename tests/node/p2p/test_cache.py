"""The agent's blob cache (gaia.node.p2p.cache): resumption that trusts only verified pieces,
LRU eviction under the cap that spares pinned blobs, and the whole-digest gate."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from gaia.domain.swarm import piece_range
from gaia.node.p2p.cache import BlobCache, digest_hex

MiB = 1 << 20


def _blob(size: int, seed: int) -> tuple[str, bytes]:
    data = (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]
    return f"sha256:{hashlib.sha256(data).hexdigest()}", data


def _write(cache: BlobCache, digest: str, data: bytes, pieces: list[int]) -> None:
    part = cache.partial(digest, size=len(data), piece_size=MiB)
    for i in pieces:
        start, end = piece_range(i, len(data), MiB)
        chunk = data[start:end]
        part.write_piece(i, chunk, hashlib.sha256(chunk).hexdigest())


def test_a_restarted_agent_resumes_only_the_pieces_that_still_verify(tmp_path: Path) -> None:
    digest, data = _blob(3 * MiB + 5, 1)
    _write(BlobCache(tmp_path, max_bytes=100 * MiB), digest, data, [0, 1, 3])
    # a crash left piece 1's bytes damaged on disk (listed, never flushed)
    with (tmp_path / "partial" / digest_hex(digest)).open("r+b") as f:
        f.seek(MiB + 7)
        f.write(b"\x00\x01")
    again = BlobCache(tmp_path, max_bytes=100 * MiB)
    part = again.partial(digest, size=len(data), piece_size=MiB)
    assert sorted(part.pieces) == [0, 3]
    assert part.missing() == [1, 2]
    for i in part.missing():
        start, end = piece_range(i, len(data), MiB)
        part.write_piece(i, data[start:end], hashlib.sha256(data[start:end]).hexdigest())
    path = again.finish(part)
    assert path is not None and path.read_bytes() == data
    assert not list((tmp_path / "partial").iterdir())


def test_a_blob_that_does_not_hash_to_its_digest_never_enters_the_cache(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=100 * MiB)
    digest, data = _blob(MiB, 2)
    wrong = data[:-1] + bytes([data[-1] ^ 1])
    part = cache.partial(digest, size=len(data), piece_size=MiB)
    part.write_piece(0, wrong, hashlib.sha256(wrong).hexdigest())
    assert cache.finish(part) is None
    assert cache.path(digest) is None
    with pytest.raises(ValueError, match="bytes, expected"):
        part.write_piece(0, wrong[:-1], "x")


def test_least_recently_used_blobs_go_first_and_pinned_ones_stay(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=3 * MiB)
    blobs = [_blob(MiB, seed) for seed in range(10, 14)]
    for digest, data in blobs[:3]:
        _write(cache, digest, data, [0])
        assert cache.finish(cache.partial(digest, size=len(data), piece_size=MiB))
    assert cache.path(blobs[0][0]) is not None  # used again: now the newest
    with cache.pinned(blobs[1][0]):
        digest, data = blobs[3]
        _write(cache, digest, data, [0])
        cache.finish(cache.partial(digest, size=len(data), piece_size=MiB))
        # over the cap by one: the oldest unpinned blob goes (blobs[2]; blobs[1] is pinned)
        assert cache.path(blobs[2][0]) is None
        assert cache.path(blobs[1][0]) is not None
    assert cache.used_bytes == 3 * MiB and cache.evicted == 1
    # the order survives a restart (file times)
    os.utime(tmp_path / "blobs" / digest_hex(blobs[1][0]), (1, 1))
    again = BlobCache(tmp_path, max_bytes=2 * MiB)
    again.evict()
    assert again.path(blobs[1][0]) is None
    assert sorted(again.held()) == sorted([blobs[0][0], blobs[3][0]])
    assert again.held()[blobs[0][0]] == [0]


def test_only_sha256_digests_name_blobs(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=MiB)
    for bad in ("sha512:" + "a" * 64, "sha256:" + "A" * 64, "sha256:../../etc", "x"):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            cache.path(bad)


def test_a_blob_being_fetched_counts_against_the_cap_from_the_start(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=3 * MiB)
    old = [_blob(MiB, seed) for seed in (20, 21)]
    for digest, data in old:
        _write(cache, digest, data, [0])
        assert cache.finish(cache.partial(digest, size=len(data), piece_size=MiB))
    assert cache.used_bytes == 2 * MiB
    digest, data = _blob(2 * MiB, 22)
    part = cache.partial(digest, size=len(data), piece_size=MiB)  # nothing written yet
    # its two MiB are reserved at once: the oldest complete blob makes room
    assert cache.path(old[0][0]) is None and cache.path(old[1][0]) is not None
    assert cache.used_bytes == 3 * MiB
    for i in (0, 1):
        start, end = piece_range(i, len(data), MiB)
        part.write_piece(i, data[start:end], hashlib.sha256(data[start:end]).hexdigest())
    assert cache.finish(part) is not None
    assert cache.used_bytes == 3 * MiB


def test_partial_blobs_nobody_resumed_for_a_day_are_removed_at_start(tmp_path: Path) -> None:
    fresh, stale = _blob(MiB, 30), _blob(MiB, 31)
    cache = BlobCache(tmp_path, max_bytes=100 * MiB)
    for digest, data in (fresh, stale):
        _write(cache, digest, data, [0])
    for path in (tmp_path / "partial").glob(f"{digest_hex(stale[0])}*"):
        os.utime(path, (1, 1))
    BlobCache(tmp_path, max_bytes=100 * MiB)
    left = {p.name for p in (tmp_path / "partial").iterdir()}
    assert left == {digest_hex(fresh[0]), f"{digest_hex(fresh[0])}.jsonl"}
