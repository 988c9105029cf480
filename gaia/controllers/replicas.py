"""This replica's heartbeat: what it runs, written where every replica can read it (issue 21).

Every ``interval`` seconds, on every replica (the loop is not leader-gated): build a
``gaia.store.replicas.Report`` (version, host, process, address, schema revision, and each
background loop's state: passes, consecutive failures, last error, the group it belongs to and
whether this replica leads it), write it, and take the loop restarts an administrator asked of
this replica (``POST /api/v1/platform/replicas/{replica}/loops/{loop}/restart``). Each asked
restart is handed to ``restart`` (``Platform.restart_loop``): the loop is stopped after its
current pass and started afresh, its failure count and back-off cleared. The components page
(``GET /api/v1/platform/components``) reads the rows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gaia.clock import Clock
from gaia.controllers.apps import AppController
from gaia.controllers.leadership import LeaderElected
from gaia.loop import LoopService
from gaia.store import replicas
from gaia.store.database import Database

log = logging.getLogger(__name__)
HEARTBEAT_S = 5.0


def loop_state(service: LoopService) -> dict[str, Any]:
    """One loop as the components page shows it."""
    group = ""
    leads: bool | None = None
    inner: LoopService = service
    if isinstance(service, LeaderElected):
        group = service.leadership.group
        leads = service.leadership.leads() is not None
        inner = service.inner
    return {
        "name": service.name,
        "group": group,
        "leads": leads,
        "interval_s": service.interval,
        "passes": service.passes,
        "failures": service.failures,
        "last_pass_at": service.last_pass_at.isoformat() if service.last_pass_at else None,
        "last_error": service.last_error,
        "restarts": service.restarts,
        "logger": type(inner).__module__,
        "queued": len(inner.queue) if isinstance(inner, AppController) else None,
    }


class ReplicaHeartbeat(LoopService):
    name = "replica-heartbeat"

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        report: Callable[[], replicas.Report],
        restart: Callable[[str], Awaitable[str | None]],
        interval: float = HEARTBEAT_S,
    ) -> None:
        super().__init__(interval=interval, max_backoff=max(interval, 30.0))
        self.db = db
        self.clock = clock
        self.report = report
        self.restart = restart

    async def run_once(self) -> None:
        report = self.report()

        def write() -> list[str]:
            with self.db.write_session() as session:
                return replicas.beat(session, report, now=self.clock.now())

        for loop in await asyncio.to_thread(write):
            refusal = await self.restart(loop)
            if refusal is None:
                log.info("restarted the loop %s, as an administrator asked", loop)
            else:
                log.warning("could not restart the loop %s: %s", loop, refusal)


def loop_states(services: Iterable[LoopService]) -> list[dict[str, Any]]:
    return [loop_state(s) for s in services]
