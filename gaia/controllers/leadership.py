"""One leader per group of background loops among Gaia's replicas (issue 21).

Every replica runs every loop; a loop of a group (``controllers``: the app controller, cluster
health, the reservation reaper, the floating-IP sweep, registry GC; ``monitoring``: the metric
and log collectors, alert evaluation and delivery) does its pass only on the replica that holds
the group's lease (``gaia.store.leases``), and inside ``fenced_by``: each of its write
transactions checks, before it commits, that the lease is still this replica's at the same
epoch. A ``LeaseKeeper`` per group renews a held lease every third of its time to live and,
on a follower, tries to take it every ``RETRY_S`` (as client-go's leader election separates its
renew deadline from its retry period), so a leader killed outright is replaced within
``ttl + RETRY_S`` (12 s at the default 10 s lease) and a clean shutdown hands over at once.

Loops that are safe on every replica stay ungated: the pipeline runner (runs are claimed by a
conditional UPDATE), the P2P coordinator's sweep (its swarms are this process's memory), the
embedded metric store's snapshot (this process's store).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gaia.clock import Clock
from gaia.loop import LoopService
from gaia.store import leases
from gaia.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class Leadership:
    """This replica's claim on one group: held (with its epoch) or not, as last renewed."""

    db: Database
    group: str
    holder: str
    clock: Clock
    ttl_s: float = 15.0
    held: leases.Held | None = None
    _valid_until: float = 0.0  # monotonic: trust the lease locally a margin before it ends
    changes: int = field(default=0)

    def leads(self) -> leases.Held | None:
        """The lease, when held and not about to run out by this process's own clock."""
        if self.held is not None and time.monotonic() < self._valid_until:
            return self.held
        return None

    def renew(self) -> leases.Held | None:
        began = time.monotonic()
        with self.db.write_session() as session:
            epoch = leases.hold(
                session,
                name=self.group,
                holder=self.holder,
                ttl=dt.timedelta(seconds=self.ttl_s),
                now=self.clock.now(),
            )
        was = self.held
        self.held = None if epoch is None else leases.Held(self.group, self.holder, epoch)
        # the lease runs ttl from the database's write; keep a third of it as the margin
        self._valid_until = began + self.ttl_s * 2 / 3 if self.held else 0.0
        if (was is None) != (self.held is None) or (was and self.held and was != self.held):
            self.changes += 1
            if self.held:
                log.info("leads %s (epoch %d)", self.group, self.held.epoch)
            else:
                log.info("no longer leads %s", self.group)
        return self.held

    def release(self) -> None:
        if self.held is None:
            return
        with self.db.write_session() as session:
            leases.release(session, name=self.group, holder=self.holder, now=self.clock.now())
        self.held = None
        self._valid_until = 0.0


RETRY_S = 2.0  # how often a follower tries to take a lease


class LeaseKeeper(LoopService):
    """Renews one group's lease every third of its time to live while held; tries to take it
    every ``RETRY_S`` (or that third, if shorter) while another replica holds it."""

    def __init__(self, leadership: Leadership) -> None:
        self.renew_s = leadership.ttl_s / 3
        self.retry_s = min(RETRY_S, self.renew_s)
        super().__init__(interval=self.retry_s, max_backoff=self.renew_s)
        self.leadership = leadership
        self.name = f"lease-{leadership.group}"

    async def run_once(self) -> None:
        try:
            held = await asyncio.to_thread(self.leadership.renew)
        except Exception:
            self.leadership.held = None  # unknown: act as a follower until the next renewal
            self.interval = self.retry_s
            raise
        self.interval = self.renew_s if held is not None else self.retry_s


class LeaderElected(LoopService):
    """``inner``'s passes, on the leader of ``leadership``'s group only, fenced."""

    def __init__(self, inner: LoopService, leadership: Leadership) -> None:
        super().__init__(interval=inner.interval, max_backoff=inner.max_backoff)
        self.inner = inner
        self.leadership = leadership
        self.name = inner.name
        self.skipped = 0  # passes left to the leader
        self._term: int | None = None  # the epoch of the lease the last pass ran under

    async def run_once(self) -> None:
        held = self.leadership.leads()
        if held is None:
            self.skipped += 1
            self._term = None
            return
        if held.epoch != self._term:
            # a new term: what the loop remembers of the last one (if it led before) may be
            # stale, another leader having acted meanwhile
            self._term = held.epoch
            self.inner.forget()
        with leases.fenced_by(held):
            await self.inner.run_once()

    def changed(self, about: Any = None) -> None:
        self.inner.changed(about)

    def forget(self) -> None:
        self.inner.forget()

    def stop(self) -> None:
        self.inner.stop()
        super().stop()
