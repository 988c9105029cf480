"""Businesses (the tenants) at rest: the business, its members, its quota in each cluster.

Routes decide who may ask (``gaia.api.deps.business_for``); these functions write and keep the
rules that belong to the data:

- a business is deleted only when it holds nothing in any cluster (its quotas and memberships go
  with it);
- a business keeps at least one business-admin, unless a platform admin removes the last one
  (``protect_last_admin``);
- a quota may be set below current use: nothing is evicted, growth is refused until usage drops,
  and a ``QuotaBelowUsage`` warning event says so. Quota *admission* (reservations) is
  ``gaia.store.quotas``; here are the limits themselves.

See docs/architecture.md, "store".
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.namespaces import check_business_name
from gaia.domain.rbac import Role
from gaia.domain.resources import DIMENSIONS, ResourceVector
from gaia.store import events
from gaia.store.clusters import QUOTA_SUMS
from gaia.store.models import Business, Cluster, Membership, Quota, User, utcnow
from gaia.store.paging import page_of

# Overview pages list at most this many businesses.
OVERVIEW_LIMIT = 500


# --- businesses ----------------------------------------------------------------------------


def page_businesses(
    session: Session, *, business_ids: set[int] | None, limit: int, cursor: str | None
) -> tuple[list[Business], str | None]:
    """The businesses among ``business_ids`` (all for ``None``), by name."""
    stmt = select(Business)
    if business_ids is not None:
        stmt = stmt.where(Business.id.in_(business_ids))
    return page_of(session, stmt, key=Business.name, limit=limit, cursor=cursor)


def business_names(session: Session, business_ids: set[int]) -> set[str]:
    if not business_ids:
        return set()
    return set(session.scalars(select(Business.name).where(Business.id.in_(business_ids))))


def ids_by_name(session: Session, names: Collection[str]) -> dict[str, int]:
    """The ids of the businesses named in ``names`` (an unknown name is left out)."""
    found: dict[str, int] = {}
    ordered = sorted(set(names))
    for start in range(0, len(ordered), 500):  # bounded IN lists
        chunk = ordered[start : start + 500]
        found.update(
            session.execute(
                select(Business.name, Business.id).where(Business.name.in_(chunk))
            ).all()
        )
    return found


def names_by_id(session: Session) -> dict[int, str]:
    """Every business's name by id: two columns, no ORM rows (loops read this at every pass,
    and whole rows cost ~6x as much with thousands of businesses)."""
    return dict(session.execute(select(Business.id, Business.name)).all())


def count_businesses(session: Session) -> int:
    return session.scalar(select(func.count(Business.id))) or 0


def create_business(
    session: Session,
    *,
    name: str,
    display_name: str,
    description: str,
    admins: list[str],
    user: str,
) -> tuple[Business, list[User]]:
    """A new business with ``admins`` (usernames) as its business-admins, and the ``Created``
    event. ``InvalidRequest`` for a reserved name (``gaia.domain.namespaces``) or naming an
    unknown admin; ``Conflict`` if the name is taken."""
    check_business_name(name)
    if session.scalars(select(Business.id).where(Business.name == name)).first():
        raise Conflict(f"business '{name}' already exists")
    admin_users = []
    for username in dict.fromkeys(admins):
        found = session.scalars(select(User).where(User.username == username)).one_or_none()
        if found is None:
            raise InvalidRequest(f"admins: user '{username}' does not exist")
        admin_users.append(found)
    business = Business(
        name=name, display_name=display_name, description=description, created_at=utcnow()
    )
    session.add(business)
    session.flush()
    for admin in admin_users:
        session.add(
            Membership(business_id=business.id, user_id=admin.id, role=Role.BUSINESS_ADMIN.value)
        )
    events.emit(
        session,
        object_kind="Business",
        object_name=business.name,
        business_id=business.id,
        business=business.name,
        reason="Created",
        message="business created",
        user=user,
    )
    return business, admin_users


def update_business(
    business: Business, *, display_name: str | None = None, description: str | None = None
) -> list[str]:
    """Apply the fields given (``None``: unchanged) and say what changed."""
    changed = []
    if display_name is not None:
        business.display_name = display_name
        changed.append("display name")
    if description is not None:
        business.description = description
        changed.append("description")
    return changed


def delete_business(session: Session, *, business: Business) -> None:
    """Delete ``business`` with its quotas and memberships; ``Conflict`` while it holds
    resources in any cluster."""
    in_use = [
        q
        for q in session.scalars(select(Quota).where(Quota.business_id == business.id))
        if not q.used().is_zero()
    ]
    if in_use:
        raise Conflict(
            f"business '{business.name}' still holds resources in {len(in_use)} cluster(s); "
            "delete its apps and disks first"
        )
    session.delete(business)


def usage_by_business(
    session: Session, *, business_ids: set[int] | None
) -> list[tuple[Business, int, int, tuple[int, ...]]]:
    """Up to ``OVERVIEW_LIMIT`` businesses among ``business_ids`` (all for ``None``) by name,
    each with its member count, its quota count and the summed amounts of its quotas
    (``QUOTA_SUMS`` order). One grouped query per count, whatever the number of businesses."""
    stmt = select(Business).order_by(Business.name).limit(OVERVIEW_LIMIT)
    if business_ids is not None:
        stmt = stmt.where(Business.id.in_(business_ids))
    businesses = list(session.scalars(stmt))
    ids = [b.id for b in businesses]
    members: dict[int, int] = {
        business_id: count
        for business_id, count in session.execute(
            select(Membership.business_id, func.count(Membership.id))
            .where(Membership.business_id.in_(ids))
            .group_by(Membership.business_id)
        )
    }
    per_biz = {
        row[0]: row[1:]
        for row in session.execute(
            select(Quota.business_id, func.count(Quota.id), *QUOTA_SUMS)
            .where(Quota.business_id.in_(ids))
            .group_by(Quota.business_id)
        )
    }
    out = []
    for business in businesses:
        agg = per_biz.get(business.id)
        count = int(agg[0]) if agg else 0
        sums = tuple(int(v) for v in agg[1:]) if agg else (0,) * len(QUOTA_SUMS)
        out.append((business, members.get(business.id, 0), count, sums))
    return out


# --- members -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberChange:
    """What ``set_member`` did: ``previous_role`` is ``None`` when the user was added."""

    user: User
    membership: Membership
    previous_role: str | None


def members_of(session: Session, *, business: Business) -> list[tuple[User, Membership]]:
    """The members of ``business`` with their membership, by username."""
    rows = session.execute(
        select(User, Membership)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.business_id == business.id)
        .order_by(User.username)
    )
    return [(u, m) for u, m in rows]


def _guard_last_admin(session: Session, *, business: Business, membership: Membership) -> None:
    if membership.role != Role.BUSINESS_ADMIN.value:
        return
    admins = (
        session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.business_id == business.id,
                Membership.role == Role.BUSINESS_ADMIN.value,
            )
        )
        or 0
    )
    if admins <= 1:
        raise Conflict(
            f"this is the last business-admin of '{business.name}'; make someone else "
            "business-admin first"
        )


def set_member(
    session: Session,
    *,
    business: Business,
    username: str,
    role: str,
    protect_last_admin: bool,
) -> MemberChange:
    """Add ``username`` to ``business`` as ``role``, or change their role. With
    ``protect_last_admin``, demoting the last business-admin is a ``Conflict``."""
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        raise NotFound(f"user '{username}' not found; a platform admin creates users")
    membership = session.scalars(
        select(Membership).where(
            Membership.business_id == business.id, Membership.user_id == user.id
        )
    ).one_or_none()
    previous = None
    if membership is None:
        membership = Membership(
            business_id=business.id, user_id=user.id, role=role, created_at=utcnow()
        )
        session.add(membership)
    else:
        if protect_last_admin and role != Role.BUSINESS_ADMIN.value:
            _guard_last_admin(session, business=business, membership=membership)
        previous = membership.role
        membership.role = role
    session.flush()
    return MemberChange(user=user, membership=membership, previous_role=previous)


def remove_member(
    session: Session, *, business: Business, username: str, protect_last_admin: bool
) -> Membership:
    """Remove ``username`` from ``business``; ``NotFound`` if not a member. With
    ``protect_last_admin``, removing the last business-admin is a ``Conflict``."""
    membership = session.scalars(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.business_id == business.id, User.username == username)
    ).one_or_none()
    if membership is None:
        raise NotFound(f"'{username}' is not a member of business '{business.name}'")
    if protect_last_admin:
        _guard_last_admin(session, business=business, membership=membership)
    session.delete(membership)
    return membership


# --- quotas --------------------------------------------------------------------------------


def quotas_of(session: Session, *, business: Business) -> list[tuple[Quota, Cluster]]:
    """The quotas of ``business`` with their cluster, by cluster name."""
    rows = session.execute(
        select(Quota, Cluster)
        .join(Cluster, Cluster.id == Quota.cluster_id)
        .where(Quota.business_id == business.id)
        .order_by(Cluster.name)
    )
    return [(q, c) for q, c in rows]


def find_quota(session: Session, *, business: Business, cluster: Cluster) -> Quota | None:
    return session.scalars(
        select(Quota).where(Quota.business_id == business.id, Quota.cluster_id == cluster.id)
    ).one_or_none()


def quota_of(session: Session, *, business: Business, cluster: Cluster) -> Quota:
    """The quota of ``business`` in ``cluster``; ``NotFound`` if it has none there."""
    quota = find_quota(session, business=business, cluster=cluster)
    if quota is None:
        raise NotFound(f"business '{business.name}' has no quota in cluster '{cluster.name}'")
    return quota


def put_quota(
    session: Session, *, business: Business, cluster: Cluster, hard: ResourceVector, user: str
) -> Quota:
    """Set the hard limits of ``business`` in ``cluster`` (creating the quota). Below current
    use is allowed: a ``QuotaBelowUsage`` warning event names the dimensions."""
    # Lock the row: a concurrent admission must see either the old or the new limits.
    quota = session.scalars(
        select(Quota)
        .where(Quota.business_id == business.id, Quota.cluster_id == cluster.id)
        .with_for_update()
    ).one_or_none()
    if quota is None:
        quota = Quota(business_id=business.id, cluster_id=cluster.id)
        quota.set_used(ResourceVector())
        session.add(quota)
    quota.set_hard(hard)
    quota.updated_at = utcnow()
    session.flush()
    over_dims = [n for n, *_ in DIMENSIONS if getattr(quota.used(), n) > getattr(hard, n)]
    if over_dims:
        events.emit(
            session,
            object_kind="Quota",
            object_name=f"{business.name}/{cluster.name}",
            business_id=business.id,
            business=business.name,
            cluster=cluster.name,
            reason="QuotaBelowUsage",
            message="quota set below current use on "
            + ", ".join(over_dims)
            + "; nothing is evicted, growth is refused until usage drops",
            type="Warning",
            user=user,
        )
    return quota


def delete_quota(session: Session, *, business: Business, cluster: Cluster) -> None:
    """Remove the quota of ``business`` in ``cluster``; ``Conflict`` while anything is used."""
    quota = quota_of(session, business=business, cluster=cluster)
    if not quota.used().is_zero():
        raise Conflict(
            f"business '{business.name}' still uses resources in cluster '{cluster.name}'; "
            "free them first"
        )
    session.delete(quota)
