"""The embedded time-series store: the default ``MetricStore``, in memory, kept across restarts.

What flows in: ``Sample`` batches from the collector (every 15 s, one sample per series of every
cluster). What flows out: the last point of each matching series (``latest``, what alert rules
read) and series sampled on a step (``query_range``, what the console draws), with Prometheus'
semantics so that a real Prometheus (``gaia.monitor.metrics.prometheus``) answers the same
questions.

**Layout.** A series is one metric name plus its label set (labels with an empty value are
dropped, as Prometheus does, so ``{"k": ""}`` and ``{}`` name the same series). Its points live
in *chunks*: a pair of ``array('d')`` (times, values) of at most ``CHUNK_POINTS`` points, so a
point costs 16 bytes and no Python object. Only the last chunk of a series grows; a full chunk is
never changed again, which lets retention drop whole chunks (a list pop, no copying) and lets the
snapshot writer read sealed chunks from another thread without copying them.

**Order.** Points are appended in time order. Like Prometheus, a point that is not newer than its
series' last point is dropped (and counted in ``stats.out_of_order``); the samples of one
``write`` call may come in any order, they are sorted by time first.

**Index.** Per metric, series by label set and an inverted index ``label -> value -> series``:
``latest(m, {"app": "web", "cluster": "c1"})`` intersects two sets (smallest first) and never
scans the other series of ``m``. A matcher with an empty value matches series without the label.
Query results come in no particular order (as from Prometheus).

**Bounds.** Retention (``retention_seconds``, from the clock's now) is applied by ``trim()``, run
by the snapshot loop and at most every ``TRIM_EVERY_SECONDS`` by ``write``: it drops the chunks
whose newest point is too old, so a point is kept at least ``retention_seconds`` and at most one
chunk longer; a series left without points leaves the index. ``max_series`` bounds the number of
series: samples of new series beyond it are refused, counted (``stats.refused_samples``) and
logged at most once a minute.

**Persistence.** ``snapshot()`` writes every series to ``<directory>/metrics.snapshot`` (written
to a temporary file in a worker thread, fsynced, then renamed over the old one, so a crash leaves
the previous snapshot); ``EmbeddedStore.open`` loads it. ``MetricSnapshotLoop`` writes one every
``GAIA_METRICS_SNAPSHOT_INTERVAL_SECONDS`` (a crash loses at most that much), ``close()`` one at
shutdown. Each snapshot is complete (not incremental): about 3.5 s of a worker thread and 1.8 bytes
a point for 10 million regular points (``bench/tsdb.py``). A corrupt or truncated snapshot is moved
aside (``metrics.snapshot.corrupt-<time>``) with an error in the log, keeping the series read
before the damage; it never stops the platform. File format, little-endian::

    header  b"GAIATSDB" | u16 version (1) | u16 flags (0) | f64 written at (Unix s)
    block*  u32 length | u32 crc32 of the compressed bytes | zlib(payload)
    end     u32 0 | u32 number of blocks
    payload u32 len + metric (UTF-8) | u32 number of labels | (u32 len + name, u32 len + value)*
            | u32 n | times (n f64, byte-shuffled) | values (n f64, byte-shuffled)

*Byte-shuffled*: the 8 bytes of each float stored as 8 planes (all first bytes, then all second
bytes...), so the slowly changing sign/exponent bytes of times and gauges form long runs that
zlib compresses well; shuffling is done with slice operations at C speed.

The store is used from one event loop: methods are ``async`` to fit the ``MetricStore`` seam, but
do their work without awaiting, except ``snapshot`` (compression and I/O in a thread).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import operator
import os
import struct
import sys
import time
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gaia.clock import Clock, RealClock
from gaia.domain.errors import InvalidRequest
from gaia.loop import LoopService
from gaia.monitor.metrics.series import Matchers, Sample, Series

log = logging.getLogger(__name__)

CHUNK_POINTS = 512  # ~2 h of points at the collector's 15 s
TRIM_EVERY_SECONDS = 600.0
REFUSAL_LOG_EVERY_SECONDS = 60.0
# Prometheus refuses range queries of more points per series than this; so do we, so both
# stores answer the same questions the same way.
MAX_RANGE_POINTS = 11_000
RANGE_LOOKBACK = 300.0
SNAPSHOT_NAME = "metrics.snapshot"

_MAGIC = b"GAIATSDB"
_VERSION = 1
_HEADER = struct.Struct("<8sHHd")
_BLOCK = struct.Struct("<II")
_U32 = struct.Struct("<I")
_ZLIB_LEVEL = 1  # on byte-shuffled floats, higher levels cost much more time for little gain

LabelKey = tuple[tuple[str, str], ...]


class SnapshotCorrupt(Exception):
    pass


@dataclass
class StoreStats:
    """Counters of what the store refused or dropped, for the platform's own metrics."""

    refused_samples: int = 0  # new series beyond max_series
    out_of_order: int = 0  # not newer than the series' last point
    too_old: int = 0  # older than retention at write time
    trimmed_points: int = 0
    snapshots_written: int = 0
    last_snapshot_seconds: float = 0.0
    last_snapshot_bytes: int = 0


class _Series:
    """One series: its label set and its chunks. ``last_t``/``last_v`` cache the newest point,
    which is what nearly every ``latest`` asks for."""

    __slots__ = ("key", "last_t", "last_v", "times", "values")

    def __init__(self, key: LabelKey) -> None:
        self.key = key
        self.times: list[array[float]] = [array("d")]
        self.values: list[array[float]] = [array("d")]
        self.last_t = float("-inf")
        self.last_v = float("nan")

    def point_at(self, at: float) -> tuple[float, float] | None:
        """The last point at or before ``at``."""
        if self.last_t <= at:
            return (self.last_t, self.last_v) if self.times[0] else None
        for times, values in zip(reversed(self.times), reversed(self.values), strict=True):
            if times and times[0] <= at:
                i = bisect.bisect_right(times, at) - 1
                return times[i], values[i]
        return None

    def window(self, lo: float, hi: float) -> tuple[array[float], array[float]]:
        """The points with ``lo <= t <= hi``, copied into one pair of arrays."""
        times, values = array("d"), array("d")
        for ct, cv in zip(self.times, self.values, strict=True):
            if not ct or ct[-1] < lo:
                continue
            if ct[0] > hi:
                break
            i = bisect.bisect_left(ct, lo) if ct[0] < lo else 0
            j = bisect.bisect_right(ct, hi) if ct[-1] > hi else len(ct)
            times.extend(ct[i:j])
            values.extend(cv[i:j])
        return times, values


class _Metric:
    """The series of one metric and their inverted index."""

    __slots__ = ("by_key", "postings")

    def __init__(self) -> None:
        self.by_key: dict[LabelKey, _Series] = {}
        self.postings: dict[str, dict[str, set[_Series]]] = {}

    def add(self, series: _Series) -> None:
        self.by_key[series.key] = series
        for name, value in series.key:
            self.postings.setdefault(name, {}).setdefault(value, set()).add(series)

    def remove(self, series: _Series) -> None:
        del self.by_key[series.key]
        for name, value in series.key:
            values = self.postings[name]
            members = values[value]
            members.discard(series)
            if not members:
                del values[value]
                if not values:
                    del self.postings[name]

    def select(self, matchers: Matchers | None) -> Iterable[_Series]:
        if not matchers:
            return self.by_key.values()
        required: list[set[_Series]] = []
        absent: list[str] = []
        for name, value in matchers.items():
            if value == "":
                absent.append(name)
                continue
            members = self.postings.get(name, {}).get(value)
            if not members:
                return ()
            required.append(members)
        if required:
            required.sort(key=len)
            found: Iterable[_Series] = (
                required[0].intersection(*required[1:]) if len(required) > 1 else required[0]
            )
        else:
            found = self.by_key.values()
        if absent:
            found = [s for s in found if not any(name in dict(s.key) for name in absent)]
        return found


class EmbeddedStore:
    """The default ``MetricStore``. ``EmbeddedStore.open(directory)`` for one kept on disk."""

    def __init__(
        self,
        *,
        directory: Path | None = None,
        retention_seconds: float = 7 * 86400,
        max_series: int = 1_000_000,
        clock: Clock | None = None,
    ) -> None:
        self.directory = directory
        self.retention_seconds = retention_seconds
        self.max_series = max_series
        self.clock: Clock = clock or RealClock()
        self.stats = StoreStats()
        self._metrics: dict[str, _Metric] = {}
        self._series_count = 0
        self._point_count = 0
        self._last_trim = time.monotonic()
        self._last_refusal_log = float("-inf")
        self._writer: asyncio.Future[int] | None = None

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        retention_seconds: float = 7 * 86400,
        max_series: int = 1_000_000,
        clock: Clock | None = None,
    ) -> EmbeddedStore:
        """A store kept in ``directory``, loaded from its snapshot when there is one."""
        store = cls(
            directory=directory,
            retention_seconds=retention_seconds,
            max_series=max_series,
            clock=clock,
        )
        directory.mkdir(parents=True, exist_ok=True)
        store._load(directory / SNAPSHOT_NAME)
        return store

    # ------------------------------------------------------------------ figures

    def series_count(self) -> int:
        return self._series_count

    def point_count(self) -> int:
        return self._point_count

    def metric_names(self) -> list[str]:
        return sorted(self._metrics)

    async def label_values(self, metric: str, label: str) -> list[str]:
        """The values ``label`` takes in the series of ``metric`` (the console's filters)."""
        m = self._metrics.get(metric)
        return sorted(m.postings.get(label, {})) if m else []

    # ------------------------------------------------------------------ writing

    async def write(self, samples: Sequence[Sample]) -> None:
        self.write_now(samples)

    def write_now(self, samples: Sequence[Sample]) -> None:
        """``write`` without the coroutine (the work is the same: nothing in it awaits)."""
        cutoff = self._now() - self.retention_seconds
        if time.monotonic() - self._last_trim > TRIM_EVERY_SECONDS:
            self.trim()
        ordered = sorted(samples, key=_sample_time)  # linear when already in order
        metrics = self._metrics
        m: _Metric | None = None
        metric = None
        written = 0
        for sample in ordered:
            at = sample.at
            if at < cutoff:
                self.stats.too_old += 1
                continue
            if sample.metric is not metric:  # a batch is mostly runs of one metric
                metric = sample.metric
                m = metrics.get(metric)
                if m is None:
                    m = metrics[metric] = _Metric()
            assert m is not None
            labels = sample.labels
            key = tuple(sorted(labels.items()))
            if "" in labels.values():
                key = tuple(kv for kv in key if kv[1])
            series = m.by_key.get(key)
            if series is None:
                series = self._new_series(m, metric, key)
                if series is None:
                    if not m.by_key:
                        del metrics[metric]
                        metric = None
                    continue
            if at <= series.last_t:
                self.stats.out_of_order += 1
                continue
            # Appending is inlined: this loop runs for every sample the collector reads.
            at = float(at)
            value = float(sample.value)
            times = series.times[-1]
            if len(times) < CHUNK_POINTS:
                times.append(at)
                series.values[-1].append(value)
            else:
                series.times.append(array("d", (at,)))
                series.values.append(array("d", (value,)))
            series.last_t = at
            series.last_v = value
            written += 1
        self._point_count += written

    def _new_series(self, m: _Metric, metric: str, key: LabelKey) -> _Series | None:
        if self._series_count >= self.max_series:
            self.stats.refused_samples += 1
            now = time.monotonic()
            if now - self._last_refusal_log >= REFUSAL_LOG_EVERY_SECONDS:
                self._last_refusal_log = now
                log.warning(
                    "metric store full: %d series (max_series); samples of new series such as "
                    "%s%s are refused (%d so far). Raise GAIA_METRICS_MAX_SERIES or reduce the "
                    "labels' cardinality",
                    self._series_count,
                    metric,
                    dict(key),
                    self.stats.refused_samples,
                )
            return None
        # Label names and values repeat across series: one string object each.
        series = _Series(tuple((sys.intern(k), sys.intern(v)) for k, v in key))
        m.add(series)
        self._series_count += 1
        return series

    def trim(self) -> int:
        """Apply retention: drop expired chunks and empty series. Returns the points dropped."""
        self._last_trim = time.monotonic()
        cutoff = self._now() - self.retention_seconds
        dropped = 0
        for name, m in list(self._metrics.items()):
            empty: list[_Series] = []
            for series in m.by_key.values():
                times = series.times
                if times[0] and times[0][-1] >= cutoff:
                    continue
                while times and (not times[0] or times[0][-1] < cutoff):
                    dropped += len(times[0])
                    del times[0]
                    del series.values[0]
                if not times:
                    empty.append(series)
            for series in empty:
                m.remove(series)
                self._series_count -= 1
            if not m.by_key:
                del self._metrics[name]
        self._point_count -= dropped
        self.stats.trimmed_points += dropped
        return dropped

    # ------------------------------------------------------------------ reading

    async def latest(
        self, metric: str, matchers: Matchers | None = None, *, at: float, lookback: float = 300.0
    ) -> list[Series]:
        m = self._metrics.get(metric)
        if m is None:
            return []
        oldest = at - lookback
        out = []
        for series in m.select(matchers):
            if series.last_t <= at:  # the common case: the newest point, no search
                if series.last_t >= oldest:
                    out.append(Series(metric, dict(series.key), [(series.last_t, series.last_v)]))
                continue
            point = series.point_at(at)
            if point is not None and point[0] >= oldest:
                out.append(Series(metric, dict(series.key), [point]))
        return out

    async def query_range(
        self,
        metric: str,
        matchers: Matchers | None = None,
        *,
        start: float,
        end: float,
        step: float,
    ) -> list[Series]:
        steps = range_steps(start=start, end=end, step=step)
        m = self._metrics.get(metric)
        if m is None or not steps:
            return []
        out = []
        for series in m.select(matchers):
            times, values = series.window(steps[0] - RANGE_LOOKBACK, steps[-1])
            if not times:
                continue
            points = []
            j = 0
            n = len(times)
            for t in steps:
                # j: the number of points at or before t; t only grows, so j only grows.
                j = bisect.bisect_right(times, t, j, n)
                if j and times[j - 1] >= t - RANGE_LOOKBACK:
                    points.append((t, values[j - 1]))
            if points:
                out.append(Series(metric, dict(series.key), points))
        return out

    # ------------------------------------------------------------------ persistence

    async def snapshot(self) -> int:
        """Write every series to the snapshot file; returns its size (0 without a directory).

        The series are gathered here, in batches that let the event loop breathe; compression
        and I/O run in a thread. A cancelled caller does not stop a write in progress: the next
        snapshot waits for it, so an older snapshot never replaces a newer one.
        """
        if self.directory is None:
            return 0
        await self._wait_for_writer()
        started = time.perf_counter()
        blocks: list[tuple[str, LabelKey, list[array[float]], list[array[float]]]] = []
        for name, m in list(self._metrics.items()):
            for series in list(m.by_key.values()):
                # Sealed chunks never change; the open one is copied, it grows meanwhile.
                times = [*series.times[:-1], series.times[-1][:]]
                values = [*series.values[:-1], series.values[-1][:]]
                blocks.append((name, series.key, times, values))
                if len(blocks) % 5000 == 0:
                    await asyncio.sleep(0)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / SNAPSHOT_NAME
        written_at = self._now()
        writer = asyncio.ensure_future(
            asyncio.to_thread(write_snapshot, path, blocks, written_at=written_at)
        )
        self._writer = writer
        size = await asyncio.shield(writer)
        self.stats.snapshots_written += 1
        self.stats.last_snapshot_bytes = size
        self.stats.last_snapshot_seconds = time.perf_counter() - started
        return size

    async def _wait_for_writer(self) -> None:
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(writer)
            if self._writer is writer:
                self._writer = None

    async def close(self) -> None:
        """Write a last snapshot. The store stays usable (a test may start the app again)."""
        if self.directory is not None:
            try:
                await self.snapshot()
            except Exception:
                log.exception("could not write the metric snapshot on close")
        await self._wait_for_writer()

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        started = time.perf_counter()
        cutoff = self._now() - self.retention_seconds
        loaded = 0
        try:
            for metric, key, times, values in read_snapshot(path):
                loaded += 1
                self._restore(metric, key, times, values, cutoff=cutoff)
        except (SnapshotCorrupt, OSError) as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error(
                "the metric snapshot %s is damaged (%s); kept the %d series read before the "
                "damage and moved the file to %s",
                path,
                exc,
                loaded,
                aside,
            )
            with contextlib.suppress(OSError):
                path.replace(aside)
            return
        log.info(
            "metric store: loaded %d series, %d points from %s in %.2fs",
            self._series_count,
            self._point_count,
            path,
            time.perf_counter() - started,
        )

    def _restore(
        self,
        metric: str,
        key: LabelKey,
        times: array[float],
        values: array[float],
        *,
        cutoff: float,
    ) -> None:
        if times and times[0] < cutoff:
            i = bisect.bisect_left(times, cutoff)
            times, values = times[i:], values[i:]
        if not times:
            return
        m = self._metrics.get(metric)
        if m is None:
            m = self._metrics[metric] = _Metric()
        if key in m.by_key:  # a damaged file could repeat one; keep the first
            return
        series = self._new_series(m, metric, key)
        if series is None:
            return
        series.times = [times[i : i + CHUNK_POINTS] for i in range(0, len(times), CHUNK_POINTS)]
        series.values = [values[i : i + CHUNK_POINTS] for i in range(0, len(values), CHUNK_POINTS)]
        series.last_t = times[-1]
        series.last_v = values[-1]
        self._point_count += len(times)

    def _now(self) -> float:
        return self.clock.now().timestamp()


_sample_time = operator.attrgetter("at")


def range_steps(*, start: float, end: float, step: float) -> list[float]:
    """The evaluation times of a range query: ``start``, ``start + step``... up to ``end``.

    Computed in whole milliseconds, as Prometheus does, so both stores use the same instants.
    """
    if step <= 0:
        raise InvalidRequest("step must be positive")
    if end < start:
        raise InvalidRequest("end must not be before start")
    start_ms, end_ms, step_ms = round(start * 1000), round(end * 1000), round(step * 1000)
    if step_ms <= 0:
        raise InvalidRequest("step must be at least 1 ms")
    count = (end_ms - start_ms) // step_ms + 1
    if count > MAX_RANGE_POINTS:
        raise InvalidRequest(
            f"the range asks for {count} points per series, more than {MAX_RANGE_POINTS}; "
            "use a larger step or a shorter range"
        )
    return [(start_ms + i * step_ms) / 1000 for i in range(count)]


# ---------------------------------------------------------------------- snapshot file


def _shuffle(data: bytes) -> bytes:
    return b"".join(data[i::8] for i in range(8))


def _unshuffle(data: bytes) -> bytes:
    n = len(data) // 8
    out = bytearray(len(data))
    for i in range(8):
        out[i::8] = data[i * n : (i + 1) * n]
    return bytes(out)


def _floats_bytes(chunks: list[array[float]]) -> bytes:
    joined = array("d")
    for chunk in chunks:
        joined.extend(chunk)
    if sys.byteorder == "big":
        joined.byteswap()
    return joined.tobytes()


def _str(value: str) -> bytes:
    raw = value.encode()
    return _U32.pack(len(raw)) + raw


def encode_series(
    metric: str, key: LabelKey, times: list[array[float]], values: list[array[float]]
) -> bytes:
    parts = [_str(metric), _U32.pack(len(key))]
    for name, value in key:
        parts.append(_str(name))
        parts.append(_str(value))
    t, v = _floats_bytes(times), _floats_bytes(values)
    parts += [_U32.pack(len(t) // 8), _shuffle(t), _shuffle(v)]
    return b"".join(parts)


def decode_series(payload: bytes) -> tuple[str, LabelKey, array[float], array[float]]:
    pos = 0

    def take_str() -> str:
        nonlocal pos
        (n,) = _U32.unpack_from(payload, pos)
        raw = payload[pos + 4 : pos + 4 + n]
        if len(raw) != n:
            raise SnapshotCorrupt("a series block ends inside a string")
        pos += 4 + n
        return raw.decode()

    try:
        metric = take_str()
        (nlabels,) = _U32.unpack_from(payload, pos)
        pos += 4
        key = tuple((take_str(), take_str()) for _ in range(nlabels))
        (n,) = _U32.unpack_from(payload, pos)
        pos += 4
    except (struct.error, UnicodeDecodeError) as exc:
        raise SnapshotCorrupt(f"a series block is malformed: {exc}") from exc
    if len(payload) - pos != 16 * n:
        raise SnapshotCorrupt(f"a series block of {metric} has the wrong number of points")
    times, values = array("d"), array("d")
    times.frombytes(_unshuffle(payload[pos : pos + 8 * n]))
    values.frombytes(_unshuffle(payload[pos + 8 * n :]))
    if sys.byteorder == "big":
        times.byteswap()
        values.byteswap()
    return metric, key, times, values


def write_snapshot(
    path: Path,
    blocks: Iterable[tuple[str, LabelKey, list[array[float]], list[array[float]]]],
    *,
    written_at: float,
) -> int:
    """Write a snapshot atomically (temporary file, fsync, rename); returns its size."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    count = 0
    with open(tmp, "wb") as f:
        f.write(_HEADER.pack(_MAGIC, _VERSION, 0, written_at))
        for metric, key, times, values in blocks:
            compressed = zlib.compress(encode_series(metric, key, times, values), _ZLIB_LEVEL)
            f.write(_BLOCK.pack(len(compressed), zlib.crc32(compressed)))
            f.write(compressed)
            count += 1
        f.write(_BLOCK.pack(0, count))
        f.flush()
        os.fsync(f.fileno())
        size = f.tell()
    os.replace(tmp, path)
    # The rename itself must reach the disk, or a crash could bring back the old file.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return size


def read_snapshot(path: Path) -> Iterable[tuple[str, LabelKey, array[float], array[float]]]:
    """The series of a snapshot, one by one; ``SnapshotCorrupt`` where the file is damaged."""
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise SnapshotCorrupt("the file is shorter than its header")
        magic, version, _flags, _written_at = _HEADER.unpack(header)
        if magic != _MAGIC:
            raise SnapshotCorrupt("not a Gaia metric snapshot (bad magic)")
        if version != _VERSION:
            raise SnapshotCorrupt(f"snapshot version {version} is not supported")
        count = 0
        while True:
            head = f.read(_BLOCK.size)
            if len(head) != _BLOCK.size:
                raise SnapshotCorrupt("the file is truncated (no end marker)")
            length, check = _BLOCK.unpack(head)
            if length == 0:
                if check != count:
                    raise SnapshotCorrupt(f"the end marker says {check} series, read {count}")
                return
            compressed = f.read(length)
            if len(compressed) != length or zlib.crc32(compressed) != check:
                raise SnapshotCorrupt(f"series block {count + 1} is damaged (checksum)")
            try:
                payload = zlib.decompress(compressed)
            except zlib.error as exc:
                raise SnapshotCorrupt(f"series block {count + 1} does not decompress") from exc
            count += 1
            yield decode_series(payload)


class MetricSnapshotLoop(LoopService):
    """Applies retention and writes the embedded store's snapshot every ``interval`` seconds."""

    name = "metric-snapshot"

    def __init__(self, *, store: EmbeddedStore, interval: float) -> None:
        super().__init__(interval=interval)
        self.store = store

    async def run_once(self) -> None:
        self.store.trim()
        await self.store.snapshot()
