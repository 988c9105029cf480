"""Writers on the platform database (issue 22): on SQLite this process's write transactions take
turns in arrival order, each woken the moment the previous one ends, and a wait that lasts
longer than SQLite's busy timeout fails as SQLite would; the WAL is checkpointed by a thread of
its own, not inside a writer's commit; on PostgreSQL writers run side by side."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gaia.store import database as database_module
from gaia.store.database import Database
from gaia.store.models import Business


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
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_db.write_session() as session:
            session.add(Business(name="holder"))
            session.flush()
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    failures: list[BaseException] = []

    def late() -> None:
        try:
            _create(sqlite_db, "late")
        except BaseException as exc:
            failures.append(exc)

    waiter = threading.Thread(target=late)
    waiter.start()
    waiter.join(10)
    release.set()
    holder.join(10)
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
