"""``PostgresLogStore``: the log store every replica reads, in the platform's PostgreSQL database.

Why: with several replicas (issue 21) only the monitoring leader collects container lines; with
a store per process a follower's log API showed nothing it had not read live. Here the leader
writes into ``log_lines`` (migration 0015) and every replica reads the same rows, with the same
contract as ``SqliteLogStore`` (``gaia.monitor.logs.store.LogStore``): pages newest first with
the same cursors, the same filters and limits, the same RE2 regex scan with its row and time
budget, ``follow()``, and the same bounds (a share per source, a total, and an age).

What flows in: batches from the collector (the leader) and from each replica's
``SystemLogHandler`` (its own records, redacted). What flows out: pages and followed batches,
on any replica.

**One table, three indexes, no day partitions.** Partitioning by day makes retention by age a
``DROP TABLE`` of a partition, but the store's main bounds are by *count* (at most
``max_lines_per_source`` per instance, at most ``max_lines`` in all, 2 000 000 by default):
those are row deletes in any layout. Partitions would also force ``at`` into the primary key
(``id`` alone could no longer be unique by constraint, and ``follow`` resumes by id), turn a
page of one app into an index walk per partition, and need a loop that creates tomorrow's
partition before midnight. At a few million rows one table with ``(source, at, id)`` and
``(grp, at, id)`` B-trees (the pages, as in SQLite) and a BRIN index on ``at`` (retention by
age; lines arrive roughly in time order, so a few pages of BRIN find the old blocks and cost
nothing on insert) serves every read; retention by age deletes in batches of
``EXPIRE_BATCH_ROWS`` so that no transaction holds the writers up for long, and autovacuum
reclaims the space.

**Writers take turns.** Every write runs under one transaction-level advisory lock
(``pg_advisory_xact_lock``). That makes the per-source counters (``log_sources.lines``, so the
bounds need no ``count(*)``) exact across replicas, and it makes ids commit in order: a
follower that has read up to ``max(id)`` can never later see a smaller id commit, so
``follow(after_id=...)`` misses nothing. Writes are batches (the collector writes once a pass,
the system handler every 200 ms), so the lock is taken a few times a second, not per line.

**Search.** A substring of ASCII is ``ILIKE`` in SQL (ASCII case folding, like SQLite's
``LIKE``). A regular expression is *not* given to PostgreSQL's backtracking-free but unbounded
regex engine: as in SQLite it is compiled by RE2 (``compile_search``: length cap, no
backreferences or lookaround) and run in Python over pages of the selection's rows within
``REGEX_SCAN_ROWS`` rows and ``REGEX_SCAN_SECONDS`` (``scan_rows``). A non-ASCII substring
takes the same scan with Python's ``casefold`` (PostgreSQL's ``lower`` depends on the
database's collation; the answer must not). Text is stored as given except that NUL and
unencodable characters, which PostgreSQL's ``text`` cannot hold, become U+FFFD.

**Followers across replicas.** A write ends with ``pg_notify('gaia_log_lines')``; each store
with followers holds one ``LISTEN`` connection in a thread, and every notification wakes its
followers, who read at most twice a second (``Followers``). While that connection is down the
followers are woken every second instead (polling), so a stream never stalls for good.

The store opens its own small connection pool: a burst of log reads or a long regex scan must
not take the connections the API's sessions and the fenced loops need.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gaia.domain.errors import InvalidRequest
from gaia.monitor.logs import store as common
from gaia.monitor.logs.store import (
    DEFAULT_LIMIT,
    FOLLOW_BATCH_ROWS,
    MAX_LIMIT,
    Followers,
    LogEntry,
    LogFilter,
    LogPage,
    LogSelector,
    LogSource,
    Row,
    SourceKind,
    StoredLine,
    cut_page,
    decode_cursor,
    encode_cursor,
    follower_batch,
    scan_rows,
    stored_lines,
)

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the writers ("gaialogs" in ASCII): any 64-bit number no other part
# of Gaia takes
WRITE_LOCK_KEY = 0x6761_6961_6C6F_6773
NOTIFY_CHANNEL = "gaia_log_lines"
EXPIRE_BATCH_ROWS = 10_000
LISTEN_POLL_S = 0.5  # how often the listener looks whether the store is closing
POLL_WITHOUT_LISTEN_S = 1.0  # followers' wake-up while the LISTEN connection is down

_COLUMNS = "id, source, at, stream, level, logger, text"


def _storable(text: str) -> str:
    """``text`` as PostgreSQL can hold it: no NUL, valid UTF-8 (lone surrogates replaced)."""
    text = common._clip(text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


class PostgresLogStore(common.AsyncLogStoreBase):
    """See the module docstring. ``url`` is the platform's SQLAlchemy URL
    (``postgresql+psycopg://...``); the tables come from the platform's migrations."""

    def __init__(
        self,
        url: str,
        *,
        max_lines: int,
        max_lines_per_source: int | None = None,
        pool_size: int = 4,
    ) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.max_lines = max_lines
        self.max_lines_per_source = min(
            max_lines,
            max_lines_per_source
            if max_lines_per_source is not None
            else max(1_000, max_lines // 20),
        )
        parsed = make_url(url)
        self._location = f"{parsed.render_as_string(hide_password=True)} (table log_lines)"
        self._conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        # writers take turns under a lock: two connections are plenty
        self._engine: Engine = create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
        # readers see each statement's committed rows, no transaction stays open between them;
        # an engine of its own, so no checkout pays for switching the isolation level
        self._reads: Engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
        )
        self._source_of: dict[int, LogSource] = {}  # ids are never reused: safe to keep
        self._source_of_lock = threading.Lock()
        self._followers = Followers()
        self._listener: threading.Thread | None = None
        self._listener_stop = threading.Event()
        self._listener_lock = threading.Lock()

    @property
    def location(self) -> str:
        return self._location

    # ------------------------------------------------------------ writing

    def append(self, entries: Sequence[LogEntry]) -> int:
        """Write lines (one transaction, under the writers' lock), trim what went over the
        bounds, notify every replica's followers. Returns the number of lines written."""
        if not entries:
            return 0
        with self._engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            ids = self._ids(conn, {entry.source for entry in entries})
            columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
            added: Counter[int] = Counter()
            for entry in entries:
                group_id, source_id = ids[entry.source]
                added[source_id] += 1
                values = (
                    group_id,
                    source_id,
                    common._micros(entry.at),
                    entry.stream,
                    entry.level,
                    entry.logger,
                    _storable(entry.text),
                )
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
            # unnest keeps the order of the arrays: ids follow the order of ``entries``
            conn.exec_driver_sql(
                "INSERT INTO log_lines (grp, source, at, stream, level, logger, text) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], "
                "%s::int[], %s::text[], %s::text[])",
                columns,
            )
            self._add_counts(conn, added)
            self._trim_sources(conn, list(added))
            self._trim_total(conn)
            conn.exec_driver_sql("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        self._followers.wake_all()
        return len(entries)

    def _ids(
        self, conn: Connection, sources: Iterable[LogSource]
    ) -> dict[LogSource, tuple[int, int]]:
        """(group id, source id) of each source, created where missing. Not cached between
        writes: another replica's retention may have deleted an emptied source meanwhile, and
        under the writers' lock these four statements are cheap and always right."""
        sources = list(sources)
        keys = sorted({(s.kind.value, s.cluster, s.namespace, s.app) for s in sources})
        key_columns = [list(column) for column in zip(*keys, strict=True)]
        conn.exec_driver_sql(
            "INSERT INTO log_groups (kind, cluster, namespace, app) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
            "ON CONFLICT DO NOTHING",
            tuple(key_columns),
        )
        groups = {
            (kind, cluster, namespace, app): gid
            for gid, kind, cluster, namespace, app in conn.exec_driver_sql(
                "SELECT g.id, g.kind, g.cluster, g.namespace, g.app FROM log_groups g "
                "JOIN unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                "AS u(kind, cluster, namespace, app) ON g.kind = u.kind "
                "AND g.cluster = u.cluster AND g.namespace = u.namespace AND g.app = u.app",
                tuple(key_columns),
            )
        }
        wanted = sorted(
            {(groups[(s.kind.value, s.cluster, s.namespace, s.app)], s.instance) for s in sources}
        )
        group_ids, instances = [g for g, _ in wanted], [i for _, i in wanted]
        conn.exec_driver_sql(
            "INSERT INTO log_sources (grp, instance, lines) "
            "SELECT g, i, 0 FROM unnest(%s::bigint[], %s::text[]) AS u(g, i) "
            "ON CONFLICT DO NOTHING",
            (group_ids, instances),
        )
        found = {
            (grp, instance): sid
            for sid, grp, instance in conn.exec_driver_sql(
                "SELECT s.id, s.grp, s.instance FROM log_sources s "
                "JOIN unnest(%s::bigint[], %s::text[]) AS u(g, i) "
                "ON s.grp = u.g AND s.instance = u.i",
                (group_ids, instances),
            )
        }
        ids: dict[LogSource, tuple[int, int]] = {}
        for source in sources:
            gid = groups[(source.kind.value, source.cluster, source.namespace, source.app)]
            ids[source] = (gid, found[(gid, source.instance)])
        with self._source_of_lock:
            for source, (_, sid) in ids.items():
                self._source_of[sid] = source
        return ids

    @staticmethod
    def _add_counts(conn: Connection, delta: Counter[int]) -> None:
        """``log_sources.lines += delta`` (a negative delta for deletions)."""
        changed = [(sid, n) for sid, n in delta.items() if n]
        if not changed:
            return
        conn.exec_driver_sql(
            "UPDATE log_sources s SET lines = s.lines + d.n "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS d(id, n) WHERE s.id = d.id",
            ([sid for sid, _ in changed], [n for _, n in changed]),
        )

    def _trim_sources(self, conn: Connection, touched: list[int]) -> None:
        """Cut every source written to that is 10 % over its cap back to the cap (its newest
        lines by time stay)."""
        cap = self.max_lines_per_source
        slack = max(1, int(cap * common.TRIM_SLACK))
        over = conn.exec_driver_sql(
            "SELECT id FROM log_sources WHERE id = ANY(%s) AND lines > %s",
            (touched, cap + slack),
        ).fetchall()
        for (source_id,) in over:
            boundary = conn.exec_driver_sql(
                "SELECT at, id FROM log_lines WHERE source = %s ORDER BY at DESC, id DESC "
                "LIMIT 1 OFFSET %s",
                (source_id, cap - 1),
            ).fetchone()
            if boundary is None:  # the counter was off (a line deleted by hand?): recount
                conn.exec_driver_sql(
                    "UPDATE log_sources SET lines = "
                    "(SELECT count(*) FROM log_lines WHERE source = %s) WHERE id = %s",
                    (source_id, source_id),
                )
                continue
            gone = conn.exec_driver_sql(
                "DELETE FROM log_lines WHERE source = %s AND (at, id) < (%s, %s)",
                (source_id, boundary[0], boundary[1]),
            ).rowcount
            self._add_counts(conn, Counter({source_id: -gone}))

    def _trim_total(self, conn: Connection) -> None:
        """Past ``max_lines`` by 10 %: delete the oldest written lines down to ``max_lines``."""
        slack = max(1, int(self.max_lines * common.TRIM_SLACK))
        total = conn.exec_driver_sql("SELECT coalesce(sum(lines), 0) FROM log_sources").scalar()
        total = int(total or 0)
        if total <= self.max_lines + slack:
            return
        row = conn.exec_driver_sql(
            "SELECT id FROM log_lines ORDER BY id LIMIT 1 OFFSET %s", (total - self.max_lines,)
        ).fetchone()
        if row is None:  # the counters were off: count again
            conn.exec_driver_sql(
                "UPDATE log_sources s SET lines = "
                "(SELECT count(*) FROM log_lines l WHERE l.source = s.id)"
            )
            return
        gone = conn.exec_driver_sql(
            "WITH gone AS (DELETE FROM log_lines WHERE id < %s RETURNING source) "
            "SELECT source, count(*) FROM gone GROUP BY source",
            (row[0],),
        ).fetchall()
        self._add_counts(conn, Counter({sid: -n for sid, n in gone}))

    def expire(self, *, before: dt.datetime) -> int:
        """Delete the lines older than ``before``, ``EXPIRE_BATCH_ROWS`` per transaction (so a
        day's worth never holds the writers up), then the sources and groups left empty; then
        refresh the table's statistics (``_analyze``)."""
        cutoff = common._micros(before)
        deleted = 0
        while True:
            with self._engine.begin() as conn:
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
                gone = conn.exec_driver_sql(
                    "WITH gone AS (DELETE FROM log_lines WHERE id IN "
                    "(SELECT id FROM log_lines WHERE at < %s LIMIT %s) RETURNING source) "
                    "SELECT source, count(*) FROM gone GROUP BY source",
                    (cutoff, EXPIRE_BATCH_ROWS),
                ).fetchall()
                batch = int(sum(n for _, n in gone))
                self._add_counts(conn, Counter({sid: -n for sid, n in gone}))
                if batch < EXPIRE_BATCH_ROWS:
                    conn.exec_driver_sql(
                        "DELETE FROM log_sources s WHERE s.lines <= 0 AND NOT EXISTS "
                        "(SELECT 1 FROM log_lines l WHERE l.source = s.id)"
                    )
                    conn.exec_driver_sql(
                        "DELETE FROM log_groups g WHERE NOT EXISTS "
                        "(SELECT 1 FROM log_sources s WHERE s.grp = g.id)"
                    )
            deleted += batch
            if batch < EXPIRE_BATCH_ROWS:
                break
        self._analyze()
        return deleted

    def _analyze(self) -> None:
        """Fresh planner statistics of ``log_lines``. Without them (a table filled faster than
        autovacuum's next look) PostgreSQL guesses a group holds a few rows and sorts all of an
        app's lines for a page instead of walking ``(grp, at, id)`` backwards: 100 ms instead of
        1 ms at 300,000 lines (bench/logs.py). The retention pass is the store's one periodic
        task, so it refreshes them; ANALYZE samples a fixed number of rows, whatever the size."""
        try:
            with self._reads.connect() as conn:
                conn.exec_driver_sql("ANALYZE log_lines")
        except SQLAlchemyError as exc:  # autovacuum will do it later
            log.debug("log store: ANALYZE log_lines failed: %s", exc)

    # ------------------------------------------------------------ reading

    def stats(self) -> dict[str, int]:
        with self._reads.connect() as conn:
            sources, lines = conn.exec_driver_sql(
                "SELECT count(*), coalesce(sum(lines), 0) FROM log_sources WHERE lines > 0"
            ).one()
            last_id = self._last_id(conn)
        return {
            "lines": int(lines),
            "sources": int(sources),
            "last_id": last_id,
            "max_lines": self.max_lines,
            "max_lines_per_source": self.max_lines_per_source,
        }

    def count(self, source: LogSource) -> int:
        """Lines held for one source."""
        with self._reads.connect() as conn:
            value = conn.exec_driver_sql(
                "SELECT s.lines FROM log_sources s JOIN log_groups g ON g.id = s.grp "
                "WHERE g.kind = %s AND g.cluster = %s AND g.namespace = %s AND g.app = %s "
                "AND s.instance = %s",
                (source.kind.value, source.cluster, source.namespace, source.app, source.instance),
            ).scalar()
        return int(value or 0)

    def last_id(self) -> int:
        with self._reads.connect() as conn:
            return self._last_id(conn)

    @staticmethod
    def _last_id(conn: Connection) -> int:
        # committed rows only: ids commit in order (the writers' lock), so nothing at or below
        # this id can still appear
        return int(conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM log_lines").scalar() or 0)

    def has_lines(self, selector: LogSelector) -> bool:
        with self._reads.connect() as conn:
            column, ids, _ = self._resolve(conn, selector)
            if not ids:
                return False
            clause, params = _in(column, ids)
            row = conn.exec_driver_sql(
                f"SELECT 1 FROM log_lines WHERE {clause} LIMIT 1",  # noqa: S608
                tuple(params),
            ).fetchone()
            return row is not None

    def newest(self, source: LogSource) -> tuple[dt.datetime, set[str]] | None:
        """The time of a source's newest line and the texts written at that instant."""
        selector = LogSelector(
            source.kind,
            cluster=source.cluster,
            namespace=source.namespace,
            app=source.app,
            instance=source.instance,
        )
        with self._reads.connect() as conn:
            _, ids, _ = self._resolve(conn, selector)
            if not ids:
                return None
            at_us = conn.exec_driver_sql(
                "SELECT max(at) FROM log_lines WHERE source = %s", (ids[0],)
            ).scalar()
            if at_us is None:
                return None
            texts = {
                text
                for (text,) in conn.exec_driver_sql(
                    "SELECT text FROM log_lines WHERE source = %s AND at = %s", (ids[0], at_us)
                )
            }
            return common._from_micros(at_us), texts

    def query(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> LogPage:
        """One page, newest first (blocking; ``read()`` is the async form)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
        filt = filt or LogFilter()
        matcher = filt.matcher()
        position = decode_cursor(cursor) if cursor is not None else None
        with self._reads.connect() as conn:
            column, ids, last_id = self._resolve(conn, selector)
            if not ids:
                return LogPage(lines=[], next_cursor=None, last_id=last_id)
            where, params, in_sql = _conditions(column, ids, filt)
            where.append("id <= %s")
            params.append(last_id)

            def fetch(after: tuple[int, int] | None, batch: int) -> list[Row]:
                clauses, args = list(where), list(params)
                if after is not None:
                    clauses.append("(at, id) < (%s, %s)")
                    args += [after[0], after[1]]
                rows = conn.exec_driver_sql(
                    f"SELECT {_COLUMNS} FROM log_lines WHERE {' AND '.join(clauses)} "  # noqa: S608
                    "ORDER BY at DESC, id DESC LIMIT %s",
                    (*args, batch),
                ).fetchall()
                return [tuple(row) for row in rows]

            if in_sql:
                rows, nxt = cut_page(fetch(position, limit + 1), limit=limit)
                return LogPage(lines=self._lines(conn, rows), next_cursor=nxt, last_id=last_id)

            def fetch_from_cursor(after: tuple[int, int] | None, batch: int) -> list[Row]:
                return fetch(after if after is not None else position, batch)

            found, stop = scan_rows(fetch=fetch_from_cursor, matcher=matcher, limit=limit)
            return LogPage(
                lines=self._lines(conn, found),
                next_cursor=encode_cursor(*stop) if stop is not None else None,
                last_id=last_id,
            )

    def lines_after(
        self,
        selector: LogSelector,
        filt: LogFilter | None,
        *,
        after_id: int,
        max_rows: int = FOLLOW_BATCH_ROWS,
    ) -> tuple[list[StoredLine], int, bool]:
        """Lines written after ``after_id`` that match, oldest first: (lines, the last id
        examined, whether more rows may follow). Examines at most ``max_rows`` rows."""
        filt = filt or LogFilter()
        matcher = filt.matcher()
        with self._reads.connect() as conn:
            # the ceiling is read before the lines: a line written meanwhile comes next time
            column, ids, ceiling = self._resolve(conn, selector)
            if not ids:
                return [], max(after_id, ceiling), False
            where, params, _ = _conditions(column, ids, filt)
            where.append("id > %s AND id <= %s")
            params += [after_id, ceiling]
            rows = conn.exec_driver_sql(
                f"SELECT {_COLUMNS} FROM log_lines WHERE {' AND '.join(where)} "  # noqa: S608
                "ORDER BY id LIMIT %s",
                (*params, max_rows),
            ).fetchall()
            kept, last, more = follower_batch(
                rows, matcher=matcher, after_id=after_id, ceiling=ceiling, max_rows=max_rows
            )
            return self._lines(conn, kept), last, more

    # ------------------------------------------------------------ other replicas' writes

    def _before_follow(self) -> None:
        """Other replicas' writes wake this one's followers (LISTEN), from the first follower on."""
        self._ensure_listener()

    def _ensure_listener(self) -> None:
        with self._listener_lock:
            if self._listener is not None and self._listener.is_alive():
                return
            self._listener_stop = threading.Event()
            self._listener = threading.Thread(
                target=self._listen,
                args=(self._listener_stop,),
                name="gaia-log-listener",
                daemon=True,
            )
            self._listener.start()

    def _listen(self, stop: threading.Event) -> None:
        """LISTEN for writes (any replica's) and wake the followers; poll while it cannot."""
        while not stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._followers.wake_all()  # lines may have come while nobody listened
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=LISTEN_POLL_S, stop_after=1):
                            self._followers.wake_all()
            except psycopg.Error as exc:
                log.debug("log store: LISTEN %s failed (%s); polling", NOTIFY_CHANNEL, exc)
                self._followers.wake_all()
                stop.wait(POLL_WITHOUT_LISTEN_S)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """End every follower, stop listening, close the pool (reopened on the next use)."""
        self._followers.end_all()
        with self._listener_lock:
            listener, self._listener = self._listener, None
            self._listener_stop.set()
        if listener is not None:
            listener.join(timeout=LISTEN_POLL_S + 5)
        self._engine.dispose()
        self._reads.dispose()

    # ------------------------------------------------------------ helpers

    def _resolve(self, conn: Connection, selector: LogSelector) -> tuple[str, list[int], int]:
        """The column to filter on (``source`` or ``grp``), the ids the selector names, and the
        newest committed id (``_last_id``), in one round trip: a page costs three (this, the
        lines, and at times the sources' names), which is what a busy server makes slow."""
        clauses = ["g.kind = %s", "g.namespace = %s", "g.app = %s"]
        params: list[Any] = [selector.kind.value, selector.namespace, selector.app]
        if selector.cluster is not None:
            clauses.append("g.cluster = %s")
            params.append(selector.cluster)
        if selector.instance is None:
            column, ids_sql = "grp", "SELECT g.id FROM log_groups g"
        else:
            column = "source"
            ids_sql = "SELECT s.id FROM log_sources s JOIN log_groups g ON g.id = s.grp"
            clauses.append("s.instance = %s")
            params.append(selector.instance)
        last_id, ids = conn.exec_driver_sql(
            "SELECT (SELECT coalesce(max(id), 0) FROM log_lines), "  # noqa: S608
            f"ARRAY({ids_sql} WHERE {' AND '.join(clauses)} ORDER BY 1)",
            tuple(params),
        ).one()
        return column, [int(i) for i in ids], int(last_id)

    def _lines(self, conn: Connection, rows: Sequence[Row]) -> list[StoredLine]:
        with self._source_of_lock:
            known = dict(self._source_of)
        missing = sorted({row[1] for row in rows} - set(known))
        if missing:
            found = {}
            for sid, kind, cluster, namespace, app, instance in conn.exec_driver_sql(
                "SELECT s.id, g.kind, g.cluster, g.namespace, g.app, s.instance "
                "FROM log_sources s JOIN log_groups g ON g.id = s.grp WHERE s.id = ANY(%s)",
                (missing,),
            ):
                found[sid] = LogSource(SourceKind(kind), cluster, namespace, app, instance)
            known.update(found)
            with self._source_of_lock:
                self._source_of.update(found)
        return stored_lines(rows, known)


def _in(column: str, ids: list[int]) -> tuple[str, list[Any]]:
    # one id as ``=``: PostgreSQL walks an index in order for ``col = x`` but sorts for
    # ``col = ANY(array)``, and a page of one app or instance is the common case
    if len(ids) == 1:
        return f"{column} = %s", [ids[0]]
    return f"{column} = ANY(%s)", [ids]


def _conditions(column: str, ids: list[int], filt: LogFilter) -> tuple[list[str], list[Any], bool]:
    """The WHERE clauses of a filter, and whether they are the whole filter (False: the text
    condition is left to ``LineMatcher`` over a bounded scan)."""
    clause, params = _in(column, ids)
    where = [clause]
    if filt.since is not None:
        where.append("at >= %s")
        params.append(common._micros(filt.since))
    if filt.until is not None:
        where.append("at < %s")
        params.append(common._micros(filt.until))
    if filt.stream is not None:
        where.append("stream = %s")
        params.append(filt.stream)
    if filt.level:
        where.append("level >= %s")
        params.append(filt.level)
    if filt.logger:
        where.append("(logger = %s OR logger LIKE %s ESCAPE '\\')")
        params += [filt.logger, common._like_pattern(filt.logger)[1:-1] + ".%"]
    in_sql = True
    if filt.q:
        if filt.regex or not filt.q.isascii():
            in_sql = False
        else:
            where.append("text ILIKE %s ESCAPE '\\'")
            params.append(common._like_pattern(filt.q))
    return where, params, in_sql
