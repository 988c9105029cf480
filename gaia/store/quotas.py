"""Quota admission and reservations: the single path every create and scale goes through.

    reserve(session, business, cluster, request, owner)  ->  QuotaReservation (pending)
    commit(session, reservation)                          ->  the owner now exists
    release(session, reservation_or_owner)                ->  the resources are free again

The rule itself (does ``used + request`` fit under ``hard``?) is ``gaia.domain.resources.
check_fits``; this module makes it hold under concurrency. The quota row is the lock: it is read
with ``SELECT ... FOR UPDATE`` on PostgreSQL, and on SQLite the caller's ``write_session`` already
holds the database write lock (``BEGIN IMMEDIATE``). Between the read and the commit nobody else
can move ``used_*``, so fifty requests that each fit but together do not are admitted one by one
until the quota is full and the rest are refused, never over-committed.

A pending reservation that is never committed expires (``expires_at``) and is given back by
``reclaim_expired``, so a crash between admission and creation cannot leak quota.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.resources import (
    DIMENSION_NAMES,
    ResourceVector,
    check_fits,
    quota_exceeded,
)
from gaia.store.models import Business, Cluster, Quota, QuotaReservation, utcnow

DEFAULT_PENDING_TTL = dt.timedelta(minutes=10)


def _locked_quota(session: Session, *, business_id: int, cluster_id: int) -> Quota | None:
    stmt = (
        select(Quota)
        .where(Quota.business_id == business_id, Quota.cluster_id == cluster_id)
        .with_for_update()
    )
    return session.scalars(stmt).one_or_none()


def reserve(
    session: Session,
    *,
    business: Business,
    cluster: Cluster,
    request: ResourceVector,
    owner: str,
    commit: bool = False,
    ttl: dt.timedelta = DEFAULT_PENDING_TTL,
) -> QuotaReservation:
    """Admit ``request`` against the business's quota in ``cluster`` and hold it for ``owner``.

    Raises ``QuotaExceeded`` naming each overflowing dimension, or ``Conflict`` when ``owner``
    already holds a reservation in this quota (admission is per owner, so a retried request
    cannot take the quota twice).
    """
    if not owner or len(owner) > 255:
        raise InvalidRequest("a reservation owner is 1 to 255 characters")
    quota = _locked_quota(session, business_id=business.id, cluster_id=cluster.id)
    if quota is None:
        hard = ResourceVector()
        violations = check_fits(requested=request, used=ResourceVector(), hard=hard)
        if violations:
            raise quota_exceeded(
                business=business.name, cluster=cluster.name, violations=violations
            )
        raise NotFound(
            f"business '{business.name}' has no quota in cluster '{cluster.name}'; "
            "a platform administrator sets one with PUT /api/v1/businesses/"
            f"{business.name}/quotas/{cluster.name}"
        )
    existing = session.scalars(
        select(QuotaReservation).where(
            QuotaReservation.quota_id == quota.id, QuotaReservation.owner == owner
        )
    ).one_or_none()
    if existing is not None:
        raise Conflict(f"'{owner}' already holds a reservation in this quota")
    violations = check_fits(requested=request, used=quota.used(), hard=quota.hard())
    if violations:
        raise quota_exceeded(business=business.name, cluster=cluster.name, violations=violations)
    now = utcnow()
    reservation = QuotaReservation(
        quota_id=quota.id,
        owner=owner,
        state="committed" if commit else "pending",
        created_at=now,
        expires_at=None if commit else now + ttl,
        **request.as_internal(),
    )
    session.add(reservation)
    quota.set_used(quota.used() + request)
    quota.updated_at = now
    session.flush()
    return reservation


def commit(session: Session, reservation: QuotaReservation) -> None:
    """Confirm a pending reservation: its owner exists now, the hold no longer expires."""
    reservation.state = "committed"
    reservation.expires_at = None
    session.flush()


def release(session: Session, reservation: QuotaReservation) -> None:
    """Give the reservation's resources back to the quota."""
    quota = session.scalars(
        select(Quota).where(Quota.id == reservation.quota_id).with_for_update()
    ).one()
    quota.set_used(quota.used().minus(reservation.amounts()))
    quota.updated_at = utcnow()
    session.delete(reservation)
    session.flush()


def release_owner(session: Session, *, quota: Quota, owner: str) -> bool:
    reservation = session.scalars(
        select(QuotaReservation).where(
            QuotaReservation.quota_id == quota.id, QuotaReservation.owner == owner
        )
    ).one_or_none()
    if reservation is None:
        return False
    release(session, reservation)
    return True


def reclaim_expired(session: Session, *, now: dt.datetime | None = None) -> int:
    """Release every pending reservation past its expiry; returns how many."""
    now = now or utcnow()
    expired = session.scalars(
        select(QuotaReservation).where(
            QuotaReservation.state == "pending", QuotaReservation.expires_at < now
        )
    ).all()
    for reservation in expired:
        release(session, reservation)
    return len(expired)


def pending_amounts(session: Session, quota: Quota) -> ResourceVector:
    """What is held by pending (not yet committed) reservations, for display."""
    total = ResourceVector()
    for r in session.scalars(
        select(QuotaReservation).where(
            QuotaReservation.quota_id == quota.id, QuotaReservation.state == "pending"
        )
    ):
        total = total + r.amounts()
    return total


def recount(session: Session, quota: Quota) -> ResourceVector:
    """Recompute ``used_*`` from the reservations (repairs a counter after manual surgery)."""
    total = ResourceVector()
    for r in session.scalars(select(QuotaReservation).where(QuotaReservation.quota_id == quota.id)):
        total = total + r.amounts()
    quota.set_used(total)
    return total


__all__ = [
    "DIMENSION_NAMES",
    "commit",
    "pending_amounts",
    "reclaim_expired",
    "recount",
    "release",
    "release_owner",
    "reserve",
]
