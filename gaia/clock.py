"""One clock for the simulated clusters and the controllers that drive them.

People using ``gaia up`` see simulated time run at the speed of the wall clock (``RealClock``).
Tests use ``ManualClock`` and move time with ``step()``: nothing in the suite sleeps to wait for a
pull to finish or a back-off to expire, so the tests are fast and deterministic.

Controllers take ``now`` from the same clock, so a back-off of 40 s computed by a controller and
an image pull of 3 s simulated by the ``sim`` provider live on one time line.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Current time, timezone-aware UTC."""
        ...


class RealClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """Time stands still until a test steps it."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def step(self, seconds: float) -> dt.datetime:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            return self._now
