"""When to try again: exponential back-off with jitter, the one retry rule of the platform.

The notification outbox (``gaia.monitor.alerting.delivery``) waits this long before the next
attempt of a failed send, and every background loop (``gaia.loop``) before the next pass after a
failed one. The delay doubles with each consecutive failure up to a cap, and is spread by +-20 %
so that many failures that began together (a receiver that was down, a database restart) do not
retry in lock-step. A server's ``Retry-After`` is honoured as a floor, never beyond the cap.
"""

from __future__ import annotations

import random


def backoff_delay(
    failures: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    jitter: float = 0.2,
    rand: float | None = None,
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1 for the first).

    ``rand`` in [0, 1) replaces the random draw (tests). The cap applies before the jitter, so
    failures at the cap still spread out (up to ``cap * (1 + jitter)``)."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    # 2 ** 60 overflows nothing and is far past any cap; keep the exponent bounded anyway
    delay = min(cap, base * 2 ** min(failures - 1, 60))
    draw = random.random() if rand is None else rand  # noqa: S311 (jitter, not security)
    delay *= 1 - jitter + 2 * jitter * draw
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, cap))
    return float(delay)
