"""``CommitClearedCache``: answers read from the store moments ago, forgotten when this replica
commits a change that could make them wrong, and after ``ttl_seconds`` in any case.

A hot path that reads the same few rows on every request (a caller's principal, the cluster an
agent call is for) keeps its answer here by key. How long a change takes to reach it:

- on this replica, at once: ``watch(db, changed=...)`` marks every session whose flush (or bulk
  UPDATE/DELETE on one of ``bulk``'s tables) ``changed`` says matters, and clears the whole
  cache right after that session commits. A lookup that read the old rows before such a commit
  cannot put its stale answer back: ``put`` takes the ``generation`` its lookup began in and
  drops the answer if a clear came since;
- on another replica (several share one PostgreSQL), within ``ttl_seconds``: nothing tells that
  replica's cache, so an entry lives no longer than that. A generation counter in the store
  would show the change at once, but reading it is a query per request again, the cost the
  cache is there to remove.

Failed lookups are for the caller not to ``put``. Bounded: ``max_entries``, least recently used
first out. Thread-safe: sync routes run in a thread pool. ``ttl_seconds`` 0 turns it off.
Users: ``gaia.store.identity.PrincipalCache`` and the P2P routes' cluster lookup
(``gaia.api.routes.p2p``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import ORMExecuteState, Session

from gaia.store.database import Database

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MARKS = itertools.count()


class CommitClearedCache(Generic[K, V]):
    """Values by key, each for ``ttl_seconds`` at most; see the module docstring."""

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # key -> (stale at, value)
        # bumped by every clear: a lookup that began before one may not store its answer
        self.generation = 0
        # the session.info flag of this cache (two caches may watch one database)
        self._mark = f"gaia.cache.{next(_MARKS)}"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: K, value: V, *, generation: int) -> None:
        """Keep ``value``, read by a lookup that began in ``generation``, unless the cache was
        cleared since (the lookup may have read rows that have changed)."""
        if self.ttl_seconds <= 0:
            return
        stale_at = self._clock() + self.ttl_seconds
        with self._lock:
            if generation != self.generation:
                return
            self._entries[key] = (stale_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def watch(
        self,
        db: Database,
        *,
        changed: Callable[[Session], bool],
        bulk: tuple[type, ...] = (),
    ) -> None:
        """Clear the cache after each commit on ``db`` of a session whose flush ``changed``
        says matters (it looks at ``session.new``, ``dirty``, ``deleted``), or that ran a bulk
        UPDATE or DELETE on one of ``bulk``'s mapped classes (no object passes a flush then)."""
        mark = self._mark

        def after_flush(session: Session, _flush_context: Any) -> None:
            if not session.info.get(mark) and changed(session):
                session.info[mark] = True

        def on_execute(state: ORMExecuteState) -> None:
            mapper = state.bind_mapper
            bulk_change = state.is_update or state.is_delete
            if bulk_change and mapper is not None and mapper.class_ in bulk:
                state.session.info[mark] = True

        def after_commit(session: Session) -> None:
            if session.info.pop(mark, False):
                self.clear()

        def after_rollback(session: Session, _previous: Any = None) -> None:
            session.info.pop(mark, None)

        db.listen_sessions("after_flush", after_flush)
        db.listen_sessions("do_orm_execute", on_execute)
        db.listen_sessions("after_commit", after_commit)
        db.listen_sessions("after_rollback", after_rollback)
