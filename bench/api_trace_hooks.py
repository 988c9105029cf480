"""Timestamps inside a real ``gaia up`` server, for ``bench/api_trace.py`` (not imported by Gaia).

``bench/api_trace.py`` starts the server as ``python bench/api_trace_hooks.py <gaia> up ...``:
this module patches a few seams of the libraries and of ``gaia.store.database``, then runs the
``gaia`` script as ``__main__``. Every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC, the
same clock in the client's process). What is kept, per HTTP request that carries an
``x-bench-id`` header (a context variable follows the request into its worker threads):

- ``in`` / ``start`` / ``sent``: the ASGI app called, the response's first and last message;
- ``hops``: each ``anyio.to_thread.run_sync`` (the sync dependencies, the route, their
  teardown): submitted on the loop, started in a worker, ended, resumed on the loop;
- ``turns``: SQLite's writer turn (``_WriterQueue``): asked, granted, given back, and how many
  writers were queued when it asked;
- ``commits``: ``COMMIT`` on the DB-API connection, and the WAL file's size before and after
  (a checkpoint run by the commit shows as a long commit);
- ``sql``: seconds spent in cursor executes.

Outside requests: turns and commits of other threads (the background loops), every garbage
collection (start, duration, generation) and the event loop's lateness (a task that sleeps
5 ms and notes how late it woke). All of it is written as one JSON file at exit
(``BENCH_TRACE_FILE``), so the hooks cost no I/O while the server is measured.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import gc
import json
import os
import runpy
import sys
import threading
import time
from typing import Any

now = time.monotonic
current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "bench_trace", default=None
)
requests: list[dict[str, Any]] = []
background: list[dict[str, Any]] = []  # turns and commits outside a traced request
collections: list[tuple[float, float, int]] = []
lags: list[tuple[float, float]] = []
LAG_PERIOD = 0.005


def _name(func: Any) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func)))


def _patch_threads() -> None:
    import anyio.to_thread

    original = anyio.to_thread.run_sync

    async def run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
        rec = current.get()
        if rec is None:
            return await original(func, *args, **kwargs)
        hop: dict[str, Any] = {"fn": _name(func), "submit": now()}
        rec["hops"].append(hop)

        def timed(*a: Any) -> Any:
            hop["start"] = now()
            try:
                return func(*a)
            finally:
                hop["end"] = now()

        try:
            return await original(timed, *args, **kwargs)
        finally:
            hop["back"] = now()

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


def _patch_asgi() -> None:
    from starlette.applications import Starlette

    original = Starlette.__call__
    probe: list[asyncio.Task[None]] = []

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if not probe:
            probe.append(asyncio.get_running_loop().create_task(_lag_probe()))
        if scope["type"] != "http" or current.get() is not None:
            await original(self, scope, receive, send)
            return
        bench_id = dict(scope.get("headers") or []).get(b"x-bench-id")
        if bench_id is None:
            await original(self, scope, receive, send)
            return
        rec: dict[str, Any] = {
            "id": bench_id.decode(),
            "in": now(),
            "hops": [],
            "turns": [],
            "commits": [],
            "sql": 0.0,
        }

        async def timed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                rec["start"] = now()
                rec["status"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                rec["sent"] = now()

        token = current.set(rec)
        try:
            await original(self, scope, receive, timed_send)
        finally:
            current.reset(token)
            requests.append(rec)

    Starlette.__call__ = call  # type: ignore[method-assign]


async def _lag_probe() -> None:
    while True:
        t = now()
        await asyncio.sleep(LAG_PERIOD)
        lags.append((t, now() - t - LAG_PERIOD))


def _patch_store() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from gaia.store import database

    queue = database._WriterQueue
    enter, enter_async, leave = queue.enter, queue.enter_async, queue.leave

    def timed_enter(self: Any, *, timeout: float) -> bool:
        turn: dict[str, Any] = {"ask": now(), "ahead": len(self._waiting) + int(self._taken)}
        ok = enter(self, timeout=timeout)
        return _took(self, turn, ok)

    async def timed_enter_async(self: Any, *, timeout: float) -> bool:
        # a change on the event loop (``inline_write``) awaits its turn here
        turn: dict[str, Any] = {"ask": now(), "ahead": len(self._waiting) + int(self._taken)}
        ok = await enter_async(self, timeout=timeout)
        return _took(self, turn, ok)

    def _took(self: Any, turn: dict[str, Any], ok: bool) -> bool:
        turn["got"] = now()
        turn["ok"] = ok
        rec = current.get()
        if rec is not None:
            rec["turns"].append(turn)
        else:
            turn["thread"] = threading.current_thread().name
            turn["kind"] = "turn"
            background.append(turn)
        self._bench_turn = turn
        return ok

    def timed_leave(self: Any) -> None:
        turn = getattr(self, "_bench_turn", None)
        if turn is not None:
            turn["left"] = now()
        leave(self)

    queue.enter = timed_enter  # type: ignore[method-assign]
    queue.enter_async = timed_enter_async  # type: ignore[method-assign]
    queue.leave = timed_leave  # type: ignore[method-assign]

    connection = database._QueuedConnection
    commit = connection.commit

    def timed_commit(self: Any) -> None:
        wal = _wal_size(self)
        t0 = now()
        try:
            commit(self)
        finally:
            entry = {"t0": t0, "t1": now(), "wal_before": wal, "wal_after": _wal_size(self)}
            rec = current.get()
            if rec is not None:
                rec["commits"].append(entry)
            else:
                entry["thread"] = threading.current_thread().name
                entry["kind"] = "commit"
                background.append(entry)

    connection.commit = timed_commit  # type: ignore[method-assign]

    @event.listens_for(Engine, "before_cursor_execute")
    def _before(conn: Any, *_: Any) -> None:
        conn.info["bench_t0"] = now()

    @event.listens_for(Engine, "after_cursor_execute")
    def _after(conn: Any, *_: Any) -> None:
        rec = current.get()
        t0 = conn.info.pop("bench_t0", None)
        if rec is not None and t0 is not None:
            rec["sql"] += now() - t0


_wal_paths: dict[int, str] = {}


def _wal_size(conn: Any) -> int:
    path = _wal_paths.get(id(conn))
    if path is None:
        try:
            rows = conn.execute("PRAGMA database_list").fetchall()
            path = _wal_paths[id(conn)] = f"{rows[0][2]}-wal"
        except Exception:
            return -1
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _watch_gc() -> None:
    started: dict[str, float] = {}

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started["t"] = now()
        elif "t" in started:
            t = started.pop("t")
            collections.append((t, now() - t, int(info.get("generation", -1))))

    gc.callbacks.append(callback)


def _heap() -> dict[str, Any]:
    """What the collector tracks at exit: objects by type (the 20 commonest), and its stats."""
    import collections as counting

    objects = gc.get_objects()
    kinds = counting.Counter(type(o).__qualname__ for o in objects)
    return {
        "tracked": len(objects),
        "frozen": gc.get_freeze_count(),
        "stats": gc.get_stats(),
        "commonest": kinds.most_common(20),
    }


def _dump() -> None:
    path = os.environ.get("BENCH_TRACE_FILE")
    if not path:
        return
    heap = _heap()
    with open(path, "w") as out:
        json.dump(
            {
                "requests": requests,
                "background": background,
                "gc": collections,
                "lags": lags,
                "switch_interval": sys.getswitchinterval(),
                "heap": heap,
            },
            out,
        )


def main() -> None:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    _patch_threads()
    _patch_asgi()
    _patch_store()
    _watch_gc()
    atexit.register(_dump)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
