"""The log store's contract (``LogStore``), the bounded embedded store (``SqliteLogStore``), and the
handler that writes the platform's own logs into a store.

Two stores keep the same contract: ``SqliteLogStore`` here, for a platform on SQLite (one
process), and ``PostgresLogStore`` (``gaia.monitor.logs.postgres``), chosen when the platform
database is PostgreSQL so that every replica reads the lines the monitoring leader collected.
The values, the filter, the RE2 matcher, the cursors, the regex scan, a page's cut, a follower's
batch, rows read back as lines and the followers live here once and both stores use them; the
tests of ``tests/monitor/logs`` run on both.

What flows in: container lines of Gaia instances (``LogCollector`` in ``gaia.monitor.logs.
collector`` copies them from each cluster's provider) and the platform's own log records
(``SystemLogHandler``, redacted). What flows out: pages of lines for one instance, for every
instance of an app, or for the platform ("system"), newest first, filtered by time range, stream,
a substring or a regular expression, level and logger; and ``follow()``, an async iterator of
the lines written after it started.

Why its own SQLite file (``<data_dir>/logs.db``) and not the platform's SQLite database: log lines
churn (millions written and trimmed a day), are disposable, and must never hold the platform
database's single write lock. WAL mode lets readers (the API) run
beside the one writer. The schema is versioned with ``PRAGMA user_version``; a file of another
version is recreated empty, as losing old log lines is acceptable and a migration is not.

Layout: ``log_groups`` (kind, cluster, namespace, app) and ``log_sources`` (a group's
instances; the system has one group and one source) keep the lines small; ``log_lines`` holds
``(grp, source, at, stream, level, logger, text)``, indexed by ``(source, at)`` and
``(grp, at)`` so that a page of one instance or of one app walks one index backwards.

Bounds (the store never grows past ``max_lines`` by more than 10 %):

- **Per source**: one instance (or the platform's own log) keeps at most
  ``max_lines_per_source`` lines, by default 5 % of ``max_lines`` (at least 1 000): a chatty
  instance loses its *own* oldest lines and cannot evict everybody else's.
- **In total**: past ``max_lines``, the oldest written lines go, whoever wrote them.
- Both trims are amortised: they run when a bound is exceeded by 10 % and cut back to it, so a
  trim is one ranged DELETE per 10 % of churn, not one per write. Lines are clipped to
  ``MAX_TEXT_CHARS``.
- **By age**: ``expire(before=...)`` deletes the lines older than a time; the ``LogRetention``
  loop (``gaia.monitor.logs.retention``) calls it on the monitoring leader.

Every SQLite call is synchronous and thread-safe (one write connection behind a lock, a pool
of read connections); the ``async`` methods run them in worker threads so that the event loop
never waits on the disk. Followers are woken by ``append`` (``call_soon_threadsafe``) and read
at most twice a second each, however fast lines arrive.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, cast

import re2

from gaia.domain.errors import InvalidRequest
from gaia.domain.redaction import redact, redact_url_paths

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 16_384  # longer lines are clipped: a page must stay small
DEFAULT_LIMIT = 200
MAX_LIMIT = 5_000
MAX_QUERY_CHARS = 256  # substring or regular expression
# Regular expressions (RE2: linear time) run over pages of rows; one request examines at most
# this many rows and then answers with what it found and a cursor to go on from.
REGEX_SCAN_ROWS = 50_000
REGEX_SCAN_SECONDS = 2.0  # and for at most this long (then the cursor goes on from there)
SCAN_PAGE_ROWS = 1_000
FOLLOW_MIN_GAP_S = 0.5  # a follower reads at most twice a second
FOLLOW_BATCH_ROWS = 1_000
TRIM_SLACK = 0.10

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


# ---------------------------------------------------------------- values


class SourceKind(StrEnum):
    INSTANCE = "instance"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class LogSource:
    """Who wrote a line: one instance (``<app>-<id>``) of an app of a business (namespace) in a
    cluster, or the platform itself (``SYSTEM_SOURCE``)."""

    kind: SourceKind
    cluster: str = ""
    namespace: str = ""
    app: str = ""
    instance: str = ""


SYSTEM_SOURCE = LogSource(SourceKind.SYSTEM)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A line to write. ``level`` is a ``logging`` level number (0 for container lines)."""

    source: LogSource
    at: dt.datetime
    text: str
    stream: str = "stdout"
    level: int = 0
    logger: str = ""


@dataclass(frozen=True, slots=True)
class StoredLine:
    """A line read back; ``id`` grows with every write (follow resumes after one)."""

    id: int
    source: LogSource
    at: dt.datetime
    text: str
    stream: str
    level: int
    logger: str


@dataclass(frozen=True, slots=True)
class LogSelector:
    """Which sources to read: one instance, every instance of an app, or the system."""

    kind: SourceKind
    cluster: str | None = None  # None: any cluster
    namespace: str = ""
    app: str = ""
    instance: str | None = None  # None: every instance of the app

    @classmethod
    def system(cls) -> LogSelector:
        return cls(SourceKind.SYSTEM, cluster="")

    @classmethod
    def of_app(
        cls, *, cluster: str | None, namespace: str, app: str, instance: str | None = None
    ) -> LogSelector:
        return cls(
            SourceKind.INSTANCE, cluster=cluster, namespace=namespace, app=app, instance=instance
        )


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What lines to keep. ``since`` is inclusive and ``until`` exclusive; ``q`` is a substring
    (case-insensitive) or, with ``regex``, an RE2 regular expression searched case-insensitively;
    ``level`` keeps records at or above it; ``logger`` keeps that logger and its children."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    q: str = ""
    regex: bool = False
    stream: str | None = None
    level: int = 0
    logger: str = ""

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidRequest(f"{name} must carry a timezone, e.g. 2026-01-01T00:00:00Z")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidRequest("since must be earlier than until")
        if len(self.q) > MAX_QUERY_CHARS:
            raise InvalidRequest(f"q may hold at most {MAX_QUERY_CHARS} characters")
        if self.regex and not self.q:
            raise InvalidRequest("regex=true needs a pattern in q")

    def matcher(self) -> LineMatcher:
        return LineMatcher(self)


class LineMatcher:
    """A ``LogFilter`` applied in Python: the regular expression (the SQL cannot run it) and,
    for lines that never were in the store (the live fallback), everything else too."""

    def __init__(self, filt: LogFilter) -> None:
        self.filter = filt
        self.pattern = compile_search(filt.q) if filt.regex else None
        self._needle = filt.q.casefold()

    def text_matches(self, text: str) -> bool:
        if self.pattern is not None:
            try:
                return self.pattern.search(text) is not None
            except UnicodeEncodeError:  # RE2 reads UTF-8; a lone surrogate cannot be encoded
                return self.pattern.search(text.encode("utf-8", "replace").decode()) is not None
        return not self._needle or self._needle in text.casefold()

    def matches(
        self, *, at: dt.datetime, text: str, stream: str, level: int = 0, logger: str = ""
    ) -> bool:
        f = self.filter
        if f.since is not None and at < f.since:
            return False
        if f.until is not None and at >= f.until:
            return False
        if f.stream is not None and stream != f.stream:
            return False
        if level < f.level:
            return False
        if f.logger and not (logger == f.logger or logger.startswith(f.logger + ".")):
            return False
        return self.text_matches(text)


@dataclass(frozen=True, slots=True)
class LogPage:
    """Lines newest first. ``next_cursor``: pass it back for the next (older) page; None when
    there is nothing older. With a regular expression a page may come back short (even empty)
    with a cursor: the scan budget ran out first. ``last_id``: the newest line in the store when
    the page was read; ``follow(after_id=last_id)`` continues without a gap."""

    lines: list[StoredLine]
    next_cursor: str | None
    last_id: int


class LogStore(Protocol):
    """What the log API, the collector, the retention loop and the system log handler need of a
    store: ``SqliteLogStore`` (this module, one process) or ``PostgresLogStore``
    (``gaia.monitor.logs.postgres``, shared by the replicas). The plain methods block (call them
    from a worker thread); ``write``, ``read`` and ``follow`` are for the event loop."""

    max_lines: int
    max_lines_per_source: int

    @property
    def location(self) -> str:
        """Where the lines are, for messages (a file, or a database without its password)."""
        ...

    def append(self, entries: Sequence[LogEntry]) -> int: ...

    async def write(self, entries: Sequence[LogEntry]) -> int: ...

    def expire(self, *, before: dt.datetime) -> int:
        """Delete the lines older than ``before``; returns how many went."""
        ...

    def stats(self) -> dict[str, int]: ...

    def count(self, source: LogSource) -> int: ...

    def last_id(self) -> int: ...

    def has_lines(self, selector: LogSelector) -> bool: ...

    def newest(self, source: LogSource) -> tuple[dt.datetime, set[str]] | None: ...

    def query(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> LogPage: ...

    async def read(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> LogPage: ...

    def lines_after(
        self,
        selector: LogSelector,
        filt: LogFilter | None,
        *,
        after_id: int,
        max_rows: int = FOLLOW_BATCH_ROWS,
    ) -> tuple[list[StoredLine], int, bool]: ...

    def follow(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        after_id: int | None = None,
        heartbeat: float = 15.0,
    ) -> AsyncGenerator[list[StoredLine], None]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- regular expressions


class SearchPattern(Protocol):
    """A compiled user pattern: what ``LineMatcher`` needs of it (``re2``'s regexp has no stubs)."""

    def search(self, text: str) -> object | None: ...


# RE2 builds its automata within this budget; a pattern whose program does not fit is refused
# when it is compiled, and a search whose DFA cache fills falls back to RE2's NFA, which is
# slower but still linear in the line. 8 MiB is RE2's own default, written down so that it holds.
_RE2_MAX_MEM = 8 << 20


def compile_search(pattern: str) -> SearchPattern:
    """A user's regular expression, compiled by RE2 (``google-re2``), searched case-insensitively.

    Why RE2 and not Python's ``re``: ``re`` backtracks, has no timeout and holds the GIL, so one
    pattern like ``(.|.)*\\x00`` over a long line stalls every request of the platform for
    minutes. RE2 guarantees time linear in the line whatever the pattern, so no pattern needs to be
    guessed dangerous: the length cap, the clipped lines and the per-request scan budget
    (``REGEX_SCAN_ROWS``) bound the work. What RE2 cannot run in linear time it does not compile:
    backreferences and lookaround are refused here, with RE2's reason, as a 422.
    """
    if len(pattern) > MAX_QUERY_CHARS:
        raise InvalidRequest(f"a regular expression may hold at most {MAX_QUERY_CHARS} characters")
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = _RE2_MAX_MEM
    options.log_errors = False  # RE2 would print the user's pattern to stderr
    # Only "does the line match" is asked: without capture groups RE2 answers with its DFA,
    # without the much slower submatch tracking ((.*){1000} over 16 000 characters: 1 ms, not 1 s)
    options.never_capture = True
    try:
        return cast(SearchPattern, re2.compile(pattern, options))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidRequest(
            f"q is not a valid regular expression: {reason} (RE2 syntax: no backreferences "
            "or lookaround; use a substring search or a simpler pattern)"
        ) from exc


# ---------------------------------------------------------------- cursors and times


def _micros(at: dt.datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return (at - _EPOCH) // _MICROSECOND


def _from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


def encode_cursor(at_us: int, line_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at_us}.{line_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, id_text = raw.split(".")
        at_us, line_id = int(at_text), int(id_text)
        if not (-(2**62) < at_us < 2**62 and 0 <= line_id < 2**62):  # SQLite holds 64 bits
            raise ValueError("out of range")
        return at_us, line_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidRequest("cursor is not one this API returned; start again without it") from exc


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def _like_pattern(needle: str) -> str:
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _casefold_contains(text: str | None, needle: str | None) -> bool:
    return text is not None and needle is not None and needle.casefold() in text.casefold()


# ---------------------------------------------------------------- shared by both stores

Row = tuple[Any, ...]  # (id, source, at, stream, level, logger, text): both stores select these


def scan_rows(
    *,
    fetch: Callable[[tuple[int, int] | None, int], Sequence[Row]],
    matcher: LineMatcher,
    limit: int,
) -> tuple[list[Row], tuple[int, int] | None]:
    """A search the SQL cannot run (a regular expression, or a non-ASCII substring in
    PostgreSQL): ``fetch(position, batch)`` returns the next rows older than ``position`` (at, id),
    newest first; they are filtered here until ``limit`` matched, the rows end,
    ``REGEX_SCAN_ROWS`` were examined or ``REGEX_SCAN_SECONDS`` have passed (RE2 is linear in the
    line, but a big pattern over long lines still takes a while per line: the time budget bounds
    what one request can cost). Returns the matches and where a next page goes on (None: the
    rows ended)."""
    found: list[Row] = []
    scanned = 0
    position: tuple[int, int] | None = None  # (at, id) of the last row examined
    deadline = time.monotonic() + REGEX_SCAN_SECONDS
    while scanned < REGEX_SCAN_ROWS:
        batch = min(SCAN_PAGE_ROWS, REGEX_SCAN_ROWS - scanned)
        rows = fetch(position, batch)
        for row in rows:
            scanned += 1
            position = (row[2], row[0])
            if matcher.text_matches(row[6]):
                found.append(row)
                if len(found) == limit:
                    return found, position
            if time.monotonic() >= deadline:
                return found, position
        if len(rows) < batch:
            return found, None
    return found, position


def cut_page(rows: Sequence[Row], *, limit: int) -> tuple[list[Row], str | None]:
    """A page from ``limit + 1`` rows fetched newest first: the first ``limit``, and the cursor
    after the last of them where the extra row shows that older ones exist (None: none do)."""
    page = list(rows[:limit])
    more = len(rows) > limit
    return page, encode_cursor(page[-1][2], page[-1][0]) if more else None


def follower_batch(
    rows: Sequence[Sequence[Any]],
    *,
    matcher: LineMatcher,
    after_id: int,
    ceiling: int,
    max_rows: int,
) -> tuple[list[Row], int, bool]:
    """A follower's read (``lines_after``): ``rows`` have ids above ``after_id`` and at most
    ``ceiling`` (the newest id as the read began), oldest first, ``max_rows`` at most. Returns
    those that match, the last id examined and whether more rows may follow: a short read
    examined everything up to the ceiling, a full one ends at its last row."""
    if len(rows) < max_rows:
        last, more = max(after_id, ceiling), False
    else:
        last, more = rows[-1][0], True
    return [tuple(row) for row in rows if matcher.text_matches(row[6])], last, more


def stored_lines(rows: Sequence[Row], sources: Mapping[int, LogSource]) -> list[StoredLine]:
    """Rows as lines, each source named from ``sources`` (source id -> source); a source no
    longer known (trimmed away meanwhile) reads as an unnamed instance."""
    return [
        StoredLine(
            id=row[0],
            source=sources.get(row[1]) or LogSource(SourceKind.INSTANCE),
            at=_from_micros(row[2]),
            stream=row[3],
            level=row[4],
            logger=row[5],
            text=row[6],
        )
        for row in rows
    ]


@dataclass(slots=True, eq=False)  # hashed by identity
class _Waiter:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event


def _wake(waiter: _Waiter) -> None:
    with contextlib.suppress(RuntimeError):  # the follower's loop has closed
        waiter.loop.call_soon_threadsafe(waiter.event.set)


class Followers:
    """The live followers of one store. A store calls ``wake_all()`` when lines may have been
    written (its own append; for PostgreSQL also another replica's, heard by LISTEN) and
    ``end_all()`` when it closes. Each follower reads with the store's ``lines_after`` when
    woken, at most twice a second however fast lines arrive (``FOLLOW_MIN_GAP_S``)."""

    def __init__(self) -> None:
        self._waiters: set[_Waiter] = set()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by end_all(): followers of an older generation end

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiters)

    def wake_all(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            _wake(waiter)

    def end_all(self) -> None:
        with self._lock:
            self._generation += 1
        self.wake_all()

    async def follow(
        self,
        *,
        read_after: Callable[[int], tuple[list[StoredLine], int, bool]],
        last_id: Callable[[], int],
        after_id: int | None,
        heartbeat: float,
    ) -> AsyncGenerator[list[StoredLine], None]:
        """Batches from ``read_after(last)`` (lines, the last id examined, whether more may
        follow), an empty batch after ``heartbeat`` seconds without one (the caller's cue to
        show it is alive). Ends when the store closes; the caller ends it by closing it."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop=loop, event=asyncio.Event())
        with self._lock:
            generation = self._generation
            self._waiters.add(waiter)
        try:
            last = after_id if after_id is not None else await asyncio.to_thread(last_id)
            idle_since = loop.time()
            waiter.event.set()  # read once at the start: lines after ``after_id`` may exist
            while True:
                # a consumer may close the store while holding a batch, and take longer than a
                # heartbeat to do it: look before yielding again
                if self._generation != generation:
                    return
                timeout = idle_since + heartbeat - loop.time()
                if timeout <= 0:  # by the clock: lines that do not match must not starve it
                    idle_since = loop.time()
                    yield []
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), timeout=timeout)
                if self._generation != generation:
                    return
                if not waiter.event.is_set():
                    continue  # timed out: the heartbeat is due
                waiter.event.clear()  # before reading: a write after this wakes us again
                lines, last, more = await asyncio.to_thread(read_after, last)
                if more:
                    waiter.event.set()
                if lines:
                    idle_since = loop.time()
                    yield lines
                # coalesce bursts: however fast lines come, read at most twice a second
                await asyncio.sleep(FOLLOW_MIN_GAP_S)
        finally:
            with self._lock:
                self._waiters.discard(waiter)


# ---------------------------------------------------------------- the SQLite store

_SCHEMA = """
CREATE TABLE log_groups (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    cluster TEXT NOT NULL,
    namespace TEXT NOT NULL,
    app TEXT NOT NULL,
    UNIQUE (kind, cluster, namespace, app)
);
CREATE TABLE log_sources (
    id INTEGER PRIMARY KEY,
    grp INTEGER NOT NULL REFERENCES log_groups (id),
    instance TEXT NOT NULL,
    UNIQUE (grp, instance)
);
-- at: microseconds since the Unix epoch (UTC); level: a logging level number, 0 for containers
CREATE TABLE log_lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp INTEGER NOT NULL,
    source INTEGER NOT NULL,
    at INTEGER NOT NULL,
    stream TEXT NOT NULL,
    level INTEGER NOT NULL,
    logger TEXT NOT NULL,
    text TEXT NOT NULL
);
-- SQLite appends the rowid (id) to every index: (source, at, id) and (grp, at, id)
CREATE INDEX log_lines_source_at ON log_lines (source, at);
CREATE INDEX log_lines_grp_at ON log_lines (grp, at);
"""

_COLUMNS = "id, source, at, stream, level, logger, text"


class AsyncLogStoreBase(ABC):
    """The async half both stores share: ``write``, ``read`` and ``follow`` run a store's
    blocking ``append``, ``query`` and ``lines_after`` off the event loop, and ``follow`` hands
    live readers to the store's ``Followers``. A store whose lines other processes write
    (PostgreSQL) starts hearing them in ``_before_follow``."""

    _followers: Followers

    @abstractmethod
    def append(self, entries: Sequence[LogEntry]) -> int:
        raise NotImplementedError

    @abstractmethod
    def query(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> LogPage:
        raise NotImplementedError

    @abstractmethod
    def lines_after(
        self,
        selector: LogSelector,
        filt: LogFilter | None,
        *,
        after_id: int,
        max_rows: int = FOLLOW_BATCH_ROWS,
    ) -> tuple[list[StoredLine], int, bool]:
        raise NotImplementedError

    @abstractmethod
    def last_id(self) -> int:
        raise NotImplementedError

    def _before_follow(self) -> None:  # noqa: B027 (a hook: most stores need nothing here)
        """Called as a follower starts; nothing to do where only this process writes."""

    async def write(self, entries: Sequence[LogEntry]) -> int:
        return await asyncio.to_thread(self.append, entries)

    async def read(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> LogPage:
        return await asyncio.to_thread(self.query, selector, filt, limit=limit, cursor=cursor)

    async def follow(
        self,
        selector: LogSelector,
        filt: LogFilter | None = None,
        *,
        after_id: int | None = None,
        heartbeat: float = 15.0,
    ) -> AsyncGenerator[list[StoredLine], None]:
        """Batches of matching lines written after ``after_id`` (default: from now on), oldest
        first; an empty batch after ``heartbeat`` seconds without one. See ``Followers``."""
        filt = filt or LogFilter()
        filt.matcher()  # refuse a bad pattern now, not in the first read
        chosen = filt
        self._before_follow()

        def read_after(last: int) -> tuple[list[StoredLine], int, bool]:
            return self.lines_after(selector, chosen, after_id=last)

        async for batch in self._followers.follow(
            read_after=read_after, last_id=self.last_id, after_id=after_id, heartbeat=heartbeat
        ):
            yield batch


class SqliteLogStore(AsyncLogStoreBase):
    """See the module docstring. Connections open on first use; ``close()`` ends followers and
    closes them, and a later call opens them again (as SQLAlchemy's ``Engine.dispose()``)."""

    def __init__(
        self,
        path: Path,
        *,
        max_lines: int,
        max_lines_per_source: int | None = None,
    ) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.path = path
        self.max_lines = max_lines
        self.max_lines_per_source = min(
            max_lines,
            max_lines_per_source
            if max_lines_per_source is not None
            else max(1_000, max_lines // 20),
        )
        self._write_lock = threading.RLock()  # the writer and the counts
        self._cache_lock = threading.Lock()  # the id caches, which readers use too
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._groups: dict[tuple[str, str, str, str], int] = {}
        self._sources: dict[LogSource, tuple[int, int]] = {}  # -> (group id, source id)
        self._source_of: dict[int, LogSource] = {}
        self._counts: Counter[int] = Counter()  # source id -> lines
        self._total = 0
        self._last_id = 0
        self._followers = Followers()

    # ------------------------------------------------------------ opening and closing

    def _open_writer(self) -> sqlite3.Connection:
        if self._writer is not None:
            return self._writer
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            if version != 0:
                log.warning(
                    "log store %s has schema %s, not %s: starting it afresh",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                )
            conn.executescript(
                "BEGIN IMMEDIATE;"
                "DROP TABLE IF EXISTS log_lines;"
                "DROP TABLE IF EXISTS log_sources;"
                "DROP TABLE IF EXISTS log_groups;"
                f"{_SCHEMA};"
                f"PRAGMA user_version = {SCHEMA_VERSION};"
                "COMMIT;"
            )
        with self._cache_lock:
            self._groups.clear()
            self._sources.clear()
            self._source_of.clear()
        self._counts = Counter(
            dict(conn.execute("SELECT source, count(*) FROM log_lines GROUP BY source").fetchall())
        )
        self._total = sum(self._counts.values())
        self._last_id = conn.execute("SELECT coalesce(max(id), 0) FROM log_lines").fetchone()[0]
        self._writer = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.create_function("gaia_contains", 2, _casefold_contains, deterministic=True)
        return conn

    def _ensure_open(self) -> None:
        if self._writer is None:  # checked again under the lock
            with self._write_lock:
                self._open_writer()  # creates the schema before anyone reads

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        self._ensure_open()
        with self._readers_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            with self._readers_lock:
                self._readers.append(conn)
        try:
            yield conn
        finally:
            with self._readers_lock:
                if conn in self._readers:  # not closed meanwhile
                    self._idle_readers.append(conn)

    @property
    def location(self) -> str:
        return str(self.path)

    def close(self) -> None:
        """End every follower and close the connections (reopened on the next use)."""
        self._followers.end_all()
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            readers, self._readers, self._idle_readers = self._readers, [], []
        for conn in readers:
            conn.close()

    # ------------------------------------------------------------ writing

    def append(self, entries: Sequence[LogEntry]) -> int:
        """Write lines (one transaction), trim what went over the bounds, wake followers.
        Returns the number of lines written. Blocking: call it from a thread (``write()``)."""
        if not entries:
            return 0
        with self._write_lock:
            conn = self._open_writer()
            conn.execute("BEGIN IMMEDIATE")
            try:
                added: Counter[int] = Counter()
                rows = []
                for entry in entries:
                    group_id, source_id = self._ids(conn, entry.source)
                    added[source_id] += 1
                    rows.append(
                        (
                            group_id,
                            source_id,
                            _micros(entry.at),
                            entry.stream,
                            entry.level,
                            entry.logger,
                            _clip(entry.text),
                        )
                    )
                conn.executemany(
                    "INSERT INTO log_lines (grp, source, at, stream, level, logger, text) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                counts = self._counts + added
                total = self._total + len(rows)
                total -= self._trim_sources(conn, counts, added)
                total = self._trim_total(conn, counts, total)
                emptied = [sid for sid in added if counts[sid] <= 0] + [
                    sid for sid in self._counts if counts[sid] <= 0
                ]
                if emptied:
                    conn.executemany(
                        "DELETE FROM log_sources WHERE id = ?", [(s,) for s in set(emptied)]
                    )
                last_id = conn.execute("SELECT coalesce(max(id), 0) FROM log_lines").fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                # ids handed out inside the failed transaction do not exist: forget them all
                with self._cache_lock:
                    self._groups.clear()
                    self._sources.clear()
                    self._source_of.clear()
                raise
            self._counts = +counts  # drops the sources whose lines are all gone
            self._total = total
            self._last_id = max(self._last_id, last_id)
            with self._cache_lock:
                for sid in set(emptied):
                    source = self._source_of.pop(sid, None)
                    if source is not None:
                        self._sources.pop(source, None)
        self._followers.wake_all()
        return len(rows)

    def expire(self, *, before: dt.datetime) -> int:
        """Delete the lines older than ``before`` (retention by age). The file has no index on
        ``at`` alone (its schema would change, and a new schema starts the file afresh): this is
        one scan of the table, which the retention loop runs every few minutes at most."""
        cutoff = _micros(before)
        with self._write_lock:
            conn = self._open_writer()
            conn.execute("BEGIN IMMEDIATE")
            try:
                gone = conn.execute(
                    "SELECT source, count(*) FROM log_lines WHERE at < ? GROUP BY source",
                    (cutoff,),
                ).fetchall()
                deleted = conn.execute("DELETE FROM log_lines WHERE at < ?", (cutoff,)).rowcount
                counts = Counter(self._counts)
                for source_id, lines in gone:
                    counts[source_id] -= lines
                emptied = {source_id for source_id, _ in gone if counts[source_id] <= 0}
                conn.executemany("DELETE FROM log_sources WHERE id = ?", [(s,) for s in emptied])
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            self._counts = +counts
            self._total -= deleted
            with self._cache_lock:
                for source_id in emptied:
                    source = self._source_of.pop(source_id, None)
                    if source is not None:
                        self._sources.pop(source, None)
        return deleted

    def _ids(self, conn: sqlite3.Connection, source: LogSource) -> tuple[int, int]:
        with self._cache_lock:
            known = self._sources.get(source)
            key = (source.kind.value, source.cluster, source.namespace, source.app)
            group_id = self._groups.get(key)
        if known is not None:
            return known
        if group_id is None:
            conn.execute(
                "INSERT OR IGNORE INTO log_groups (kind, cluster, namespace, app) "
                "VALUES (?, ?, ?, ?)",
                key,
            )
            group_id = conn.execute(
                "SELECT id FROM log_groups WHERE kind = ? AND cluster = ? AND namespace = ? "
                "AND app = ?",
                key,
            ).fetchone()[0]
            with self._cache_lock:
                self._groups[key] = group_id
        conn.execute(
            "INSERT OR IGNORE INTO log_sources (grp, instance) VALUES (?, ?)",
            (group_id, source.instance),
        )
        source_id = conn.execute(
            "SELECT id FROM log_sources WHERE grp = ? AND instance = ?",
            (group_id, source.instance),
        ).fetchone()[0]
        with self._cache_lock:
            self._sources[source] = (group_id, source_id)
            self._source_of[source_id] = source
        return group_id, source_id

    def _trim_sources(
        self, conn: sqlite3.Connection, counts: Counter[int], touched: Counter[int]
    ) -> int:
        """Cut every source written to that is 10 % over its cap back to the cap (its newest
        lines by time stay). Returns the number of lines deleted."""
        cap = self.max_lines_per_source
        slack = max(1, int(cap * TRIM_SLACK))
        deleted = 0
        for source_id in touched:
            if counts[source_id] <= cap + slack:
                continue
            at_us, line_id = conn.execute(
                "SELECT at, id FROM log_lines WHERE source = ? ORDER BY at DESC, id DESC "
                "LIMIT 1 OFFSET ?",
                (source_id, cap - 1),
            ).fetchone()
            gone = conn.execute(
                "DELETE FROM log_lines WHERE source = ? AND at <= ? AND (at < ? OR id < ?)",
                (source_id, at_us, at_us, line_id),
            ).rowcount
            counts[source_id] -= gone
            deleted += gone
        return deleted

    def _trim_total(self, conn: sqlite3.Connection, counts: Counter[int], total: int) -> int:
        """Past ``max_lines`` by 10 %: delete the oldest written lines down to ``max_lines``."""
        slack = max(1, int(self.max_lines * TRIM_SLACK))
        if total <= self.max_lines + slack:
            return total
        row = conn.execute(
            "SELECT id FROM log_lines ORDER BY id LIMIT 1 OFFSET ?", (total - self.max_lines,)
        ).fetchone()
        if row is None:  # the counts were off (another process?): count again
            total = conn.execute("SELECT count(*) FROM log_lines").fetchone()[0]
            return total
        boundary = row[0]
        for source_id, gone in conn.execute(
            "SELECT source, count(*) FROM log_lines WHERE id < ? GROUP BY source", (boundary,)
        ).fetchall():
            counts[source_id] -= gone
        total -= conn.execute("DELETE FROM log_lines WHERE id < ?", (boundary,)).rowcount
        return total

    # ------------------------------------------------------------ reading

    # Readers never take the write lock: a long trim must not hold up the API. The counters
    # they look at are plain ints, read whole.

    def stats(self) -> dict[str, int]:
        self._ensure_open()
        return {
            "lines": self._total,
            "sources": len(self._counts),
            "last_id": self._last_id,
            "max_lines": self.max_lines,
            "max_lines_per_source": self.max_lines_per_source,
        }

    def count(self, source: LogSource) -> int:
        """Lines held for one source."""
        self._ensure_open()
        with self._cache_lock:
            known = self._sources.get(source)
        return self._counts.get(known[1], 0) if known else 0

    def last_id(self) -> int:
        self._ensure_open()
        return self._last_id

    def has_lines(self, selector: LogSelector) -> bool:
        with self._reader() as conn:
            column, ids = self._resolve(conn, selector)
            if not ids:
                return False
            marks = ",".join("?" * len(ids))
            row = conn.execute(
                f"SELECT 1 FROM log_lines WHERE {column} IN ({marks}) LIMIT 1",  # noqa: S608
                ids,
            ).fetchone()
            return row is not None

    def newest(self, source: LogSource) -> tuple[dt.datetime, set[str]] | None:
        """The time of a source's newest line and the texts written at that instant: where a
        collector resumes, and what it must not write twice."""
        selector = LogSelector(
            source.kind,
            cluster=source.cluster,
            namespace=source.namespace,
            app=source.app,
            instance=source.instance,
        )
        with self._reader() as conn:
            _, ids = self._resolve(conn, selector)
            if not ids:
                return None
            row = conn.execute(
                "SELECT max(at) FROM log_lines WHERE source = ?", (ids[0],)
            ).fetchone()
            if row is None or row[0] is None:
                return None
            texts = {
                text
                for (text,) in conn.execute(
                    "SELECT text FROM log_lines WHERE source = ? AND at = ?", (ids[0], row[0])
                )
            }
            return _from_micros(row[0]), texts

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
        last_id = self.last_id()
        with self._reader() as conn:
            column, ids = self._resolve(conn, selector)
            if not ids:
                return LogPage(lines=[], next_cursor=None, last_id=last_id)
            where, params = _conditions(column, ids, filt)
            where.append("+id <= ?")  # the unary plus keeps the planner on the (.., at) index
            params.append(last_id)
            if cursor is not None:
                at_us, line_id = decode_cursor(cursor)
                where.append("at <= ? AND (at < ? OR id < ?)")
                params += [at_us, at_us, line_id]
            if matcher.pattern is None:
                sql = (
                    f"SELECT {_COLUMNS} FROM log_lines WHERE {' AND '.join(where)} "  # noqa: S608
                    "ORDER BY at DESC, id DESC LIMIT ?"
                )
                rows = conn.execute(sql, [*params, limit + 1]).fetchall()
                page, nxt = cut_page(rows, limit=limit)
                return LogPage(lines=self._lines(conn, page), next_cursor=nxt, last_id=last_id)
            return self._scan(conn, where, params, matcher, limit, last_id)

    def _scan(
        self,
        conn: sqlite3.Connection,
        where: list[str],
        params: list[Any],
        matcher: LineMatcher,
        limit: int,
        last_id: int,
    ) -> LogPage:
        def fetch(position: tuple[int, int] | None, batch: int) -> list[Row]:
            clauses, args = list(where), list(params)
            if position is not None:
                clauses.append("at <= ? AND (at < ? OR id < ?)")
                args += [position[0], position[0], position[1]]
            return conn.execute(
                f"SELECT {_COLUMNS} FROM log_lines WHERE {' AND '.join(clauses)} "  # noqa: S608
                "ORDER BY at DESC, id DESC LIMIT ?",
                [*args, batch],
            ).fetchall()

        found, position = scan_rows(fetch=fetch, matcher=matcher, limit=limit)
        return LogPage(
            lines=self._lines(conn, found),
            next_cursor=encode_cursor(*position) if position is not None else None,
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
        ceiling = self.last_id()  # read first: a line written during the query comes next time
        with self._reader() as conn:
            column, ids = self._resolve(conn, selector)
            if not ids:
                return [], max(after_id, ceiling), False
            where, params = _conditions(column, ids, filt)
            where.append("id > ? AND id <= ?")
            # NOT INDEXED: walk the newest rowids, never a whole source's index
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM log_lines NOT INDEXED "  # noqa: S608
                f"WHERE {' AND '.join(where)} ORDER BY id LIMIT ?",
                [*params, after_id, ceiling, max_rows],
            ).fetchall()
            kept, last, more = follower_batch(
                rows, matcher=matcher, after_id=after_id, ceiling=ceiling, max_rows=max_rows
            )
            return self._lines(conn, kept), last, more

    # ------------------------------------------------------------ helpers

    def _resolve(self, conn: sqlite3.Connection, selector: LogSelector) -> tuple[str, list[int]]:
        """The column to filter on (``source`` or ``grp``) and the ids the selector names."""
        clauses = ["kind = ?", "namespace = ?", "app = ?"]
        params: list[Any] = [selector.kind.value, selector.namespace, selector.app]
        if selector.cluster is not None:
            clauses.append("cluster = ?")
            params.append(selector.cluster)
        groups = [
            gid
            for (gid,) in conn.execute(
                f"SELECT id FROM log_groups WHERE {' AND '.join(clauses)}",  # noqa: S608
                params,
            )
        ]
        if selector.instance is None or not groups:
            return "grp", groups
        marks = ",".join("?" * len(groups))
        sources = [
            sid
            for (sid,) in conn.execute(
                f"SELECT id FROM log_sources WHERE grp IN ({marks}) AND instance = ?",  # noqa: S608
                [*groups, selector.instance],
            )
        ]
        return "source", sources

    def _lines(self, conn: sqlite3.Connection, rows: Sequence[Row]) -> list[StoredLine]:
        with self._cache_lock:
            known = dict(self._source_of)
        missing = {row[1] for row in rows} - set(known)
        if missing:
            marks = ",".join("?" * len(missing))
            for sid, kind, cluster, namespace, app, instance in conn.execute(
                "SELECT s.id, g.kind, g.cluster, g.namespace, g.app, s.instance "  # noqa: S608
                f"FROM log_sources s JOIN log_groups g ON g.id = s.grp WHERE s.id IN ({marks})",
                list(missing),
            ):
                known[sid] = LogSource(SourceKind(kind), cluster, namespace, app, instance)
        return stored_lines(rows, known)


def _conditions(column: str, ids: list[int], filt: LogFilter) -> tuple[list[str], list[Any]]:
    marks = ",".join("?" * len(ids))
    where = [f"{column} IN ({marks})"]
    params: list[Any] = list(ids)
    if filt.since is not None:
        where.append("at >= ?")
        params.append(_micros(filt.since))
    if filt.until is not None:
        where.append("at < ?")
        params.append(_micros(filt.until))
    if filt.stream is not None:
        where.append("stream = ?")
        params.append(filt.stream)
    if filt.level:
        where.append("level >= ?")
        params.append(filt.level)
    if filt.logger:
        where.append("(logger = ? OR logger LIKE ? ESCAPE '\\')")
        params += [filt.logger, _like_pattern(filt.logger)[1:-1] + ".%"]
    if filt.q and not filt.regex:
        if filt.q.isascii():
            where.append("text LIKE ? ESCAPE '\\'")  # SQLite's LIKE ignores ASCII case
            params.append(_like_pattern(filt.q))
        else:
            where.append("gaia_contains(text, ?)")
            params.append(filt.q)
    return where, params


# ---------------------------------------------------------------- the platform's own logs


@dataclass(frozen=True, slots=True)
class _Record:
    created: float
    level: int
    logger: str
    text: str


# The HTTP client libraries log every request's full URL (httpx at INFO, httpcore's traces at
# DEBUG), and alert channels' URLs carry credentials (WeCom's ``?key=``, webhook tokens in the
# path). Their records are redacted where they are made, before any handler (stderr, the log
# store, pytest's capture) sees them, and httpx's per-request line is lowered to DEBUG noise by
# raising its logger to WARNING unless an operator chose a level for it.
HTTP_CLIENT_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


class HttpClientLogRedaction(logging.Filter):
    """Rewrites an HTTP client's log record with URLs cut to their origin and secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        record.msg = redact(redact_url_paths(text))
        record.args = ()
        return True


_HTTP_CLIENT_FILTER = HttpClientLogRedaction()


def quiet_http_client_loggers() -> None:
    """Install the redaction on the HTTP client loggers (idempotent); called wherever the
    platform sets up logging (``gaia.cli``, ``SystemLogHandler.install``)."""
    for name in HTTP_CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if _HTTP_CLIENT_FILTER not in logger.filters:
            logger.addFilter(_HTTP_CLIENT_FILTER)
    httpx_logger = logging.getLogger("httpx")
    if httpx_logger.level == logging.NOTSET:
        httpx_logger.setLevel(logging.WARNING)


class SystemLogHandler(logging.Handler):
    """Writes the platform's own log records (``gaia.*`` and uvicorn's, level INFO and up as the
    loggers let them through) into the store as system lines, redacted.

    ``emit`` never blocks and never does I/O: it formats the record and puts it on a bounded
    queue; when the queue is full the record is dropped and counted (``dropped``). One thread
    drains the queue, redacts, and writes batches (a batch gathers for at most ``linger``
    seconds or ``batch_size`` records). Records logged by that thread itself are ignored, so a
    failing store cannot feed itself."""

    LOGGERS = ("gaia", "uvicorn", "uvicorn.access")

    def __init__(
        self,
        store: LogStore,
        *,
        level: int = logging.INFO,
        capacity: int = 10_000,
        batch_size: int = 500,
        linger: float = 0.2,
    ) -> None:
        super().__init__(level)
        self.store = store
        self.batch_size = batch_size
        self.linger = linger
        self.dropped = 0
        self._dropped_lock = threading.Lock()
        # records; an Event to set once what came before is written; None to stop
        self._queue: queue.Queue[_Record | threading.Event | None] = queue.Queue(maxsize=capacity)
        self._stopping = threading.Event()
        # set when a batch should not wait out its linger: it is full, or someone waits for it
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None
        self._installed: list[logging.Logger] = []
        self._formatter = logging.Formatter()

    def install(self) -> None:
        """Attach to the platform's loggers and start the writer thread."""
        quiet_http_client_loggers()
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._drain, name="gaia-system-logs", daemon=True
            )
            self._thread.start()
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)
                self._installed.append(logger)

    def uninstall(self, *, timeout: float = 5.0) -> None:
        """Detach, write what is queued, stop the thread."""
        for logger in self._installed:
            logger.removeHandler(self)
        self._installed = []
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=timeout)  # after what is queued: written first
            except queue.Full:
                self._stopping.set()
            self._hurry.set()
            self._thread.join(timeout)
            self._thread = None

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread:
            return
        if getattr(record, "_gaia_stored", False):
            return  # the same record reached us through a second logger
        try:
            record.__dict__["_gaia_stored"] = True
            text = record.getMessage()
            if record.exc_info:
                text = f"{text}\n{self._formatter.formatException(record.exc_info)}"
            elif record.exc_text:
                text = f"{text}\n{record.exc_text}"
            self._queue.put_nowait(_Record(record.created, record.levelno, record.name, text))
            if self._queue.qsize() >= self.batch_size:
                self._hurry.set()
        except queue.Full:
            with self._dropped_lock:
                self.dropped += 1
        except Exception:  # logging must never raise into the caller
            self.handleError(record)

    def wait_written(self, timeout: float = 5.0) -> bool:
        """Wait until what was logged before this call is in the store."""
        if self._thread is None or not self._thread.is_alive():
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()
        return done.wait(timeout)

    def _drain(self) -> None:
        failing = stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                stop = self._stopping.is_set()
                continue
            items: list[_Record | threading.Event | None] = [first]
            if isinstance(first, _Record) and self._queue.qsize() + 1 < self.batch_size:
                # gather for the linger without taking records one by one: a thread blocked in
                # the queue's get would be woken (and take the GIL) at every record logged
                self._hurry.wait(self.linger)
            self._hurry.clear()
            while len(items) < self.batch_size and isinstance(items[-1], _Record):
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [
                LogEntry(
                    source=SYSTEM_SOURCE,
                    at=dt.datetime.fromtimestamp(item.created, dt.UTC),
                    text=redact(item.text),
                    stream="stderr" if item.level >= logging.WARNING else "stdout",
                    level=item.level,
                    logger=item.logger,
                )
                for item in items
                if isinstance(item, _Record)
            ]
            stop = items[-1] is None
            try:
                self.store.append(entries)
                failing = False
            except Exception as exc:  # the next batch tries again
                if not failing:
                    log.warning("system logs: cannot write to %s: %s", self.store.location, exc)
                failing = True
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
