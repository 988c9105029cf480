"""``FloatingIpSweep``: gives floating IPs back to their pools by each app's release policy.

Every ``interval`` seconds, one write transaction: ``gaia.store.network.sweep`` reads every
attachment no sandbox holds, compares it with the apps that exist and their instance maps, and
frees what the release policy lets go (``gaia.domain.network.releasable``: on-delete once the
instance is gone, app once the app is, never not at all). Level-triggered and idempotent: a
second pass frees nothing more. Freed addresses are logged and counted; a held address is never
freed here (a sandbox uses it), whatever its app's state.
"""

from __future__ import annotations

import asyncio
import logging

from gaia.loop import LoopService
from gaia.store.database import Database
from gaia.store.network import sweep

log = logging.getLogger(__name__)


class FloatingIpSweep(LoopService):
    name = "floating-ip-sweep"

    def __init__(self, *, db: Database, interval: float = 30.0) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.freed = 0

    async def run_once(self) -> None:
        await asyncio.to_thread(self._sweep)

    def _sweep(self) -> None:
        with self.db.write_session() as session:
            freed = [(r.pod, r.ip) for r in sweep(session)]
        self.freed += len(freed)
        for pod, ip in freed:
            log.info("floating IP %s of %s went back to its pool (release policy)", ip, pod)
