"""Engine and sessions for SQLite (the embedded default) and PostgreSQL.

Two kinds of unit of work:

- ``read_session()``: a plain transaction. On SQLite in WAL mode readers never block writers.
- ``write_session()``: a transaction that intends to write. On SQLite it starts with
  ``BEGIN IMMEDIATE``, taking the database's write lock up front. Without it, two transactions
  that both read and then write would collide on SQLite's lock upgrade and one would fail with
  "database is locked" instead of waiting; with it, quota admission reads a value nobody else can
  change before it commits. PostgreSQL needs no such trick: rows that must not change under us
  are locked with ``SELECT ... FOR UPDATE``, and its writers run side by side.

SQLite has one writer at a time anyway, and a writer that finds the lock taken waits in SQLite's
busy handler, which *sleeps* (1, 2, 5, 10 ... up to 100 ms between tries) and serves nobody in
order: under four concurrent writers a request could sleep 300 ms while the lock sat free. So
this process's writers queue in front of ``BEGIN IMMEDIATE`` instead (``_WriterQueue``, one per
database file): first come, first served, and the next writer is woken the moment the previous
one commits or rolls back (the connection class ``_QueuedConnection`` leaves the queue right
after SQLite ended the transaction). The queue waits as long as SQLite's ``busy_timeout`` would
and then fails the same way ("database is locked"), so a code path that nests two write
transactions in one thread still fails, as it always did, rather than hanging. Nothing may wait
for the turn on the event loop's thread (a request's transaction may need the loop to reach its
commit); the first write that begins there in the blocking way is logged with its stack. A
write may begin on the loop when it awaits its turn (``Database.begin_write_on_loop``: the loop
serves others meanwhile) and then begins without waiting for another process's lock. Other
processes on the same file (the CLI, a backup) still meet SQLite's own lock and busy handler.
PostgreSQL has no queue: several replicas and their connection pools keep their concurrency.

SQLite moves the WAL's pages into the database file (a checkpoint) inside the ``COMMIT`` that
takes the WAL past ``wal_autocheckpoint`` pages (1,000 by default): every few hundred writes
one request's commit writes a thousand pages and waits for two fsyncs while holding the write
lock, and the writers queued behind it wait with it. So each database file gets a checkpointer
(``_WalCheckpointer``): a thread of its own that runs a ``PASSIVE`` checkpoint, which neither
takes nor waits for the write lock, once commits have happened (at most every
``CHECKPOINT_INTERVAL_SECONDS``), and completes it in a writer turn of its own when the WAL
has grown long (the few frames written meanwhile), so that the WAL starts over; the
connections' own auto-checkpoint is raised to ``SAFETY_AUTOCHECKPOINT_PAGES``, a backstop
should the thread fall behind. Commits run with
``synchronous=NORMAL``, SQLite's recommended setting in WAL mode: a commit is durable against
a crash of the process; a power loss or kernel crash may lose the last commits before the
next checkpoint, never corrupt the file.

pysqlite's own transaction handling is switched off (``isolation_level = None``) so the BEGIN we
emit is the one that runs (the recipe from SQLAlchemy's SQLite dialect documentation).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from gaia.store.leases import check_fence

log = logging.getLogger(__name__)
# How long a writer waits for SQLite's lock, in the queue or in SQLite's busy handler.
SQLITE_LOCK_WAIT_SECONDS = 30.0
# The background checkpointer's pace, and the commits' own auto-checkpoint that backs it up
# (pages of the WAL; SQLite's default is 1,000).
CHECKPOINT_INTERVAL_SECONDS = 0.5
SAFETY_AUTOCHECKPOINT_PAGES = 20_000
# A WAL this long (frames of 4 KiB) gets its checkpoint completed in a
# writer turn, so that the next writer starts it over (see ``_WalCheckpointer.checkpoint``).
RESTART_WAL_FRAMES = 4_000


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": SQLITE_LOCK_WAIT_SECONDS,
                "factory": _QueuedConnection,
            }
        else:
            kwargs.update(pool_size=10, max_overflow=40, pool_pre_ping=True, pool_timeout=30)
        self.engine: Engine = create_engine(url, **kwargs)
        self._writers: _WriterQueue | None = None
        self._checkpointer: _WalCheckpointer | None = None
        if self.is_sqlite:
            self._writers = _writer_queue_for(url)
            self._checkpointer = _WalCheckpointer.open(url, writers=self._writers)
            _configure_sqlite(self.engine, writers=self._writers, checkpointer=self._checkpointer)
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            bind=self.engine.execution_options(sqlite_begin="IMMEDIATE"),
            expire_on_commit=False,
        )
        # a leader's loop writes only while it still leads (gaia.store.leases, fencing)
        event.listen(self._writer, "before_commit", check_fence)

    @property
    def writers_waiting(self) -> int:
        """Write transactions of this process waiting for their turn (always 0 on PostgreSQL)."""
        return self._writers.waiting if self._writers is not None else 0

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        # Closing (not rolling back) ends the transaction without expiring loaded objects, so
        # callers may keep reading the rows they fetched after the block.
        with self._reader() as session:
            yield session

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """A transaction committed when the block ends without an exception."""
        with self._writer() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def new_session(self, *, write: bool) -> Session:
        return (self._writer if write else self._reader)()

    async def begin_write_on_loop(self, session: Session) -> bool:
        """Begin the write transaction of ``session`` on the event loop's thread: its turn is
        awaited (the loop serves others meanwhile), then ``BEGIN IMMEDIATE`` runs without
        waiting. False, with nothing begun and nothing held, when another process holds
        SQLite's lock (then begin it in a worker thread, which may wait), and always on
        PostgreSQL (whose transactions begin with a round trip). A turn that does not come
        within SQLite's busy timeout fails as ``BEGIN`` would ("database is locked").

        What lets a short change run on the loop (``gaia.api.deps.inline_write``): nothing
        may *block* the loop waiting for the turn, whose holder may need the loop to reach
        its commit, but it may await it."""
        writers = self._writers
        if writers is None:
            return False
        if not await writers.enter_async(timeout=SQLITE_LOCK_WAIT_SECONDS):
            raise OperationalError(
                "BEGIN IMMEDIATE",
                None,
                sqlite3.OperationalError(
                    "database is locked (waited "
                    f"{SQLITE_LOCK_WAIT_SECONDS:.0f} s for this process's other writers)"
                ),
            )
        return self._begin_in_turn(session, writers)

    def _begin_in_turn(self, session: Session, writers: _WriterQueue) -> bool:
        """``BEGIN`` the session's transaction with the turn already taken (handed to its
        connection), not waiting for another process's lock; the turn is given back if it
        does not begin."""
        grant = _Grant(writers)
        token = _granted_turn.set(grant)
        try:
            session.connection()
        except OperationalError as exc:
            if not _is_busy(exc):
                raise
            session.rollback()  # another process holds SQLite's lock: nothing has begun
            return False
        finally:
            _granted_turn.reset(token)
            if not grant.used:  # the turn never reached a connection (or a failed BEGIN
                writers.leave()  # gave it back itself): hand it on
        return True

    def listen_sessions(self, identifier: str, fn: Callable[..., Any]) -> None:
        """Register a SQLAlchemy session event (``after_flush``, ``after_commit``...) on every
        session of this database, read and write alike, and on no other database's."""
        for maker in (self._reader, self._writer):
            event.listen(maker, identifier, fn)

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.release()
            self._checkpointer = None
        self.engine.dispose()


class _WriterQueue:
    """One writer at a time, served in arrival order; the turn is handed straight to the next
    in line on release, so nobody sleeps while the lock is free and nobody jumps the queue.

    A writer waits in a thread (``enter``) or, on the event loop, in a coroutine (``enter_async``:
    the loop goes on serving while it waits). Not bound to a thread: a turn is taken in the
    engine's ``begin`` event and given back by the DB-API connection when SQLite has ended the
    transaction."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._taken = False
        self._waiting: deque[_ThreadWaiter | _LoopWaiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def enter(self, *, timeout: float) -> bool:
        with self._mutex:
            if not self._taken:
                self._taken = True
                return True
            waiter = _ThreadWaiter()
            self._waiting.append(waiter)
        if waiter.turn.acquire(timeout=timeout):
            return True
        with self._mutex:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                return False
        return True  # handed to us between the timeout and the check: ours now

    async def enter_async(self, *, timeout: float) -> bool:
        """``enter`` for the event loop's thread: the wait is an ``await``, never a block. A
        wait cancelled or timed out after the turn was handed over passes it on."""
        with self._mutex:
            if not self._taken:
                self._taken = True
                return True
            waiter = _LoopWaiter(self)
            self._waiting.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter.granted
            return True
        except BaseException as exc:
            with self._mutex:
                handed = waiter not in self._waiting
                if not handed:
                    self._waiting.remove(waiter)
            if handed and waiter.granted.done() and not waiter.granted.cancelled():
                self.leave()  # handed over as the wait ended: pass it on
            # else still in flight to us: ``_LoopWaiter._grant`` finds the wait over, passes it on
            if isinstance(exc, TimeoutError):
                return False
            raise

    def leave(self) -> None:
        while True:
            with self._mutex:
                if not self._waiting:
                    self._taken = False
                    return
                waiter = self._waiting.popleft()  # still taken: the next writer's now
            if waiter.wake():
                return
            # its event loop has closed: the next in line


class _ThreadWaiter:
    def __init__(self) -> None:
        self.turn = threading.Lock()
        self.turn.acquire()

    def wake(self) -> bool:
        self.turn.release()
        return True


class _LoopWaiter:
    def __init__(self, queue: _WriterQueue) -> None:
        self.queue = queue
        self.loop = asyncio.get_running_loop()
        self.granted: asyncio.Future[bool] = self.loop.create_future()

    def wake(self) -> bool:
        try:
            self.loop.call_soon_threadsafe(self._grant)
        except RuntimeError:  # the loop has closed
            return False
        return True

    def _grant(self) -> None:
        if self.granted.done():  # the wait was cancelled meanwhile: the next writer's turn
            self.queue.leave()
        else:
            self.granted.set_result(True)


_queues_mutex = threading.Lock()
_queues: dict[str, _WriterQueue] = {}


def _writer_queue_for(url: str) -> _WriterQueue:
    """The queue of the database file behind ``url``, shared by every ``Database`` of this
    process on that file (two platforms in one test process write one file); an in-memory
    database is private to its engine, and so is its queue."""
    path = url.split("///", 1)[1] if "///" in url else ""
    if not path or path == ":memory:" or path.startswith("file:"):
        return _WriterQueue()
    key = str(Path(path).resolve())
    with _queues_mutex:
        return _queues.setdefault(key, _WriterQueue())


class _WalCheckpointer:
    """A thread that checkpoints one database file's WAL in the background: woken by commits,
    at most every ``CHECKPOINT_INTERVAL_SECONDS``, it runs ``PRAGMA wal_checkpoint(PASSIVE)`` on
    a connection of its own, so no request's commit does. One per file in this process, shared
    by the ``Database`` objects on it (counted; the last ``release`` stops it)."""

    _mutex = threading.Lock()
    _open: dict[str, _WalCheckpointer] = {}

    def __init__(self, path: str, *, writers: _WriterQueue) -> None:
        self.path = path
        self.writers = writers
        self.users = 0
        self.checkpoints = 0
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"gaia-sqlite-checkpoint:{Path(path).name}", daemon=True
        )

    @classmethod
    def open(cls, url: str, *, writers: _WriterQueue) -> _WalCheckpointer | None:
        """The checkpointer of the file behind ``url`` (None for an in-memory database, which
        has no WAL), started on first use."""
        path = url.split("///", 1)[1] if "///" in url else ""
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        key = str(Path(path).resolve())
        with cls._mutex:
            checkpointer = cls._open.get(key)
            if checkpointer is None:
                checkpointer = cls._open[key] = cls(key, writers=writers)
                checkpointer._thread.start()
            checkpointer.users += 1
            return checkpointer

    def release(self) -> None:
        with self._mutex:
            self.users -= 1
            if self.users > 0:
                return
            if self._open.get(self.path) is self:
                del self._open[self.path]
        self._stop.set()
        self._dirty.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=SQLITE_LOCK_WAIT_SECONDS)

    def committed(self) -> None:
        """A write transaction committed: there are pages to move (an Event's set is cheap
        and never blocks)."""
        self._dirty.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            try:
                self.checkpoint()
            except sqlite3.Error as exc:  # the file went away, or is locked by another process
                log.debug("background checkpoint of %s failed: %s", self.path, exc)
            # commits that arrive meanwhile set the event again: one checkpoint moves them all
            self._stop.wait(CHECKPOINT_INTERVAL_SECONDS)

    def checkpoint(self) -> tuple[int, int, int]:
        """Move the WAL's frames into the database file; (busy, frames in the WAL, frames
        moved) of the last pass, as SQLite says.

        The first pass runs beside the writers and moves the bulk. But SQLite starts the WAL
        over from its beginning only once a checkpoint has moved every frame, which never
        happens while writers keep appending: so a WAL past ``RESTART_WAL_FRAMES`` gets a
        second pass in a writer turn of its own, which moves the few frames added meanwhile
        and completes, and the next writer starts the WAL over (as after SQLite's own
        auto-checkpoint, which did all of this inside a commit)."""
        # mode=rw: a file deleted meanwhile (a test's temporary folder) is not created anew
        conn = sqlite3.connect(
            f"file:{self.path}?mode=rw", uri=True, timeout=SQLITE_LOCK_WAIT_SECONDS
        )
        try:
            row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if row[1] >= RESTART_WAL_FRAMES and self.writers.enter(
                timeout=SQLITE_LOCK_WAIT_SECONDS
            ):
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                finally:
                    self.writers.leave()
        finally:
            conn.close()
        self.checkpoints += 1
        return (int(row[0]), int(row[1]), int(row[2]))


class _Grant:
    """A writer turn taken ahead of ``BEGIN`` (``Database.begin_write_on_loop``), for the
    connection that begins next in the same context; ``used`` once one has."""

    def __init__(self, queue: _WriterQueue) -> None:
        self.queue = queue
        self.used = False


_granted_turn: contextvars.ContextVar[_Grant | None] = contextvars.ContextVar(
    "gaia_granted_writer_turn", default=None
)


def _is_busy(exc: OperationalError) -> bool:
    orig = exc.orig
    return isinstance(orig, sqlite3.OperationalError) and (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
        or "database is locked" in str(orig)
    )


class _QueuedConnection(sqlite3.Connection):
    """A pysqlite connection that gives its writer turn back as soon as SQLite has ended the
    transaction: after ``COMMIT`` or ``ROLLBACK`` (the pool's reset on return included) or when
    the connection closes, whichever comes first; a commit then wakes the checkpointer."""

    _turn: _WriterQueue | None = None
    _checkpointer: _WalCheckpointer | None = None

    def hold_turn(self, queue: _WriterQueue) -> None:
        self._turn = queue

    def give_back_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.leave()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_back_turn()
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_back_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_back_turn()


def _configure_sqlite(
    engine: Engine, *, writers: _WriterQueue, checkpointer: _WalCheckpointer | None
) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_WAIT_SECONDS * 1000)}")
        if checkpointer is not None and isinstance(dbapi_conn, _QueuedConnection):
            cursor.execute(f"PRAGMA wal_autocheckpoint={SAFETY_AUTOCHECKPOINT_PAGES}")
            dbapi_conn._checkpointer = checkpointer
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        raw = conn.connection.dbapi_connection
        queued = raw if mode == "IMMEDIATE" and isinstance(raw, _QueuedConnection) else None
        grant = _granted_turn.get()
        if grant is not None and (queued is None or grant.queue is not writers or grant.used):
            grant = None
        if grant is not None and queued is not None:
            # the turn is ours already; SQLite's own lock (another process's) is not waited for
            grant.used = True
            queued.hold_turn(writers)
            try:
                queued.execute("PRAGMA busy_timeout=0")
                try:
                    conn.exec_driver_sql(f"BEGIN {mode}")
                finally:
                    queued.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_WAIT_SECONDS * 1000)}")
            except BaseException:
                queued.give_back_turn()
                raise
            return
        if queued is not None:
            _warn_on_event_loop_thread()
            if not writers.enter(timeout=SQLITE_LOCK_WAIT_SECONDS):
                raise OperationalError(
                    f"BEGIN {mode}",
                    None,
                    sqlite3.OperationalError(
                        "database is locked (waited "
                        f"{SQLITE_LOCK_WAIT_SECONDS:.0f} s for this process's other writers)"
                    ),
                )
            queued.hold_turn(writers)
        try:
            conn.exec_driver_sql(f"BEGIN {mode}")
        except BaseException:
            if queued is not None:
                queued.give_back_turn()
            raise


_warned_loop_thread = False


def _warn_on_event_loop_thread() -> None:
    """Say (once) where a write transaction began on the event loop's thread: a request's
    transaction spans several hops of the loop (auth, route, commit), so a writer waiting for
    its turn there waits for a commit only the loop can run, and everything stalls until the
    wait gives up. Write from a worker thread (``asyncio.to_thread``) instead."""
    global _warned_loop_thread
    if _warned_loop_thread:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    _warned_loop_thread = True
    log.warning(
        "a SQLite write transaction began on the event loop's thread; "
        "run it in a worker thread (asyncio.to_thread)",
        stack_info=True,
    )


def sqlite_memory_engine() -> Engine:
    """A throwaway in-memory engine (used by migration checks)."""
    return create_engine("sqlite://", poolclass=NullPool)
