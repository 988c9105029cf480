"""Alert policies and silences as stored: the existence checks a policy's scope needs, the writes,
and the reads of the rule-file export.

A policy's scope pins labels (``scope_matchers``): a cluster or node policy pins a registered
cluster, an app policy an app of its business. Deleting a policy first resolves its firing records
and queues their resolved notices (``resolve_policy_records``), in the same transaction, so no
alert stays firing forever for a rule that is gone.

What a policy may say (its metric in the catalogue, its templates) is checked above the store, by
``gaia.monitor.alerting.policies``, which calls these in the order the API answers errors.
See docs/architecture.md (the store).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.domain.alerts import ScopeKind, check_matchers
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.store.alerting.outbox import queue_notifications
from gaia.store.alerting.owned import Owners, business_names, owned_select
from gaia.store.models import AlertPolicy, AlertRecord, AlertSilence, App, Business, Cluster

SILENCE_MAX = dt.timedelta(days=90)


def scope_matchers(
    session: Session,
    *,
    kind: ScopeKind,
    cluster: str | None,
    node: str | None,
    app: str | None,
    business: Business | None,
) -> dict[str, str]:
    """The labels a policy's scope pins, checked against what exists."""
    if kind in (ScopeKind.CLUSTER, ScopeKind.NODE):
        if business is not None:
            raise InvalidRequest(
                f"a {kind.value} policy is the platform's: omit 'business' (platform admins)"
            )
        if not cluster:
            raise InvalidRequest(f"scope.cluster is required for a {kind.value} policy")
        if not cluster_exists(session, cluster):
            raise InvalidRequest(f"cluster '{cluster}' is not registered")
        if kind is ScopeKind.NODE and not node:
            raise InvalidRequest("scope.node is required for a node policy")
        pinned = {"cluster": cluster}
        if kind is ScopeKind.NODE:
            pinned["node"] = node or ""
        return pinned
    if business is None:
        raise InvalidRequest(f"a {kind.value} policy needs 'business'")
    pinned = {"business": business.name}
    if cluster:
        pinned["cluster"] = cluster
    if kind is ScopeKind.APP:
        if not app:
            raise InvalidRequest("scope.app is required for an app policy")
        exists = session.scalars(
            select(App.id).where(App.business_id == business.id, App.name == app)
        ).first()
        if exists is None:
            raise InvalidRequest(f"app '{app}' not found in business '{business.name}'")
        pinned["app"] = app
    return pinned


def policy_or_none(session: Session, policy_id: int) -> AlertPolicy | None:
    return session.get(AlertPolicy, policy_id)


def cluster_exists(session: Session, name: str) -> bool:
    return session.scalars(select(Cluster.id).where(Cluster.name == name)).first() is not None


def require_cluster(session: Session, name: str) -> None:
    if not cluster_exists(session, name):
        raise NotFound(f"cluster '{name}' not found")


def builtin_keys_enabled(session: Session, cluster: str) -> set[str]:
    """The built-in rules already enabled on a cluster (their platform policies' keys)."""
    return {
        p.builtin_key
        for p in session.scalars(
            select(AlertPolicy).where(
                AlertPolicy.business_id.is_(None), AlertPolicy.builtin_key != ""
            )
        )
        if (p.matchers or {}).get("cluster") == cluster
    }


def resolve_policy_records(
    session: Session, policy: AlertPolicy, *, why: str, now: dt.datetime
) -> int:
    """Resolve a policy's firing records, with notices (none for a silenced one)."""
    records = list(
        session.scalars(
            select(AlertRecord).where(
                AlertRecord.policy_id == policy.id, AlertRecord.status == "firing"
            )
        )
    )
    for record in records:
        record.status = "resolved"
        record.resolved_at = now
        record.summary = f"{record.summary} ({why})".strip()
        if record.silenced_by is None:
            queue_notifications(session, record=record, policy=policy, event="resolved", now=now)
    return len(records)


def delete_policy(session: Session, policy: AlertPolicy, *, now: dt.datetime) -> int:
    """Delete a policy, resolving its firing alerts first; returns how many it resolved."""
    resolved = resolve_policy_records(session, policy, why="policy deleted", now=now)
    session.flush()
    session.delete(policy)
    return resolved


def enabled_policies(
    session: Session, *, owners: Owners
) -> tuple[list[AlertPolicy], dict[int, str]]:
    """The enabled policies of ``owners``, by id, and their businesses' names (the rule-file
    export)."""
    stmt = owned_select(AlertPolicy, owners, where=[AlertPolicy.enabled])
    policies = list(session.scalars(stmt.order_by(AlertPolicy.id)))
    return policies, business_names(session, (p.business_id for p in policies))


def add_policies(session: Session, policies: Sequence[AlertPolicy]) -> None:
    """Insert new policies (their ids assigned)."""
    session.add_all(policies)
    session.flush()


def apply_policy_changes(
    policy: AlertPolicy, changes: Mapping[str, object], *, now: dt.datetime
) -> None:
    """Set the changed fields (a None leaves a field as it is; a threshold cannot be null)."""
    for key, value in changes.items():
        if value is None and key != "threshold":
            continue
        if value is None:
            raise InvalidRequest("threshold cannot be null")
        setattr(policy, key, value)
    policy.updated_at = now


# ---------------------------------------------------------------- silences


def create_silence(
    session: Session,
    *,
    business_id: int | None,
    matchers: Mapping[str, str],
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    comment: str,
    created_by: str,
) -> AlertSilence:
    """A new silence; a business's may only match its own alerts."""
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise InvalidRequest("starts_at and ends_at need a time zone (e.g. 2026-11-27T10:00:00Z)")
    if ends_at <= starts_at:
        raise InvalidRequest("ends_at must be after starts_at")
    if ends_at - starts_at > SILENCE_MAX:
        raise InvalidRequest("a silence lasts at most 90 days")
    checked = check_matchers(matchers)
    if business_id is not None:
        business = session.get(Business, business_id)
        assert business is not None
        if checked.get("business", business.name) != business.name:
            raise InvalidRequest("a business's silence can only match its own alerts")
    silence = AlertSilence(
        business_id=business_id,
        matchers=checked,
        starts_at=starts_at,
        ends_at=ends_at,
        comment=comment,
        created_by=created_by,
    )
    session.add(silence)
    session.flush()
    return silence


def expire_silence(silence: AlertSilence, *, now: dt.datetime) -> None:
    """End a silence now (it stays, expired); one already over is left as it is."""
    if silence.ends_at > now:
        silence.ends_at = max(now, silence.starts_at)
