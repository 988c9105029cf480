"""``LoopService``: the one base class of every background loop.

A loop defines ``run_once()``; the base class owns the interval, start and stop, and error
logging (a failing pass is logged and the next one runs on schedule; one bad pass must not kill a
controller). ``start(loops=1)`` runs exactly one pass and returns, which is how tests drive a loop
without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopService:
    name = "loop"

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        self._stopping = asyncio.Event()
        # Wraps each pass started by ``start()`` (the platform's loop metrics hook in here).
        self.observe: Callable[[str], contextlib.AbstractContextManager[None]] | None = None

    async def run_once(self) -> None:
        raise NotImplementedError

    async def start(self, loops: int | None = None) -> None:
        """Run passes every ``interval`` seconds until stopped, or ``loops`` passes."""
        self._stopping.clear()
        done = 0
        while not self._stopping.is_set():
            try:
                with self.observe(self.name) if self.observe else contextlib.nullcontext():
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: pass failed; retrying in %.1fs", self.name, self.interval)
            done += 1
            if loops is not None and done >= loops:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def stop(self) -> None:
        self._stopping.set()
