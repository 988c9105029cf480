"""Engine and sessions for SQLite (the embedded default) and PostgreSQL.

Two kinds of unit of work:

- ``read_session()``: a plain transaction. On SQLite in WAL mode readers never block writers.
- ``write_session()``: a transaction that intends to write. On SQLite it starts with
  ``BEGIN IMMEDIATE``, taking the database's write lock up front. Without it, two transactions
  that both read and then write would collide on SQLite's lock upgrade and one would fail with
  "database is locked" instead of waiting; with it, writers queue (``busy_timeout``) and quota
  admission reads a value nobody else can change before it commits. PostgreSQL needs no such
  trick: rows that must not change under us are locked with ``SELECT ... FOR UPDATE``.

pysqlite's own transaction handling is switched off (``isolation_level = None``) so the BEGIN we
emit is the one that runs (the recipe from SQLAlchemy's SQLite dialect documentation).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from gaia.store.leases import check_fence


class Database:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=40, pool_pre_ping=True, pool_timeout=30)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._reader = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            bind=self.engine.execution_options(sqlite_begin="IMMEDIATE"),
            expire_on_commit=False,
        )
        # a leader's loop writes only while it still leads (gaia.store.leases, fencing)
        event.listen(self._writer, "before_commit", check_fence)

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

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def sqlite_memory_engine() -> Engine:
    """A throwaway in-memory engine (used by migration checks)."""
    return create_engine("sqlite://", poolclass=NullPool)
