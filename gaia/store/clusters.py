"""Registered clusters at rest: who may see which, registration, changes and removal.

A cluster row holds what the platform needs to reach the cluster (the kind, an encrypted
kubeconfig or a ``sim`` spec) and what the health loop last observed. Validating a kubeconfig or
a sim spec is the API's and the providers' job and happens before these functions are called;
this module writes what it is given. Removing a cluster never contacts the cluster. A cluster
that still holds apps or quotas is not removed silently: ``delete_cluster`` refuses with a
``Conflict`` naming them, and only ``force`` removes it, returning everything dropped with it (the
foreign keys cascade) so the caller can record it. See docs/architecture.md, "store".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Select, func, inspect, select
from sqlalchemy.orm import Session

from gaia.domain.errors import Conflict, NotFound
from gaia.domain.resources import DIMENSIONS
from gaia.store import events
from gaia.store.models import App, Business, Cluster, Quota, utcnow
from gaia.store.paging import page_of

# The per-dimension sums of used and hard amounts, in DIMENSIONS order: used first, then hard.
QUOTA_SUMS = [func.coalesce(func.sum(getattr(Quota, f"used_{n}")), 0) for n, *_ in DIMENSIONS] + [
    func.coalesce(func.sum(getattr(Quota, f"hard_{n}")), 0) for n, *_ in DIMENSIONS
]


# what the health loop writes on every probe: no change to how the cluster is reached
_OBSERVED = frozenset(
    {
        "health",
        "health_message",
        "health_checked_at",
        "health_changed_at",
        "node_count",
        "ready_node_count",
    }
)


def cluster_changed(session: Session) -> bool:
    """Whether a flush changed or removed a registered cluster (its name, kind, kubeconfig...;
    the health loop's observations aside): what clears a cache of cluster lookups
    (``gaia.store.cache.CommitClearedCache.watch``). A new cluster changes no cached lookup:
    failed lookups are not cached."""
    return any(isinstance(obj, Cluster) for obj in session.deleted) or any(
        isinstance(obj, Cluster)
        and any(a.history.has_changes() for a in inspect(obj).attrs if a.key not in _OBSERVED)
        for obj in session.dirty
    )


def visible_clusters(business_ids: set[int] | None) -> Select[Cluster]:
    """Clusters where one of ``business_ids`` holds a quota; every cluster for ``None``."""
    stmt = select(Cluster)
    if business_ids is not None:
        stmt = stmt.where(
            Cluster.id.in_(select(Quota.cluster_id).where(Quota.business_id.in_(business_ids)))
        )
    return stmt


def page_clusters(
    session: Session, *, business_ids: set[int] | None, limit: int, cursor: str | None
) -> tuple[list[Cluster], str | None]:
    """The clusters visible to ``business_ids`` (``visible_clusters``), by name."""
    return page_of(
        session, visible_clusters(business_ids), key=Cluster.name, limit=limit, cursor=cursor
    )


def cluster_named(session: Session, name: str, *, business_ids: set[int] | None = None) -> Cluster:
    """The cluster ``name`` if one of ``business_ids`` may see it (every cluster for ``None``);
    ``NotFound`` otherwise, exactly as for a cluster that is not registered, so names of
    clusters a caller may not use do not leak."""
    cluster = session.scalars(
        visible_clusters(business_ids).where(Cluster.name == name)
    ).one_or_none()
    if cluster is None:
        raise NotFound(f"cluster '{name}' not found")
    return cluster


def check_name_free(session: Session, name: str) -> None:
    """``Conflict`` if a cluster ``name`` is registered. Registration checks this before it
    validates the connection, so a taken name is the first thing a caller hears of."""
    if session.scalars(select(Cluster.id).where(Cluster.name == name)).first():
        raise Conflict(f"cluster '{name}' already exists")


def create_cluster(
    session: Session,
    *,
    name: str,
    kind: str,
    region: str,
    zone: str,
    labels: dict[str, str],
    description: str,
    kubeconfig_encrypted: bytes | None,
    sim_spec: dict[str, Any],
    user: str,
) -> Cluster:
    """Register a cluster (health ``Unknown`` until the health loop has looked) and emit the
    ``Registered`` event."""
    now = utcnow()
    cluster = Cluster(
        name=name,
        kind=kind,
        region=region,
        zone=zone,
        labels=dict(labels),
        description=description,
        created_at=now,
        updated_at=now,
        health="Unknown",
        sim_spec=sim_spec,
    )
    if kubeconfig_encrypted is not None:
        cluster.kubeconfig_encrypted = kubeconfig_encrypted
    session.add(cluster)
    session.flush()
    events.emit(
        session,
        object_kind="Cluster",
        object_name=name,
        cluster=name,
        reason="Registered",
        message=f"{kind} cluster registered",
        user=user,
    )
    return cluster


def update_cluster(
    cluster: Cluster,
    *,
    region: str | None = None,
    zone: str | None = None,
    description: str | None = None,
    labels: dict[str, str] | None = None,
    kubeconfig_encrypted: bytes | None = None,
) -> list[str]:
    """Apply the fields given (``None``: unchanged) and say what changed. A new kubeconfig
    resets the health to ``Unknown``: what was observed was observed through the old one."""
    changed = []
    for field, value in (("region", region), ("zone", zone), ("description", description)):
        if value is not None:
            setattr(cluster, field, value)
            changed.append(field)
    if labels is not None:
        cluster.labels = dict(labels)
        changed.append("labels")
    if kubeconfig_encrypted is not None:
        cluster.kubeconfig_encrypted = kubeconfig_encrypted
        cluster.health = "Unknown"
        changed.append("kubeconfig (replaced)")
    cluster.updated_at = utcnow()
    return changed


@dataclasses.dataclass(frozen=True)
class ClusterHoldings:
    """What a cluster holds for businesses: app names per business and the businesses holding
    a quota in it, each sorted by name."""

    apps: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    quotas: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.apps or self.quotas)

    def describe(self) -> str:
        """One line naming every app (as ``business/app``) and every quota."""
        parts = []
        if self.apps:
            names = [f"{b}/{a}" for b, apps in self.apps.items() for a in apps]
            parts.append(f"{len(names)} app(s): {', '.join(names)}")
        if self.quotas:
            parts.append(f"{len(self.quotas)} quota(s) of: {', '.join(self.quotas)}")
        return "; ".join(parts) or "nothing"


def cluster_holdings(session: Session, cluster: Cluster) -> ClusterHoldings:
    """The apps and quotas held in ``cluster`` (two queries, whatever their number)."""
    apps: dict[str, list[str]] = {}
    for business, app in session.execute(
        select(Business.name, App.name)
        .join(Business, Business.id == App.business_id)
        .where(App.cluster_id == cluster.id)
        .order_by(Business.name, App.name)
    ):
        apps.setdefault(business, []).append(app)
    quotas = list(
        session.scalars(
            select(Business.name)
            .join(Quota, Quota.business_id == Business.id)
            .where(Quota.cluster_id == cluster.id)
            .order_by(Business.name)
        )
    )
    return ClusterHoldings(apps=apps, quotas=quotas)


def delete_cluster(session: Session, *, cluster: Cluster, force: bool = False) -> ClusterHoldings:
    """Unregister ``cluster``. If it still holds apps or quotas, ``Conflict`` naming them unless
    ``force``; with ``force`` they are dropped with it (the foreign keys cascade) and returned,
    so the removal can be recorded in full."""
    held = cluster_holdings(session, cluster)
    if held and not force:
        raise Conflict(
            f"cluster '{cluster.name}' still holds {held.describe()}; delete those apps and "
            "quotas first, or remove the cluster with force=true to drop them with it",
            details={"apps": held.apps, "quotas": held.quotas},
        )
    session.delete(cluster)
    return held


def usage_by_cluster(
    session: Session, *, business_ids: set[int] | None
) -> list[tuple[Cluster, int, tuple[int, ...]]]:
    """Each visible cluster by name, with how many quotas of ``business_ids`` (all for
    ``None``) it holds and their summed amounts (``QUOTA_SUMS`` order, zeros without quotas).
    The sums are one grouped query, so the cost does not grow with the businesses."""
    quota_filter = [] if business_ids is None else [Quota.business_id.in_(business_ids)]
    per_cluster = {
        row[0]: row[1:]
        for row in session.execute(
            select(Quota.cluster_id, func.count(Quota.id), *QUOTA_SUMS)
            .where(*quota_filter)
            .group_by(Quota.cluster_id)
        )
    }
    out = []
    for cluster in session.scalars(visible_clusters(business_ids).order_by(Cluster.name)):
        agg = per_cluster.get(cluster.id)
        count = int(agg[0]) if agg else 0
        sums = tuple(int(v) for v in agg[1:]) if agg else (0,) * len(QUOTA_SUMS)
        out.append((cluster, count, sums))
    return out
