"""``LogRetention``: the loop that deletes log lines older than the platform keeps them.

The log stores bound themselves by count as they write (a share per instance, a total); age is
the third bound and needs a clock, so it is a loop of its own: every ``interval`` seconds it
asks the store (``LogStore.expire``) to delete the lines older than ``max_age``. It runs in the
``monitoring`` group, on its leader only (``gaia.controllers.leadership``): with PostgreSQL the
table is shared and one replica deleting is enough; a store deletes in batches, so a pass never
holds the writers up for long.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from gaia.clock import Clock
from gaia.loop import LoopService
from gaia.monitor.logs.store import LogStore

log = logging.getLogger(__name__)


class LogRetention(LoopService):
    name = "log-retention"

    def __init__(
        self, *, store: LogStore, clock: Clock, max_age: dt.timedelta, interval: float = 300.0
    ) -> None:
        super().__init__(interval=interval)
        self.store = store
        self.clock = clock
        self.max_age = max_age
        self.deleted = 0  # by the last pass (tests read it)

    async def run_once(self) -> None:
        before = self.clock.now() - self.max_age
        self.deleted = await asyncio.to_thread(self.store.expire, before=before)
        if self.deleted:
            log.info("log retention: deleted %d lines older than %s", self.deleted, before)
