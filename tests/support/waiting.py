"""Waiting in tests for what a real component does in its own time (a watch, a kubelet, KWOK)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(
    check: Callable[[], bool], what: str, timeout_s: float = 60, interval_s: float = 0.1
) -> None:
    """Return once ``check()`` is true; fail naming ``what`` if it is not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")
