"""Writers on the platform database (issue 22): on SQLite this process's write transactions take
turns in arrival order, each woken the moment the previous one ends, and a wait that lasts
longer than SQLite's busy timeout fails as SQLite would; the WAL is checkpointed by a thread of
its own, not inside a writer's commit; on PostgreSQL writers run side by side."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gaia.store import database as database_module
from gaia.store.database import Database
from gaia.store.models import Business
from tests.support.writers import HeldTurn, writer_turn_held


@pytest.fixture
def sqlite_db(tmp_path: Path, sqlite_template: Path) -> Iterator[Database]:
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    yield db
    db.dispose()


def _create(db: Database, name: str) -> None:
    with db.write_session() as session:
        session.add(Business(name=name))


def _until(condition: object, *, what: str) -> None:
    done = threading.Event()
    for _ in range(2000):
        if callable(condition) and condition():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting until {what}")


def _names(db: Database) -> list[str]:
    with db.read_session() as session:
        return list(session.scalars(select(Business.name).order_by(Business.id)))


def test_sqlite_writers_take_their_turns_in_arrival_order(sqlite_db: Database) -> None:
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with sqlite_db.write_session() as session:
            session.add(Business(name="first"))
            session.flush()
            holding.set()
            release.wait(10)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holding.wait(10)
    for n, name in enumerate(["second", "third", "fourth"], start=1):
        thread = threading.Thread(target=_create, args=(sqlite_db, name))
        thread.start()
        threads.append(thread)
        _until(lambda n=n: sqlite_db.writers_waiting == n, what=f"{name} queued")
    release.set()
    for thread in threads:
        thread.join(10)
    assert _names(sqlite_db) == ["first", "second", "third", "fourth"]
    assert sqlite_db.writers_waiting == 0


def test_a_sqlite_writer_waits_no_longer_than_the_busy_timeout(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "SQLITE_LOCK_WAIT_SECONDS", 0.3)
    failures: list[BaseException] = []

    def late() -> None:
        try:
            _create(sqlite_db, "late")
        except BaseException as exc:
            failures.append(exc)

    with writer_turn_held(sqlite_db, business="holder"):
        waiter = threading.Thread(target=late)
        waiter.start()
        waiter.join(10)
    assert len(failures) == 1 and isinstance(failures[0], OperationalError)
    assert "database is locked" in str(failures[0])
    assert sqlite_db.writers_waiting == 0
    _create(sqlite_db, "after")  # the turn is free again
    assert _names(sqlite_db) == ["holder", "after"]


def test_a_failed_sqlite_write_gives_its_turn_back(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "SQLITE_LOCK_WAIT_SECONDS", 2.0)
    with pytest.raises(RuntimeError), sqlite_db.write_session() as session:
        session.add(Business(name="rolled-back"))
        session.flush()
        raise RuntimeError("the route failed")
    # a session closed without commit or rollback (a request's, on an error) gives it back too
    session = sqlite_db.new_session(write=True)
    session.add(Business(name="abandoned"))
    session.flush()
    session.close()
    worker = threading.Thread(target=_create, args=(sqlite_db, "next"))
    worker.start()
    worker.join(10)
    assert _names(sqlite_db) == ["next"]


def test_a_write_on_the_event_loop_awaits_its_turn_in_arrival_order(sqlite_db: Database) -> None:
    """What lets a short change run on the event loop: its wait for the turn is an ``await``
    (the loop serves others meanwhile), in line with the threads' waits, and once the turn has
    come it begins at once."""
    later = threading.Thread(target=_create, args=(sqlite_db, "third"))

    async def on_the_loop(held: HeldTurn) -> None:
        session = sqlite_db.new_session(write=True)
        wait = asyncio.ensure_future(sqlite_db.begin_write_on_loop(session))
        while sqlite_db.writers_waiting < 1:  # the loop runs while the writer waits
            await asyncio.sleep(0.01)
        later.start()  # a thread comes after the loop's writer...
        while sqlite_db.writers_waiting < 2:
            await asyncio.sleep(0.01)
        assert not wait.done()  # still waiting, and this coroutine ran meanwhile
        held.let_go()
        assert await wait
        assert session.in_transaction()
        session.add(Business(name="second"))
        session.commit()  # ...and writes after it
        session.close()

    with writer_turn_held(sqlite_db, business="first") as held:
        asyncio.run(on_the_loop(held))
    later.join(10)
    assert _names(sqlite_db) == ["first", "second", "third"]
    assert sqlite_db.writers_waiting == 0


@pytest.mark.parametrize("when", ["waiting", "handed over"])
def test_a_cancelled_wait_on_the_event_loop_passes_the_turn_on(
    sqlite_db: Database, when: str
) -> None:
    """The client went away: whether its turn had come yet or was on its way to the loop, the
    next writer in line gets it."""
    queue = database_module._writer_queue_for(sqlite_db.url)
    assert queue.enter(timeout=1)  # a holder, given back from the loop below
    after = threading.Thread(target=_create, args=(sqlite_db, "after"))

    async def on_the_loop() -> None:
        session = sqlite_db.new_session(write=True)
        wait = asyncio.ensure_future(sqlite_db.begin_write_on_loop(session))
        while queue.waiting < 1:
            await asyncio.sleep(0.01)
        after.start()
        while queue.waiting < 2:
            await asyncio.sleep(0.01)
        if when == "waiting":
            wait.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await wait
            queue.leave()  # the holder is done: the thread is next
        else:
            queue.leave()  # the turn is on its way to the loop's writer...
            wait.cancel()  # ...which is cancelled before it arrives
            with contextlib.suppress(asyncio.CancelledError):
                await wait
        session.close()

    asyncio.run(on_the_loop())
    after.join(10)
    assert not after.is_alive()
    assert _names(sqlite_db) == ["after"]
    assert queue.waiting == 0
    _create(sqlite_db, "free")  # and the turn is free again
    assert _names(sqlite_db) == ["after", "free"]


def test_a_wait_on_the_event_loop_gives_up_as_sqlite_would(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "SQLITE_LOCK_WAIT_SECONDS", 0.3)
    queue = database_module._writer_queue_for(sqlite_db.url)
    assert queue.enter(timeout=1)
    session = sqlite_db.new_session(write=True)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            asyncio.run(sqlite_db.begin_write_on_loop(session))
        assert queue.waiting == 0 and not session.in_transaction()
    finally:
        session.close()
        queue.leave()
    _create(sqlite_db, "after")
    assert _names(sqlite_db) == ["after"]


def test_a_write_on_the_event_loop_never_waits_for_another_process(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process on the file (the CLI, a restore) holds SQLite's own lock: a write on the
    loop does not begin (its wait would be SQLite's busy handler, which blocks), gives its turn
    back, and can still begin in the usual way, from a thread, which waits."""
    monkeypatch.setattr(database_module, "SQLITE_LOCK_WAIT_SECONDS", 5.0)
    outsider = sqlite3.connect(tmp_path / "gaia.db", isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    try:
        session = sqlite_db.new_session(write=True)
        started = time.monotonic()
        assert not asyncio.run(sqlite_db.begin_write_on_loop(session))
        assert time.monotonic() - started < 1.0
        assert not session.in_transaction()
        # the turn went back: a writer of this process takes it and meets the outsider's lock
        # in SQLite's busy handler, with the whole timeout (reset after the try), not zero
        waiter = threading.Thread(target=_create, args=(sqlite_db, "waited"))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()
    finally:
        outsider.rollback()
        outsider.close()
    waiter.join(10)
    assert _names(sqlite_db) == ["waited"]
    session.add(Business(name="late"))
    session.commit()  # the session that did not begin can begin now (queued, as usual)
    session.close()
    assert _names(sqlite_db) == ["waited", "late"]


def test_postgresql_writes_do_not_begin_on_the_event_loop(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL side")
    db = Database(database_url)
    try:
        session = db.new_session(write=True)
        assert not asyncio.run(db.begin_write_on_loop(session))
        assert not session.in_transaction()
        session.close()
    finally:
        db.dispose()


def test_postgresql_writers_run_side_by_side(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer at a time, by design")
    db = Database(database_url)
    try:
        with db.write_session() as session:
            session.add(Business(name="open"))
            session.flush()
            other = threading.Thread(target=_create, args=(db, "beside"))
            other.start()
            other.join(10)
            assert not other.is_alive(), "a second writer waited for the first"
        assert sorted(_names(db)) == ["beside", "open"]
    finally:
        db.dispose()


def test_sqlite_commits_leave_the_checkpoint_to_a_background_thread(
    sqlite_db: Database, tmp_path: Path
) -> None:
    with sqlite_db.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == database_module.SAFETY_AUTOCHECKPOINT_PAGES  # a commit moves no pages
    checkpointer = sqlite_db._checkpointer
    assert checkpointer is not None
    before = checkpointer.checkpoints
    _create(sqlite_db, "moved")
    _until(lambda: checkpointer.checkpoints > before, what="a background checkpoint")
    # the row is in the database file itself now, not only in its WAL
    path = Path(sqlite_db.url.split("///", 1)[1])
    alone = tmp_path / "file-alone.db"
    shutil.copy(path, alone)
    with sqlite3.connect(alone) as conn:
        assert conn.execute("SELECT name FROM businesses").fetchall() == [("moved",)]
    thread = checkpointer._thread
    sqlite_db.dispose()
    assert not thread.is_alive()
