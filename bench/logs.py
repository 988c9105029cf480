"""The two log stores side by side: the shared PostgreSQL table against the SQLite file.

Run ``.venv/bin/python bench/logs.py`` from the repository root (``--quick`` for a smoke run,
``--help`` for the sizes). A private PostgreSQL server is started (``tests/support/postgres.py``,
Debian's server, ``fsync=off`` as in the tests: the figures are the store's work, not the
disk's) and migrated; the SQLite store writes ``logs.db`` into a temporary folder.

**Baseline**: ``SqliteLogStore``, the store every single-replica Gaia uses, fed the same lines
in the same run. **Gaia's figure**: ``PostgresLogStore``, which the replicas share.

**Data**: ``--lines`` container lines over ``--apps`` apps of ``--instances`` instances each,
written as the collector writes them (batches of ``--batch`` lines from many instances, one
line per instance per second), texts like an HTTP server's with a rare ``ERROR`` line.

**Figures**: ingest rate (lines/s, the whole ``append`` with its bounds); then, after one pass
of the retention loop (which on PostgreSQL refreshes the table's statistics), the median of
``--repeat`` reads of: the first page of one app (200 lines), of one instance, the 10th page of
an app by cursor, an ASCII substring over an app (the rare ``ERROR``), a non-ASCII substring and
an RE2 regular expression (both scans in Python within the scan budget), and a follower's read
of the lines after an id (``lines_after``). Both stores answer every read; the answers are
compared (same texts in the same order).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine

from gaia.monitor.logs.postgres import PostgresLogStore
from gaia.monitor.logs.store import (
    LogEntry,
    LogFilter,
    LogPage,
    LogSelector,
    LogSource,
    LogStore,
    SourceKind,
    SqliteLogStore,
)
from gaia.store import migrate
from gaia.store.database import Database
from tests.support.postgres import PostgresServer, find_bin_dir

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def entries(*, lines: int, apps: int, instances: int) -> list[LogEntry]:
    sources = [
        LogSource(SourceKind.INSTANCE, "sim-1", "bench", f"app{a}", f"app{a}-{i}")
        for a in range(apps)
        for i in range(instances)
    ]
    out = []
    for n in range(lines):
        src = sources[n % len(sources)]
        second = n // len(sources)
        if n % 997 == 0:
            text = f"ERROR upstream timed out after 30s (request {n})"
        elif n % 1009 == 0:
            text = f"Überlauf im Puffer {n}"
        else:
            text = (
                f'10.0.{n % 256}.{n % 199} - - "GET /api/items/{n % 5000} HTTP/1.1" 200 {n % 9000}'
            )
        out.append(LogEntry(src, at=T0 + dt.timedelta(seconds=second), text=text))
    return out


def median_ms(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def texts(page: LogPage) -> list[str]:
    return [line.text for line in page.lines]


def measure(store: LogStore, data: list[LogEntry], *, batch: int, repeat: int) -> dict[str, Any]:
    started = time.perf_counter()
    for i in range(0, len(data), batch):
        store.append(data[i : i + batch])
    ingest = len(data) / (time.perf_counter() - started)
    # one pass of the retention loop, as the monitoring leader runs every few minutes: it deletes
    # nothing here, and on PostgreSQL it refreshes the planner's statistics of the new table
    store.expire(before=T0 - dt.timedelta(days=1))
    app = LogSelector.of_app(cluster="sim-1", namespace="bench", app="app0")
    one = LogSelector.of_app(cluster="sim-1", namespace="bench", app="app0", instance="app0-0")

    def tenth_page() -> LogPage:
        page = store.query(app, limit=200)
        for _ in range(9):
            assert page.next_cursor is not None
            page = store.query(app, limit=200, cursor=page.next_cursor)
        return page

    reads: dict[str, Callable[[], Any]] = {
        "app, first page (200)": lambda: store.query(app, limit=200),
        "instance, first page": lambda: store.query(one, limit=200),
        "app, 10th page by cursor": tenth_page,
        "substring 'error' (ASCII)": lambda: store.query(app, LogFilter(q="error"), limit=200),
        "substring 'überlauf'": lambda: store.query(app, LogFilter(q="überlauf"), limit=200),
        "regex 'timed out after \\d+s'": lambda: store.query(
            app, LogFilter(q=r"timed out after \d+s", regex=True), limit=200
        ),
        "follow: lines after an id": lambda: store.lines_after(
            app, None, after_id=max(0, store.last_id() - 5_000)
        ),
    }
    results: dict[str, Any] = {"ingest lines/s": ingest}
    answers: dict[str, Any] = {}
    for name, read in reads.items():
        results[name] = median_ms(repeat, read)
        answer = read()
        answers[name] = texts(answer) if isinstance(answer, LogPage) else len(answer[0])
    results["_answers"] = answers
    results["lines held"] = store.stats()["lines"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="30,000 lines, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.repeat = 30_000, 3
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed: run scripts/test-setup.sh first")
    data = entries(lines=args.lines, apps=args.apps, instances=args.instances)
    bounds = {"max_lines": 2_000_000, "max_lines_per_source": 100_000}
    pg = PostgresServer(bin_dir)
    pg.start()
    try:
        url = pg.create_database("gaia_bench_logs")
        db = Database(url)
        migrate.upgrade(db.engine)
        db.dispose()
        with tempfile.TemporaryDirectory() as folder:
            sqlite_store = SqliteLogStore(Path(folder) / "logs.db", **bounds)
            sqlite = measure(sqlite_store, data, batch=args.batch, repeat=args.repeat)
            sqlite_store.close()
        pg_store = PostgresLogStore(url, **bounds)
        shared = measure(pg_store, data, batch=args.batch, repeat=args.repeat)
        pg_store.close()
        # what one client/server round trip costs on this machine now: a page takes three
        engine = create_engine(url)
        with engine.connect() as conn:
            round_trip = median_ms(args.repeat * 20, lambda: conn.exec_driver_sql("SELECT 1"))
        engine.dispose()
    finally:
        pg.stop()
    same = sqlite.pop("_answers") == shared.pop("_answers")
    print(
        f"{args.lines:,} lines, {args.apps} apps x {args.instances} instances, batches of "
        f"{args.batch}; median of {args.repeat} reads; PostgreSQL {bin_dir.parent.name}"
    )
    print(f"{'figure':<34} {'SQLite (baseline)':>18} {'PostgreSQL (Gaia HA)':>21}")
    for name in sqlite:
        unit = "" if name in ("ingest lines/s", "lines held") else " ms"
        print(f"{name:<34} {sqlite[name]:>15,.1f}{unit:<3} {shared[name]:>18,.1f}{unit:<3}")
    print(f"same answers from both stores: {same}")
    print(
        f"one PostgreSQL round trip (SELECT 1), median: {round_trip:.2f} ms; load average: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
