"""Gives back pending quota reservations whose owner never appeared (a crash mid-create)."""

from __future__ import annotations

import asyncio
import logging

from gaia.loop import LoopService
from gaia.store.database import Database
from gaia.store.quotas import reclaim_expired

log = logging.getLogger(__name__)


class ReservationReaper(LoopService):
    name = "reservation-reaper"

    def __init__(self, *, db: Database, interval: float = 60.0) -> None:
        super().__init__(interval=interval)
        self.db = db

    async def run_once(self) -> None:
        await asyncio.to_thread(self._reclaim)

    def _reclaim(self) -> None:
        with self.db.write_session() as session:
            count = reclaim_expired(session)
        if count:
            log.info("released %d expired quota reservations", count)
