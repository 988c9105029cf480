"""Leader leases and fencing (issue 21), on SQLite and on a real PostgreSQL: one leader per
group, a takeover only after expiry with a new epoch, and a deposed leader's write refused
and rolled back in the same transaction; a gated loop runs on the leader only."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from gaia.clock import ManualClock
from gaia.controllers.leadership import LeaderElected, Leadership, LeaseKeeper
from gaia.loop import LoopService
from gaia.store import leases
from gaia.store.database import Database
from gaia.store.models import Business

T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=15)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _hold(db: Database, holder: str, now: dt.datetime, name: str = "controllers") -> int | None:
    with db.write_session() as session:
        return leases.hold(session, name=name, holder=holder, ttl=TTL, now=now)


def test_one_leader_a_takeover_after_expiry_with_a_new_epoch(db: Database) -> None:
    assert _hold(db, "a", T0) == 1
    assert _hold(db, "b", T0 + dt.timedelta(seconds=5)) is None  # a holds it
    assert _hold(db, "a", T0 + dt.timedelta(seconds=10)) == 1  # renewed: until T0+25
    assert _hold(db, "b", T0 + dt.timedelta(seconds=20)) is None
    assert _hold(db, "b", T0 + dt.timedelta(seconds=26)) == 2  # a let it run out
    assert _hold(db, "a", T0 + dt.timedelta(seconds=27)) is None
    # another group is another lease
    assert _hold(db, "a", T0, name="monitoring") == 1
    with db.write_session() as session:
        leases.release(session, name="controllers", holder="b", now=T0 + dt.timedelta(seconds=30))
    assert _hold(db, "a", T0 + dt.timedelta(seconds=30, milliseconds=1)) == 3  # at once


def test_replicas_racing_for_a_new_lease_get_one_leader(db: Database) -> None:
    results: dict[str, int | None] = {}
    barrier = threading.Barrier(8)

    def race(name: str) -> None:
        barrier.wait()
        results[name] = _hold(db, name, T0)

    threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e for e in results.values() if e is not None) == [1], results


def test_a_deposed_leaders_write_is_refused_and_rolled_back(db: Database) -> None:
    held = leases.Held("controllers", "a", _hold(db, "a", T0) or 0)
    with leases.fenced_by(held), db.write_session() as session:  # still the leader: committed
        session.add(Business(name="kept"))
    assert _hold(db, "b", T0 + dt.timedelta(seconds=16)) == 2  # a paused past its lease
    with pytest.raises(leases.Fenced), leases.fenced_by(held), db.write_session() as session:
        session.add(Business(name="lost"))
    with db.read_session() as session:
        names = set(session.scalars(select(Business.name)))
    assert "kept" in names and "lost" not in names
    # writes outside a leader's pass (the API's) are never fenced
    with db.write_session() as session:
        session.add(Business(name="api"))


class Counting(LoopService):
    name = "counting"

    def __init__(self) -> None:
        super().__init__(interval=0.01)
        self.passes = 0
        self.fence: leases.Held | None = None

    async def run_once(self) -> None:
        self.passes += 1
        self.fence = leases._FENCE.get()


def test_a_gated_loop_runs_on_the_leader_only_and_moves_when_it_is_gone(db: Database) -> None:
    clock = ManualClock(T0)
    a = Leadership(db=db, group="controllers", holder="a", clock=clock, ttl_s=15)
    b = Leadership(db=db, group="controllers", holder="b", clock=clock, ttl_s=15)
    on_a, on_b = Counting(), Counting()
    gated_a, gated_b = LeaderElected(on_a, a), LeaderElected(on_b, b)

    async def passes() -> None:
        await LeaseKeeper(a).start(loops=1)
        await LeaseKeeper(b).start(loops=1)
        await gated_a.start(loops=1)
        await gated_b.start(loops=1)

    asyncio.run(passes())
    assert (on_a.passes, on_b.passes) == (1, 0) and gated_b.skipped == 1
    assert on_a.fence == leases.Held("controllers", "a", 1)  # its pass ran fenced
    clock.step(16)  # a is gone: no renewal for longer than the lease
    a.held = None
    asyncio.run(passes_b_only(b, gated_b))
    assert on_b.passes == 1 and on_b.fence == leases.Held("controllers", "b", 2)


async def passes_b_only(b: Leadership, gated: LeaderElected) -> None:
    await LeaseKeeper(b).start(loops=1)
    await gated.start(loops=1)
