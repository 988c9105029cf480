"""``LoopService``: the one base class of every background loop.

A loop defines ``run_once()``; the base class owns the interval, start and stop, and error
logging. A failing pass is logged and the loop carries on: one bad pass must not kill a
controller. After consecutive failures the next pass waits longer, by the platform's retry rule
(``gaia.domain.retry``: doubling from the interval up to ``max_backoff``, with jitter), so that a
database or cluster that is down is not hammered by every loop at once, and the loops of several
replicas do not retry in lock-step; the first good pass returns to the interval. The first
failure in a row is logged with its traceback, each further one as one warning line.
``start(loops=1)`` runs exactly one pass and returns, which is how tests drive a loop without
sleeping. ``wake()`` (from any thread) starts the next pass at once instead of after the
interval: an event-driven loop keeps its interval only as the safety-net resync. The controllers
(``gaia.controllers``) and the monitoring loops (``gaia.monitor``) are all ``LoopService``s;
``gaia.platform`` builds and runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from gaia.domain.retry import backoff_delay

log = logging.getLogger(__name__)


class LoopService:
    name = "loop"

    def __init__(self, *, interval: float, max_backoff: float | None = None) -> None:
        self.interval = interval
        # A loop that fails keeps trying at least every five minutes (or every interval, if
        # that is longer): slow enough to spare what is down, quick enough to notice it is back.
        self.max_backoff = max(interval, 300.0) if max_backoff is None else max_backoff
        self.failures = 0  # consecutive failed passes
        # for the components page (gaia.controllers.replicas): passes done, when the last one
        # ended (wall clock), the last failure's message
        self.passes = 0
        self.restarts = 0  # restarts an administrator asked for (gaia.platform.restart_loop)
        self.last_pass_at: dt.datetime | None = None
        self.last_error = ""
        self._stopping = asyncio.Event()
        # ``wake()``: the next pass now rather than after the interval (events, API writes);
        # several wakes before the pass starts make one pass
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.wakes = 0
        # Wraps each pass started by ``start()`` (the platform's loop metrics hook in here).
        self.observe: Callable[[str], contextlib.AbstractContextManager[None]] | None = None

    async def run_once(self) -> None:
        raise NotImplementedError

    def next_delay(self) -> float:
        """Seconds until the next pass: the interval, or the back-off after failed passes."""
        if self.failures == 0:
            return self.interval
        return backoff_delay(self.failures, base=self.interval, cap=self.max_backoff)

    async def start(self, loops: int | None = None) -> None:
        """Run passes every ``interval`` seconds until stopped, or ``loops`` passes."""
        self._stopping.clear()
        self._loop = asyncio.get_running_loop()
        done = 0
        while not self._stopping.is_set():
            try:
                with self.observe(self.name) if self.observe else contextlib.nullcontext():
                    await self.run_once()
                self.failures = 0
                delay = self.interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
                delay = self.next_delay()
                self._log_failure(exc, delay)
            self.passes += 1
            self.last_pass_at = dt.datetime.now(dt.UTC)
            done += 1
            if loops is not None and done >= loops:
                return
            await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """Until ``delay`` has passed, the loop is stopped, or (after a good pass) woken. A
        wake that came during the pass counts: what changed then may not have been seen."""
        waits = {asyncio.ensure_future(self._stopping.wait())}
        if not self.failures:  # a failing loop keeps its back-off, whatever wakes it
            waits.add(asyncio.ensure_future(self._woken.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            self._woken.clear()

    def wake(self) -> None:
        """Run the next pass now (from any thread): a change the loop should look at."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self.wakes += 1
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._woken.set)

    def _log_failure(self, exc: Exception, delay: float) -> None:
        """The first failure in a row with its traceback (a bug, or the start of an outage: the
        details matter once); each further one as a single warning line, so that a database
        that stays down for an hour leaves a readable trail, not a wall of tracebacks."""
        if self.failures == 1:
            log.exception("%s: pass failed; retrying in %.1fs", self.name, delay)
            return
        lines = str(exc).strip().splitlines()
        log.warning(
            "%s: pass failed (%d in a row): %s: %s; retrying in %.1fs",
            self.name,
            self.failures,
            type(exc).__name__,
            lines[0] if lines else "",
            delay,
        )

    def changed(self, about: Any = None) -> None:
        """What the loop reads changed (any thread): a loop that skips quiet passes looks
        again (``AppController``); the others need not be told. ``about``: what changed, when
        the teller knows (an app's key: a loop with a work queue may look at that alone)."""

    def forget(self) -> None:
        """Drop what the loop remembers of earlier passes beyond mere savings (a new term as
        leader, a restart); nothing by default."""

    def stop(self) -> None:
        self._stopping.set()
