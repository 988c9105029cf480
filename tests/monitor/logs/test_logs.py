"""Logs: the bounded stores, the system log handler, the collector over a sim cluster,
the API (pages, tenancy, live fallback, Server-Sent Events) and ``pods/log`` on a real node.

Every store test runs on both stores of the ``LogStore`` contract: the SQLite file
(``SqliteLogStore``) and the shared PostgreSQL table (``PostgresLogStore``, on the session's
real PostgreSQL server, tables emptied per test); ``make_store`` opens the one of the test's
parameter. Store tests write lines with fixed timestamps; the collector and API tests run on the
``platform`` fixture, itself on SQLite and PostgreSQL, so they use whichever store the platform
chose for its database. They drive a sim cluster with the manual clock
(``tests/support/apps_harness.py``); the SSE test runs the app under uvicorn in a thread, as
TestClient buffers a streamed body to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.clock import ManualClock
from gaia.domain.errors import InvalidRequest
from gaia.monitor.logs import store as logs_module
from gaia.monitor.logs.collector import LogCollector
from gaia.monitor.logs.postgres import PostgresLogStore
from gaia.monitor.logs.retention import LogRetention
from gaia.monitor.logs.store import (
    SYSTEM_SOURCE,
    LogEntry,
    LogFilter,
    LogSelector,
    LogSource,
    LogStore,
    SourceKind,
    SqliteLogStore,
    SystemLogHandler,
)
from gaia.platform import Platform, open_log_store
from gaia.providers.kubernetes import KubernetesCluster
from tests.conftest import World, start_real_bed
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.live import serve

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TOKEN = "gaia_" + "x7" * 20


def source(instance: str, *, app: str = "web") -> LogSource:
    return LogSource(SourceKind.INSTANCE, "sim-1", "alpha", app, instance)


def lines(src: LogSource, count: int, *, start: int = 0, text: str = "line {}") -> list[LogEntry]:
    return [
        LogEntry(src, at=T0 + dt.timedelta(seconds=start + i), text=text.format(start + i))
        for i in range(count)
    ]


WEB = LogSelector.of_app(cluster="sim-1", namespace="alpha", app="web")


def one(instance: str) -> LogSelector:
    return LogSelector.of_app(cluster="sim-1", namespace="alpha", app="web", instance=instance)


MakeStore = Callable[..., LogStore]
LOG_TABLES = "log_lines, log_sources, log_groups"


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens a store (``max_lines=...``) of the test's kind; a second call opens the same
    file or tables again (a restart, or a second replica)."""
    made: list[LogStore] = []
    if request.param == "sqlite":

        def make(**bounds: Any) -> LogStore:
            made.append(SqliteLogStore(tmp_path / "logs.db", **bounds))
            return made[-1]

    else:
        url: str = request.getfixturevalue("postgres_template")
        empty_log_tables(url)

        def make(**bounds: Any) -> LogStore:
            made.append(PostgresLogStore(url, **bounds))
            return made[-1]

    yield make
    for opened in made:
        opened.close()


def empty_log_tables(url: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {LOG_TABLES} RESTART IDENTITY")
    engine.dispose()


@pytest.fixture
def store(make_store: MakeStore) -> LogStore:
    return make_store(max_lines=10_000, max_lines_per_source=5_000)


def texts(page: Any) -> list[str]:
    return [line.text for line in page.lines]


# ---------------------------------------------------------------- bounds


def test_the_store_keeps_at_most_max_lines_dropping_the_oldest(make_store: MakeStore) -> None:
    store = make_store(max_lines=100, max_lines_per_source=100)
    for n in range(10):  # ten instances, 30 lines each, written one after the other
        store.append(lines(source(f"web-{n}"), 30, start=n * 30))
    held = store.stats()["lines"]
    assert 100 <= held <= 110  # trimmed back to the bound once 10 % over it
    page = store.query(WEB, limit=500)
    assert len(page.lines) == held
    # what is left is the newest written, in one piece
    assert texts(page) == [f"line {i}" for i in range(299, 299 - held, -1)]
    store.close()
    reopened = make_store(max_lines=100, max_lines_per_source=100)
    assert reopened.stats()["lines"] == held  # counts are read back from the file or table


def test_a_chatty_instance_loses_its_own_oldest_lines_not_its_neighbours(
    make_store: MakeStore,
) -> None:
    store = make_store(max_lines=1_000, max_lines_per_source=100)
    store.append(lines(source("web-0"), 10, text="quiet {}"))
    for batch in range(20):
        store.append(lines(source("web-1"), 100, start=batch * 100, text="chatty {}"))
    assert store.count(source("web-0")) == 10
    assert 100 <= store.count(source("web-1")) <= 110
    chatty = store.query(one("web-1"), limit=500)
    assert chatty.lines[0].text == "chatty 1999"  # its newest stay
    assert len(store.query(one("web-0")).lines) == 10


def test_lines_are_clipped_and_the_default_per_instance_cap_is_five_percent(
    make_store: MakeStore,
) -> None:
    store = make_store(max_lines=100_000)
    assert store.max_lines_per_source == 5_000
    store.append([LogEntry(source("web-0"), at=T0, text="x" * 100_000)])
    (line,) = store.query(one("web-0")).lines
    assert len(line.text) == logs_module.MAX_TEXT_CHARS and line.text.endswith("…")


def test_lines_older_than_the_age_bound_are_deleted_and_emptied_sources_go(
    store: LogStore,
) -> None:
    store.append(lines(source("web-0"), 10, text="old {}"))  # T0 .. T0+9 s
    store.append(lines(source("web-1"), 10, start=100, text="new {}"))  # T0+100 s ..
    assert store.expire(before=T0 + dt.timedelta(seconds=5)) == 5
    assert texts(store.query(one("web-0"))) == [f"old {i}" for i in range(9, 4, -1)]
    assert store.count(source("web-0")) == 5 and store.stats()["lines"] == 15
    assert store.expire(before=T0 + dt.timedelta(seconds=50)) == 5
    assert store.count(source("web-0")) == 0 and not store.has_lines(one("web-0"))
    stats = store.stats()
    assert (stats["lines"], stats["sources"]) == (10, 1)
    assert len(store.query(WEB).lines) == 10  # the newer instance keeps every line
    store.append(lines(source("web-0"), 1, start=200, text="back {}"))  # the source comes back
    assert texts(store.query(one("web-0"))) == ["back 200"]


def test_the_retention_loop_deletes_what_is_older_than_its_age_by_the_clock(
    store: LogStore,
) -> None:
    store.append(lines(source("web-0"), 10))  # T0 .. T0+9 s
    clock = ManualClock(T0 + dt.timedelta(hours=1, seconds=3))
    loop = LogRetention(store=store, clock=clock, max_age=dt.timedelta(hours=1))
    asyncio.run(loop.run_once())
    assert loop.deleted == 3 and store.stats()["lines"] == 7
    asyncio.run(loop.run_once())  # level-triggered: nothing more to do
    assert loop.deleted == 0
    clock.step(3600)
    asyncio.run(loop.run_once())
    assert loop.deleted == 7 and not store.has_lines(WEB)


def test_a_business_reads_only_its_own_lines(store: LogStore) -> None:
    beta = LogSource(SourceKind.INSTANCE, "sim-1", "beta", "web", "web-0")
    store.append([*lines(source("web-0"), 3, text="alpha {}"), *lines(beta, 3, text="beta {}")])
    assert texts(store.query(WEB)) == ["alpha 2", "alpha 1", "alpha 0"]
    found = store.query(WEB, LogFilter(q="a")).lines
    assert found and all(line.source.namespace == "alpha" for line in found)
    beta_web = LogSelector.of_app(cluster="sim-1", namespace="beta", app="web")
    assert texts(store.query(beta_web, LogFilter(q=r"beta [12]", regex=True))) == [
        "beta 2",
        "beta 1",
    ]


# ---------------------------------------------------------------- search, range, pages


def test_search_finds_a_substring_ignoring_case(store: LogStore) -> None:
    store.append(
        [
            LogEntry(source("web-0"), at=T0, text="GET /healthz 200"),
            LogEntry(source("web-0"), at=T0 + dt.timedelta(seconds=1), text="ERROR: disk full"),
            LogEntry(source("web-1"), at=T0 + dt.timedelta(seconds=2), text="error 50% of_it"),
            LogEntry(source("web-1"), at=T0 + dt.timedelta(seconds=3), text="Ärger: ÜBERLAUF"),
        ]
    )
    assert texts(store.query(WEB, LogFilter(q="error"))) == ["error 50% of_it", "ERROR: disk full"]
    assert texts(store.query(WEB, LogFilter(q="50%"))) == ["error 50% of_it"]
    assert texts(store.query(WEB, LogFilter(q="f_i"))) == ["error 50% of_it"]  # no LIKE wildcard
    assert texts(store.query(WEB, LogFilter(q="überlauf"))) == ["Ärger: ÜBERLAUF"]
    assert texts(store.query(one("web-0"), LogFilter(q="error"))) == ["ERROR: disk full"]


def test_search_by_regular_expression_and_bad_ones_are_refused(store: LogStore) -> None:
    store.append(lines(source("web-0"), 20, text="request {} took 12ms"))
    found = store.query(WEB, LogFilter(q=r"request 1\d took", regex=True))
    assert texts(found) == [f"request {i} took 12ms" for i in range(19, 9, -1)]
    with pytest.raises(InvalidRequest, match="not a valid regular expression"):
        LogFilter(q="(unclosed", regex=True).matcher()
    with pytest.raises(InvalidRequest, match="no backreferences"):
        LogFilter(q=r"(a)\1", regex=True).matcher()
    with pytest.raises(InvalidRequest, match="lookaround"):
        LogFilter(q=r"took(?= 12)", regex=True).matcher()
    with pytest.raises(InvalidRequest, match="at most"):
        LogFilter(q="a" * 300, regex=True)


def test_a_regex_scan_stops_at_its_budget_and_a_cursor_goes_on(
    store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs_module, "REGEX_SCAN_ROWS", 50)
    monkeypatch.setattr(logs_module, "SCAN_PAGE_ROWS", 20)
    store.append(lines(source("web-0"), 200, text="row {}"))
    filt = LogFilter(q=r"^row 1?5$", regex=True)
    first = store.query(WEB, filt)
    assert texts(first) == [] and first.next_cursor is not None  # 199..150 held no match
    found: list[str] = []
    cursor = first.next_cursor
    while cursor is not None:
        page = store.query(WEB, filt, cursor=cursor)
        found += texts(page)
        cursor = page.next_cursor
    assert found == ["row 15", "row 5"]


def test_time_range_is_since_inclusive_until_exclusive(store: LogStore) -> None:
    store.append(lines(source("web-0"), 10))
    since, until = T0 + dt.timedelta(seconds=3), T0 + dt.timedelta(seconds=6)
    assert texts(store.query(WEB, LogFilter(since=since, until=until))) == [
        "line 5",
        "line 4",
        "line 3",
    ]
    with pytest.raises(InvalidRequest, match="since must be earlier than until"):
        LogFilter(since=until, until=since)
    with pytest.raises(InvalidRequest, match="timezone"):
        LogFilter(since=dt.datetime(2026, 1, 1))  # naive: refused


def test_pages_walk_every_line_once_newest_first(store: LogStore) -> None:
    # three instances, lines on shared instants: ties are broken by the write order
    for n in range(3):
        store.append(
            [
                LogEntry(source(f"web-{n}"), at=T0 + dt.timedelta(seconds=i // 2), text=f"{n}/{i}")
                for i in range(25)
            ]
        )
    seen: list[Any] = []
    cursor = None
    while True:
        page = store.query(WEB, limit=7, cursor=cursor)
        seen += page.lines
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == 75 and len({line.id for line in seen}) == 75
    keys = [(line.at, line.id) for line in seen]
    assert keys == sorted(keys, reverse=True)
    with pytest.raises(InvalidRequest, match="cursor"):
        store.query(WEB, cursor="not-a-cursor")


# ---------------------------------------------------------------- follow


def test_a_follower_gets_matching_lines_written_after_it_started(store: LogStore) -> None:
    store.append(lines(source("web-0"), 5, text="old error {}"))

    async def scenario() -> list[str]:
        got: list[str] = []
        follower = store.follow(WEB, LogFilter(q="error"), heartbeat=5)

        async def consume() -> None:
            async for batch in follower:
                got.extend(line.text for line in batch)
                if len(got) >= 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        await store.write(
            [
                LogEntry(source("web-0"), at=T0, text="fine"),
                LogEntry(source("web-1"), at=T0, text="new error 1"),
            ]
        )
        await asyncio.sleep(0.1)
        await store.write([LogEntry(source("web-2"), at=T0, text="new error 2")])
        await asyncio.wait_for(task, timeout=10)
        await follower.aclose()
        return got

    assert asyncio.run(scenario()) == ["new error 1", "new error 2"]


def test_a_follower_hears_only_its_selection_and_filter(store: LogStore) -> None:
    async def scenario() -> list[tuple[str, str]]:
        follower = store.follow(WEB, LogFilter(q="error"), heartbeat=5)
        first = asyncio.ensure_future(follower.__anext__())
        await asyncio.sleep(0.1)
        store.append(
            [
                LogEntry(source("web-0"), at=T0, text="all fine"),
                LogEntry(source("web-1"), at=T0, text="an error"),
                LogEntry(source("web-0", app="api"), at=T0, text="an error of another app"),
            ]
        )
        batch = await asyncio.wait_for(first, timeout=10)
        await follower.aclose()
        return [(line.source.instance, line.text) for line in batch]

    assert asyncio.run(scenario()) == [("web-1", "an error")]


def test_a_quiet_follower_beats_and_ends_when_the_store_closes(store: LogStore) -> None:
    async def scenario() -> list[int]:
        sizes: list[int] = []
        async for batch in store.follow(WEB, heartbeat=0.2):
            sizes.append(len(batch))
            if len(sizes) == 2:
                store.close()
        return sizes

    started = time.monotonic()
    assert asyncio.run(scenario()) == [0, 0]
    assert time.monotonic() - started < 5


def test_a_follower_whose_consumer_closes_the_store_slowly_ends_without_another_beat(
    store: LogStore,
) -> None:
    async def scenario() -> list[int]:
        sizes: list[int] = []
        async for batch in store.follow(WEB, heartbeat=0.05):
            sizes.append(len(batch))
            if len(sizes) == 3:
                break  # it should have ended after the first
            store.close()
            time.sleep(0.2)  # closing took longer than a heartbeat
        return sizes

    assert asyncio.run(scenario()) == [0]


def test_follow_resumes_after_an_id_without_a_gap(store: LogStore) -> None:
    store.append(lines(source("web-0"), 3))
    page = store.query(WEB)
    store.append(lines(source("web-0"), 2, start=3))  # written between the page and the follow

    async def scenario() -> list[str]:
        follower = store.follow(WEB, after_id=page.last_id, heartbeat=5)
        batch = await asyncio.wait_for(follower.__anext__(), timeout=10)
        await follower.aclose()
        return [line.text for line in batch]

    assert asyncio.run(scenario()) == ["line 3", "line 4"]


def test_a_followers_reads_of_a_backlog_go_on_from_the_last_row_each_examined(
    store: LogStore,
) -> None:
    store.append(lines(source("web-0"), 10))
    evens = LogFilter(q="[02468]$", regex=True)
    batches: list[list[str]] = []
    after, more = 0, True
    while more:  # four rows examined a read: full reads say more may follow
        found, after, more = store.lines_after(WEB, evens, after_id=after, max_rows=4)
        batches.append([line.text for line in found])
    assert batches == [["line 0", "line 2"], ["line 4", "line 6"], ["line 8"]]
    assert after == store.last_id()  # the short read examined everything up to the newest


# ---------------------------------------------------------------- one table, several replicas


@pytest.fixture
def pg_url(postgres_template: str) -> str:
    empty_log_tables(postgres_template)
    return postgres_template


def test_two_postgres_stores_share_pages_bounds_and_followers(pg_url: str) -> None:
    """Two stores on one database, as two replicas: what one writes the other pages through
    with the same cursors, the bounds count both writers, and a follower of one hears the
    other's lines (LISTEN/NOTIFY: nothing in its own process wakes it)."""
    leader = PostgresLogStore(pg_url, max_lines=1_000, max_lines_per_source=100)
    follower = PostgresLogStore(pg_url, max_lines=1_000, max_lines_per_source=100)
    try:
        leader.append(lines(source("web-0"), 30))
        ours, theirs = leader.query(WEB, limit=7), follower.query(WEB, limit=7)
        assert ours == theirs and len(ours.lines) == 7
        assert follower.query(WEB, limit=7, cursor=ours.next_cursor) == leader.query(
            WEB, limit=7, cursor=ours.next_cursor
        )
        follower.append(lines(source("web-0"), 100, start=30))  # 130 > cap + 10 %: trimmed
        assert leader.count(source("web-0")) == 100 == follower.count(source("web-0"))
        assert texts(leader.query(one("web-0"), limit=1)) == ["line 129"]

        async def hear_the_other() -> list[str]:
            stream = follower.follow(WEB, LogFilter(q="wanted"), heartbeat=5)
            first = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.3)  # the follower is listening
            await leader.write(
                [
                    LogEntry(source("web-1"), at=T0, text="not this"),
                    LogEntry(source("web-1"), at=T0, text="the wanted line"),
                ]
            )
            batch = await asyncio.wait_for(first, timeout=10)
            await stream.aclose()
            return [line.text for line in batch]

        assert asyncio.run(hear_the_other()) == ["the wanted line"]
    finally:
        leader.close()
        follower.close()


def test_postgres_holds_what_its_text_type_cannot_as_replacement_characters(
    pg_url: str,
) -> None:
    store = PostgresLogStore(pg_url, max_lines=100)
    try:
        store.append([LogEntry(source("web-0"), at=T0, text="a\x00b \ud800 c")])
        (line,) = store.query(one("web-0")).lines
        assert line.text == "a\ufffdb ? c"
    finally:
        store.close()


def test_the_platform_chooses_the_shared_store_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from gaia.settings import Settings

    def chosen(url: str) -> LogStore:
        return open_log_store(Settings(data_dir=tmp_path, database_url=url), url)

    on_postgres, on_sqlite = chosen(pg_url), chosen(f"sqlite:///{tmp_path / 'gaia.db'}")
    assert isinstance(on_postgres, PostgresLogStore) and isinstance(on_sqlite, SqliteLogStore)
    on_postgres.close()
    on_sqlite.close()


# ---------------------------------------------------------------- system logs


def test_the_system_handler_writes_redacted_records(
    store: LogStore, caplog: pytest.LogCaptureFixture
) -> None:
    handler = SystemLogHandler(store)
    handler.install()
    try:
        with caplog.at_level(logging.INFO, logger="gaia"):
            logging.getLogger("gaia.api.test").info(
                "user admin logged in with %s and password=%s", TOKEN, "hunter2"
            )
            logging.getLogger("gaia.controllers.test").warning("cluster sim-1 is slow")
            logging.getLogger("gaia.api.test").debug("not stored: below INFO")
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                logging.getLogger("gaia.api.test").exception("a failure")
            assert handler.wait_written()
    finally:
        handler.uninstall()
    page = store.query(LogSelector.system())
    by_text = {line.text.splitlines()[0]: line for line in page.lines}
    assert set(by_text) == {
        "user admin logged in with gaia_[REDACTED] and password=[REDACTED]",
        "cluster sim-1 is slow",
        "a failure",
    }
    assert all(TOKEN not in line.text and "hunter2" not in line.text for line in page.lines)
    assert by_text["a failure"].level == logging.ERROR
    assert "RuntimeError: boom" in by_text["a failure"].text
    assert by_text["cluster sim-1 is slow"].logger == "gaia.controllers.test"
    warnings = store.query(LogSelector.system(), LogFilter(level=logging.WARNING))
    assert {line.text.splitlines()[0] for line in warnings.lines} == {
        "cluster sim-1 is slow",
        "a failure",
    }
    api = store.query(LogSelector.system(), LogFilter(logger="gaia.api"))
    assert len(api.lines) == 2
    # once removed, the handler stores nothing more
    logging.getLogger("gaia.api.test").warning("after uninstall")
    assert len(store.query(LogSelector.system()).lines) == 3


def test_the_system_handler_gathers_a_batch_and_writes_at_once_when_asked(
    store: LogStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Records logged within the linger go in one write; a full batch or a waiter does not
    wait the linger out."""
    writes: list[int] = []
    append = store.append

    def counted(entries: list[LogEntry]) -> None:
        writes.append(len(entries))
        append(entries)

    store.append = counted  # type: ignore[method-assign]
    handler = SystemLogHandler(store, linger=30.0, batch_size=50)
    handler.install()
    try:
        caplog.set_level(logging.INFO, logger="gaia")
        logger = logging.getLogger("gaia.api.test")
        started = time.monotonic()
        for i in range(120):  # two full batches are written without waiting for the linger
            logger.info("line %d", i)
        deadline = time.monotonic() + 10
        while sum(writes) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writes[:2] == [50, 50]
        assert handler.wait_written()  # the other 20: written now, not in 30 s
        assert time.monotonic() - started < 10
    finally:
        handler.uninstall()
    assert [n for n in writes if n] == [50, 50, 20]


def test_the_system_handler_drops_and_counts_when_its_queue_is_full(store: LogStore) -> None:
    handler = SystemLogHandler(store, capacity=2)  # not installed: nothing drains the queue
    record = logging.LogRecord("gaia.x", logging.INFO, __file__, 1, "hello", None, None)
    started = time.monotonic()
    for _ in range(5):
        handler.emit(logging.makeLogRecord(record.__dict__ | {"_gaia_stored": False}))
    assert time.monotonic() - started < 1  # never blocks
    assert handler.dropped == 3


# ---------------------------------------------------------------- the collector on a sim cluster


@pytest.fixture
def h(world: World, platform: Platform) -> AppsHarness:
    return AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))


@pytest.fixture
def web(h: AppsHarness) -> AppsHarness:
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "registry.local/web:v1")],
        "replicas": 2,
    }
    h.post(f"{BIZ}/apps", body, status=201)
    h.settle(h.ready("web", 2))
    h.tick(30)  # some periodic lines
    return h


def collector(platform: Platform, **kw: Any) -> LogCollector:
    return LogCollector(
        db=platform.db, providers=platform.providers, store=platform.log_store, **kw
    )


def held(platform: Platform, instance: str) -> list[tuple[dt.datetime, str]]:
    page = platform.log_store.query(one(instance), limit=5_000)
    return sorted((line.at, line.text) for line in page.lines)


def test_the_collector_fetches_new_lines_only_and_never_twice(
    web: AppsHarness, platform: Platform
) -> None:
    sim = web.sim("sim-1")
    loop = collector(platform)
    asyncio.run(loop.run_once())
    assert loop.last.instances == 2 and loop.last.fetched == 2 and loop.last.errors == 0
    first = held(platform, "web-0")
    assert "starting web v1 (image registry.local/web:v1)" in [t for _, t in first]
    assert len(first) > 5  # the banner and some periodic lines

    asyncio.run(loop.run_once())  # nothing new: the boundary lines come back and are dropped
    assert loop.last.lines == 0
    assert held(platform, "web-0") == first

    web.clock.step(20)
    asyncio.run(loop.run_once())
    assert loop.last.lines > 0
    after = held(platform, "web-0")
    assert len(after) == len(set(after)) and after[: len(first)] == first
    everything = asyncio.run(sim.logs(namespace="alpha", name="web-0", tail=10_000))
    assert after == sorted((line.at, line.text) for line in everything)

    restarted = collector(platform)  # a new process: the cursor comes from the store
    asyncio.run(restarted.run_once())
    assert restarted.last.fetched == 2 and restarted.last.lines == 0


def test_the_collector_takes_a_bounded_share_of_instances_each_pass(
    web: AppsHarness, platform: Platform
) -> None:
    loop = collector(platform, per_pass=1)
    asyncio.run(loop.run_once())
    asyncio.run(loop.run_once())
    assert loop.last.fetched == 1
    assert held(platform, "web-0") and held(platform, "web-1")  # round-robin: both served


# ---------------------------------------------------------------- the API


def test_members_read_their_apps_logs_and_others_get_404(
    web: AppsHarness, world: World, platform: Platform
) -> None:
    client = world.client
    url = f"{BIZ}/apps/web/logs"
    live = client.get(url, headers=world.as_("viewer"))
    assert live.status_code == 200, live.text
    assert live.json()["source"] == "live" and live.json()["items"]  # nothing collected yet

    asyncio.run(collector(platform).run_once())
    page = client.get(url, headers=world.as_("viewer"), params={"limit": 5}).json()
    assert page["source"] == "store" and len(page["items"]) == 5 and page["next_cursor"]
    assert {i["instance"] for i in page["items"]} <= {"web-0", "web-1"}
    more = client.get(
        url, headers=world.as_("viewer"), params={"limit": 5, "cursor": page["next_cursor"]}
    ).json()
    assert not {i["id"] for i in more["items"]} & {i["id"] for i in page["items"]}
    only = client.get(url, headers=world.as_("viewer"), params={"instance": 1}).json()
    assert only["items"] and {i["instance_id"] for i in only["items"]} == {1}

    other = client.get(url, headers=world.as_("outsider"))
    assert other.status_code == 404, other.text
    assert client.get(f"{BIZ}/apps/nope/logs", headers=world.as_("viewer")).status_code == 404


def test_bad_log_parameters_are_refused_with_reasons(web: AppsHarness, world: World) -> None:
    url = f"{BIZ}/apps/web/logs"
    viewer = world.as_("viewer")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "earlier"),
        ({"q": "(a", "regex": "true"}, 422, "regular expression"),
        ({"q": "(x)\\1", "regex": "true"}, 422, "backreferences"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 5001}, 422, "limit"),
        ({"since": "2026-01-01T00:00:00"}, 422, "timezone"),
        ({"cursor": "Zm9v"}, 422, "cursor"),
        ({"follow": "true"}, 406, "text/event-stream"),
    ]
    for params, status, words in cases:
        r = world.client.get(url, headers=viewer, params=params)
        assert r.status_code == status, (params, r.text)
        assert words in r.json()["message"], (params, r.text)


def test_system_logs_are_for_platform_admins(world: World, platform: Platform) -> None:
    platform.log_store.append(
        [LogEntry(SYSTEM_SOURCE, at=T0, text="platform started", level=logging.INFO, logger="gaia")]
    )
    denied = world.client.get("/api/v1/system/logs", headers=world.as_("business-admin"))
    assert denied.status_code == 403, denied.text
    page = world.client.get(
        "/api/v1/system/logs", headers=world.admin, params={"q": "started", "level": "info"}
    )
    assert page.status_code == 200, page.text
    (item,) = page.json()["items"]
    assert (item["text"], item["level"], item["logger"]) == ("platform started", "INFO", "gaia")
    bad = world.client.get("/api/v1/system/logs", headers=world.admin, params={"level": "LOUD"})
    assert bad.status_code == 422


@pytest.fixture
def server(platform: Platform, world: World) -> Iterator[str]:
    """The app under uvicorn (loops and lifespan off): TestClient would buffer the stream."""
    with serve(platform, lifespan=False) as origin:
        yield origin


def test_follow_streams_new_matching_lines_as_server_sent_events(
    web: AppsHarness, world: World, platform: Platform, server: str
) -> None:
    headers = {**world.as_("viewer"), "Accept": "text/event-stream"}
    params = {"follow": "true", "q": "wanted", "instance": 0}
    events: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=server, timeout=10) as client,
        client.stream("GET", f"{BIZ}/apps/web/logs", headers=headers, params=params) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = response.iter_lines()
        assert next(stream) == "retry: 3000"
        platform.log_store.append(
            [
                LogEntry(source("web-0"), at=T0, text="a boring line"),
                LogEntry(source("web-1"), at=T0, text="wanted, but another instance"),
                LogEntry(source("web-0"), at=T0, text="the wanted line"),
            ]
        )
        event_id = None
        for raw in stream:
            if raw.startswith("id: "):
                event_id = int(raw[4:])
            if raw.startswith("data: "):
                events.append(json.loads(raw[6:]))
                break
    assert [e["text"] for e in events] == ["the wanted line"]
    assert events[0]["id"] == event_id and events[0]["instance"] == "web-0"


# ---------------------------------------------------------------- a real node


@pytest.mark.slow
def test_kubernetes_logs_since_returns_only_newer_lines(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``pods/log`` with ``sinceTime`` (whole seconds) and the provider's own cut below it."""
    plane, node = start_real_bed(tmp_path_factory, "logs")
    api = plane.http_client()
    provider = KubernetesCluster(name="real", kubeconfig=plane.kubeconfig_text())
    try:
        assert api.post("/api/v1/namespaces", json={"metadata": {"name": "logs"}}).is_success
        image, _ = node.fresh_images("logs")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "logs"},
            "spec": {
                "nodeName": node.name,
                "terminationGracePeriodSeconds": 2,
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        # every probe is one line of httpd's verbose log
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": 8080},
                            "periodSeconds": 1,
                        },
                    }
                ],
            },
        }
        assert api.post("/api/v1/namespaces/logs/pods", json=pod).status_code == 201

        async def newer_lines() -> tuple[list[Any], list[Any], list[Any]]:
            deadline = time.monotonic() + 90
            first: list[Any] = []
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):  # still starting
                    first = await provider.logs(namespace="logs", name="web-0", tail=100)
                if first:
                    break
                await asyncio.sleep(0.5)
            assert first, "the pod never logged"
            await asyncio.sleep(2.5)  # a few probes later
            start = first[0].at
            newer = await provider.logs(
                namespace="logs", name="web-0", since=start + dt.timedelta(microseconds=1)
            )
            inclusive = await provider.logs(namespace="logs", name="web-0", since=start)
            return first, newer, inclusive

        first, newer, inclusive = asyncio.run(newer_lines())
        assert first[0].text == "web v1 starting"
        assert newer and all(line.at > first[0].at for line in newer)
        assert "web v1 starting" not in [line.text for line in newer]
        assert inclusive[0].text == "web v1 starting"
        assert inclusive[1 : len(newer) + 1] == newer
    finally:
        asyncio.run(provider.close())
        api.close()
        node.stop()
        plane.stop()
