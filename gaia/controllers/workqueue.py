"""The app controller's work queue: which apps (and clusters) want another look, and when.

A full pass of the app controller looks at every app of every cluster. It runs when something
changed that is no one app's (a node, a quota, a config, a new app) and at the slow resync.
Between those, a tick looks at the apps whose instances were heard of, those the API or the
store's changes name, and those this queue holds due, and at those apps only:

- an app the last look **acted on** (created, restarted, patched, deleted, drained) is due at the
  next tick, as everything was before the queue;
- an app **waiting** with nothing to do (an instance that cannot be placed, a pull or start not
  yet done, a restart back-off, a paused upgrade) or whose look **failed** is due after a delay
  that doubles with each look that found it so (``gaia.domain.retry``: the interval, twice that,
  and so on up to ``cap``, the resync: the resync looks at everything anyway), and no later than
  the moment it gave (a restart back-off's end);
- a **settled** app leaves the queue; so does an app that is gone. A change to an app's wish (its
  generation) starts its delays from the interval again.

Each key is held once (a dict: a second ``add`` keeps the earlier of the two moments), as
client-go's workqueue dedupes. Keys are ``("app", id)`` and ``("cluster", id)``; a due cluster
(out of reach, or holding more events than a pass takes) makes the tick a full pass.

Why this matters: before the queue any app not as wished made every tick a full pass of the whole
platform, and on a large platform some app always is (a business over its GPUs, a crash loop).
Memory only: a restarted controller begins with a full pass, which fills the queue again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from gaia.domain.retry import backoff_delay

Key = tuple[Literal["app", "cluster"], int]


@dataclass(frozen=True, slots=True)
class _Entry:
    at: dt.datetime  # due from then on
    streak: int  # consecutive looks that found the key waiting or failing (0: it was acted on)
    version: int | None  # what the key's wish was then (an app's generation)


class WorkQueue:
    def __init__(self, *, base: float, cap: float) -> None:
        if base <= 0 or cap < base:
            raise ValueError("the queue's delays need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._entries: dict[Key, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def acted(self, key: Key, *, now: dt.datetime, version: int | None = None) -> None:
        """Something was done for ``key``: look again at the next tick."""
        self._entries[key] = _Entry(at=now, streak=0, version=version)

    def waiting(
        self,
        key: Key,
        *,
        now: dt.datetime,
        until: dt.datetime | None = None,
        version: int | None = None,
    ) -> None:
        """Nothing to do for ``key`` yet, or its look failed: look again after the next delay
        of its streak, or at ``until`` if that comes first. A new ``version`` (the app's wish
        changed since) starts the streak again."""
        last = self._entries.get(key)
        streak = last.streak + 1 if last is not None and last.version == version else 1
        delay = backoff_delay(streak, base=self.base, cap=self.cap, jitter=0)
        at = now + dt.timedelta(seconds=delay)
        if until is not None:
            at = min(at, max(until, now))
        self._entries[key] = _Entry(at=at, streak=streak, version=version)

    def settled(self, key: Key) -> None:
        self._entries.pop(key, None)

    def due(self, now: dt.datetime) -> set[Key]:
        """The keys due at ``now`` (they stay queued until a look says what they are next)."""
        return {key for key, entry in self._entries.items() if entry.at <= now}

    def when(self, key: Key) -> dt.datetime | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.at

    def keep_only(self, keys: set[Key]) -> None:
        """Drop the keys not in ``keys`` (apps and clusters that are gone)."""
        for key in [k for k in self._entries if k not in keys]:
            del self._entries[key]

    def drop(self, keys: set[Key]) -> None:
        for key in keys:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
