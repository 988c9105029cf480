"""Leader leases among Gaia's replicas (issue 21): one leader per group of background loops,
with fencing.

The mechanism is a row per group in the platform's own database (``leader_leases``), not an
advisory lock: a session-level advisory lock lives and dies with one pooled connection (a
connection recycled by the pool, or a network blip, silently drops it, and the holder would
not know), and SQLite has none. A row with an expiry is explicit, visible (the API and
``/metrics`` show who leads), works on both stores, and carries the **epoch** that fences.

- ``hold(name, holder, ttl)``: one conditional UPDATE takes the lease when it is the holder's
  or has expired (the epoch grows when the holder changes), or an INSERT when no row exists
  (the primary key decides between two replicas inserting at once). It answers the epoch held,
  or None.
- **Fencing.** A leader that paused (a long GC, a frozen VM) past its lease may wake up after
  another replica took over. So every write transaction a leader's loop makes runs, just before
  its commit, ``UPDATE leader_leases SET holder = holder WHERE name AND holder AND epoch``: zero
  rows means deposed, and the whole transaction is rolled back (``Fenced``). On PostgreSQL the
  UPDATE also locks the row until the commit, so a takeover waits for that commit, and the
  takeover's own condition is evaluated again after it: the old leader's last write is either
  committed before the new leader starts or refused. The loop marks its writes by running in
  ``fenced_by(lease)`` (a context variable: it follows the pass into the threads it starts).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gaia.store.models import LeaderLease


class Fenced(RuntimeError):
    """This replica's lease was taken over: its write was refused and rolled back."""


@dataclass(frozen=True, slots=True)
class Held:
    name: str
    holder: str
    epoch: int


_FENCE: contextvars.ContextVar[Held | None] = contextvars.ContextVar("gaia_fence", default=None)


@contextlib.contextmanager
def fenced_by(held: Held) -> Iterator[None]:
    """Every write transaction committed inside the block checks ``held`` first."""
    token = _FENCE.set(held)
    try:
        yield
    finally:
        _FENCE.reset(token)


def check_fence(session: Session) -> None:
    """Refuse the transaction when the current loop's lease is no longer held (called by the
    write sessions before they commit; nothing to do outside a leader's pass)."""
    held = _FENCE.get()
    if held is None:
        return
    result = session.execute(
        update(LeaderLease)
        .where(
            LeaderLease.name == held.name,
            LeaderLease.holder == held.holder,
            LeaderLease.epoch == held.epoch,
        )
        .values(holder=LeaderLease.holder)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Fenced(f"{held.holder} no longer leads {held.name} (epoch {held.epoch})")


def hold(
    session: Session, *, name: str, holder: str, ttl: dt.timedelta, now: dt.datetime
) -> int | None:
    """Take or renew the lease ``name`` for ``holder``; its epoch, or None when another
    replica holds it and it has not expired."""
    expires = now + ttl
    renewed = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == name, LeaderLease.holder == holder)
        .values(expires_at=expires)
        .execution_options(synchronize_session=False)
    )
    if renewed.rowcount == 1:  # type: ignore[attr-defined]
        return _epoch(session, name)
    taken = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == name, LeaderLease.expires_at < now)
        .values(holder=holder, epoch=LeaderLease.epoch + 1, expires_at=expires, acquired_at=now)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        return _epoch(session, name)
    if session.get(LeaderLease, name) is not None:
        return None  # held by another replica
    try:
        with session.begin_nested():
            session.add(
                LeaderLease(name=name, holder=holder, epoch=1, expires_at=expires, acquired_at=now)
            )
    except IntegrityError:
        return None  # another replica inserted it first
    return 1


def release(session: Session, *, name: str, holder: str, now: dt.datetime) -> None:
    """Give the lease up (a clean shutdown): the next replica need not wait for it to expire."""
    session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == name, LeaderLease.holder == holder)
        .values(expires_at=now)
        .execution_options(synchronize_session=False)
    )


def leaders(session: Session) -> list[LeaderLease]:
    return list(session.scalars(select(LeaderLease).order_by(LeaderLease.name)))


def _epoch(session: Session, name: str) -> int:
    return int(session.scalars(select(LeaderLease.epoch).where(LeaderLease.name == name)).one())
