"""The simulated cluster's event stream: numbered events in a bounded ring.

Every event gets the next ``seq``; readers resume with ``since(seq)`` as they would from a
watch's resource version. The ring keeps at least the newest ``capacity`` events (a reader that
falls further behind loses the oldest, as an API server compacts its history). Events sit in a
list trimmed by a tenth of the capacity at a time, so appending is amortised O(1) and ``since``
finds its start by arithmetic on ``seq`` instead of a scan.
"""

from __future__ import annotations

import datetime as dt

from gaia.providers.port import ClusterEvent

DEFAULT_CAPACITY = 100_000


class EventRing:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._items: list[ClusterEvent] = []
        self._first_seq = 1
        self._next_seq = 1

    def emit(
        self,
        *,
        at: dt.datetime,
        namespace: str,
        kind: str,
        name: str,
        reason: str,
        message: str,
        type: str = "Normal",
    ) -> ClusterEvent:
        event = ClusterEvent(
            seq=self._next_seq,
            at=at,
            namespace=namespace,
            object_kind=kind,
            object_name=name,
            reason=reason,
            message=message,
            type=type,
        )
        self._next_seq += 1
        self._items.append(event)
        if len(self._items) > self.capacity + max(1, self.capacity // 10):
            drop = len(self._items) - self.capacity
            del self._items[:drop]
            self._first_seq += drop
        return event

    def since(self, seq: int, limit: int) -> list[ClusterEvent]:
        if limit <= 0:
            return []
        start = max(0, seq + 1 - self._first_seq)
        return self._items[start : start + limit]

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1
