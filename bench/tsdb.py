"""The embedded metric store (``gaia.monitor.metrics.tsdb``) against a naive store, in one process.

Run ``.venv/bin/python bench/tsdb.py`` from the repository root (``--quick`` for a smoke run,
``--help`` for the sizes). One data set: ``--series`` series of one metric
(``gaia_instance_cpu_cores{cluster, app, instance}``, ``--apps`` apps, so ``series / apps``
series per app: 2,000 by default), each with ``--points`` points 15 s apart, written as the
collector writes them (one batch per instant holding a sample of every series).

**Baseline** (the obvious first version): a dict from (metric, sorted labels) to a Python list of
``(time, value)`` tuples; a query scans every series of the metric, checks the labels, and finds
the point by bisecting the list (``latest``) or for each step (``query_range``). Both stores are
filled with the same samples and answer the same queries; the answers are compared.

**Figures**: write throughput (samples/s); ``latest`` of one app (2,000 matching series out of
all) and of the whole metric (what the alert evaluator asks once per metric and pass), at the
newest instant and one hour back; ``query_range`` of one app over the last hour at a 60 s step;
resident memory added by each store (RSS growth, so only indicative); snapshot write and load
time and size (the embedded store only). Times are the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gaia.monitor.metrics.series import Sample, Series
from gaia.monitor.metrics.tsdb import EmbeddedStore, range_steps

T = TypeVar("T")
METRIC = "gaia_instance_cpu_cores"
INTERVAL = 15.0
T0 = 1_780_000_000.0


class NaiveStore:
    """A dict of lists of tuples, scanned on every query."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}

    def write(self, samples: list[Sample]) -> None:
        for s in samples:
            key = (s.metric, tuple(sorted(s.labels.items())))
            self.series.setdefault(key, []).append((s.at, s.value))

    def _select(
        self, metric: str, matchers: Mapping[str, str] | None
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        out = []
        for (m, key), points in self.series.items():
            if m != metric:
                continue
            labels = dict(key)
            if all(labels.get(k) == v for k, v in (matchers or {}).items()):
                out.append((labels, points))
        return out

    def latest(
        self, metric: str, matchers: Mapping[str, str] | None, *, at: float, lookback: float = 300
    ) -> list[Series]:
        out = []
        for labels, points in self._select(metric, matchers):
            i = bisect.bisect_right(points, (at, float("inf"))) - 1
            if i >= 0 and points[i][0] >= at - lookback:
                out.append(Series(metric, labels, [points[i]]))
        return out

    def query_range(
        self,
        metric: str,
        matchers: Mapping[str, str] | None,
        *,
        start: float,
        end: float,
        step: float,
    ) -> list[Series]:
        steps = range_steps(start=start, end=end, step=step)
        out = []
        for labels, points in self._select(metric, matchers):
            got = []
            for t in steps:
                i = bisect.bisect_right(points, (t, float("inf"))) - 1
                if i >= 0 and points[i][0] >= t - 300:
                    got.append((t, points[i][1]))
            if got:
                out.append(Series(metric, labels, got))
        return out


def sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never awaits, without an event loop's overhead per call."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise RuntimeError("the coroutine awaited")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def batches(options: argparse.Namespace) -> list[list[Sample]]:
    labels = [
        {"cluster": "c1", "app": f"app-{i % options.apps}", "instance": f"inst-{i}"}
        for i in range(options.series)
    ]
    return [
        [
            Sample(METRIC, lab, float((i * 7 + k) % 100) / 10, T0 + k * INTERVAL)
            for i, lab in enumerate(labels)
        ]
        for k in range(options.points)
    ]


def canonical(
    series: list[Series],
) -> list[tuple[tuple[tuple[str, str], ...], list[tuple[float, float]]]]:
    return sorted((tuple(sorted(s.labels.items())), [tuple(p) for p in s.points]) for s in series)  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--points", type=int, default=480, help="per series, 15 s apart")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 series x 60 points")
    options = parser.parse_args(argv)
    if options.quick:
        options.series, options.points, options.repeat = 2_000, 60, 3
    data = batches(options)
    total = options.series * options.points
    end = T0 + (options.points - 1) * INTERVAL
    per_app = options.series // options.apps
    print(
        f"data: {options.series:,} series x {options.points:,} points = {total:,} samples; "
        f"{per_app:,} series per app; Python {sys.version.split()[0]}"
    )

    rows: list[tuple[str, str, str, str]] = []

    # -- write
    before = rss_mib()
    embedded = EmbeddedStore(retention_seconds=1e12)
    started = time.perf_counter()
    for batch in data:
        embedded.write_now(batch)
    embedded_write = time.perf_counter() - started
    embedded_mem = rss_mib() - before
    before = rss_mib()
    naive = NaiveStore()
    started = time.perf_counter()
    for batch in data:
        naive.write(batch)
    naive_write = time.perf_counter() - started
    naive_mem = rss_mib() - before
    del data
    rows.append(
        (
            "write (samples/s)",
            f"{total / embedded_write:,.0f}",
            f"{total / naive_write:,.0f}",
            f"{naive_write / embedded_write:.1f}x",
        )
    )
    rows.append(
        (
            "memory added (MiB, RSS)",
            f"{embedded_mem:,.0f}",
            f"{naive_mem:,.0f}",
            f"{naive_mem / max(embedded_mem, 1):.1f}x",
        )
    )

    def compare(name: str, fast: Callable[[], Any], slow: Callable[[], Any]) -> None:
        t_fast, r_fast = timed(fast, options.repeat)
        t_slow, r_slow = timed(slow, options.repeat)
        assert canonical(r_fast) == canonical(r_slow), f"{name}: the stores disagree"
        rows.append(
            (
                f"{name} [{len(r_fast):,} series]",
                f"{t_fast * 1000:,.2f} ms",
                f"{t_slow * 1000:,.2f} ms",
                f"{t_slow / t_fast:.1f}x",
            )
        )

    app = {"app": "app-3"}
    back = (options.points // 2) * INTERVAL
    for label, at in (("now", end + 5), (f"{back / 60:.0f} min back", end - back + 5)):
        compare(
            f"latest one app, {label}",
            lambda at=at: sync(embedded.latest(METRIC, app, at=at)),
            lambda at=at: naive.latest(METRIC, app, at=at),
        )
    compare(
        "latest whole metric, now",
        lambda: sync(embedded.latest(METRIC, None, at=end + 5)),
        lambda: naive.latest(METRIC, None, at=end + 5),
    )
    compare(
        "query_range one app, 1 h @ 60 s",
        lambda: sync(embedded.query_range(METRIC, app, start=end - 3600, end=end, step=60)),
        lambda: naive.query_range(METRIC, app, start=end - 3600, end=end, step=60),
    )

    with tempfile.TemporaryDirectory() as tmp:
        embedded.directory = Path(tmp)
        started = time.perf_counter()
        size = asyncio.run(embedded.snapshot())
        snap_write = time.perf_counter() - started
        started = time.perf_counter()
        loaded = EmbeddedStore.open(Path(tmp), retention_seconds=1e12)
        snap_load = time.perf_counter() - started
        assert loaded.point_count() == embedded.point_count() == total
    rows.append(("snapshot write", f"{snap_write:.2f} s", "-", ""))
    rows.append(("snapshot load", f"{snap_load:.2f} s", "-", ""))
    rows.append(
        (
            "snapshot size",
            f"{size / 2**20:,.1f} MiB ({size / total:.2f} B/point)",
            f"raw {16 * total / 2**20:,.1f} MiB",
            "",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'embedded':>26}  {'naive':>18}  {'speed-up':>8}")
    for name, a, b, c in rows:
        print(f"{name:{width}}  {a:>26}  {b:>18}  {c:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
