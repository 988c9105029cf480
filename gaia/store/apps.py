"""Apps in the store: snapshots for the controller, writes that must not lose an update, quota.

The app controller works from a *snapshot* (plain data, no open session) read once per pass, so
it never holds a database transaction while it talks to a cluster. Its writes are short and
guarded: ``apply_rollout_step`` locks the app row and only moves the instance map if the app's
``generation`` is the one the controller planned from; a concurrent API change (scale, a new
upgrade) wins and the controller plans again on its next pass.

Quota: an app holds one reservation, owner ``app:<id>``, sized to what its instance map requests
(``hold_app_quota``): creation and scale-out go through admission, scale-in and stop give back.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gaia.domain.apps import TemplateSpec, parse_instance_map, template_from_document
from gaia.domain.resources import ResourceVector, check_fits, quota_exceeded
from gaia.domain.upgrades import ACTIVE, GrayUpgradePlan, RolloutState
from gaia.security import SecretBox
from gaia.store import quotas
from gaia.store.configs import load_config_data
from gaia.store.models import (
    App,
    AppBlacklist,
    AppRollout,
    AppTemplate,
    Business,
    Cluster,
    ConfigItem,
    GpuModelLimit,
    InstanceFailure,
    Quota,
    QuotaReservation,
)


def app_owner(app_id: int) -> str:
    return f"app:{app_id}"


@dataclass(frozen=True, slots=True)
class RolloutSnapshot:
    id: int
    plan: GrayUpgradePlan
    message: str


@dataclass(slots=True)
class AppSnapshot:
    id: int
    name: str
    namespace: str  # the business name
    business_id: int
    cluster_id: int
    state: str
    domain: str
    default_template: str
    generation: int
    instances: dict[int, str]
    templates: dict[str, TemplateSpec]
    rollout: RolloutSnapshot | None
    stopped: frozenset[int]
    blacklist: frozenset[str]
    recent_failures: dict[int, int] = field(default_factory=dict)
    gpu_model_limits: dict[str, int] = field(default_factory=dict)  # model -> hundredths


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    namespace: str
    name: str
    secret: bool
    updated_at: dt.datetime
    data: dict[str, str]


@dataclass(slots=True)
class Snapshot:
    clusters: dict[int, Cluster]
    apps: list[AppSnapshot]
    businesses: dict[str, int]  # name -> id
    configs: dict[tuple[str, str, bool], ConfigSnapshot]
    # cluster id -> business namespace -> hard limits, mirrored into the cluster
    quotas: dict[int, dict[str, ResourceVector]] = field(default_factory=dict)


def plan_of(row: AppRollout) -> GrayUpgradePlan:
    return GrayUpgradePlan(
        target=row.target,
        instance_ids=tuple(row.instance_ids),
        previous=parse_instance_map(row.previous),
        max_unavailable=row.max_unavailable,
        state=RolloutState(row.state),
    )


def load_templates(session: Session, app_id: int) -> dict[str, TemplateSpec]:
    rows = session.scalars(select(AppTemplate).where(AppTemplate.app_id == app_id))
    return {t.name: template_from_document(t.name, t.spec) for t in rows}


def load_snapshot(
    session: Session, *, now: dt.datetime, failure_memory: dt.timedelta, secrets: SecretBox
) -> Snapshot:
    clusters = {c.id: c for c in session.scalars(select(Cluster))}
    businesses = {b.id: b.name for b in session.scalars(select(Business))}
    templates: dict[int, dict[str, TemplateSpec]] = defaultdict(dict)
    for t in session.scalars(select(AppTemplate)):
        templates[t.app_id][t.name] = template_from_document(t.name, t.spec)
    rollouts = {
        r.app_id: r
        for r in session.scalars(
            select(AppRollout).where(AppRollout.state.in_([s.value for s in ACTIVE]))
        )
    }
    blacklist: dict[int, set[str]] = defaultdict(set)
    for b in session.scalars(select(AppBlacklist).where(AppBlacklist.expires_at > now)):
        blacklist[b.app_id].add(b.node)
    failures: dict[int, dict[int, int]] = defaultdict(dict)
    counted = session.execute(
        select(InstanceFailure.app_id, InstanceFailure.instance_id, func.count())
        .where(InstanceFailure.at >= now - failure_memory)
        .group_by(InstanceFailure.app_id, InstanceFailure.instance_id)
    )
    for app_id, instance_id, count in counted:
        failures[app_id][instance_id] = count
    model_limits: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for limit in session.scalars(select(GpuModelLimit)):
        model_limits[(limit.business_id, limit.cluster_id)][limit.model] = limit.gpu
    apps: list[AppSnapshot] = []
    referenced: set[tuple[int, str, bool]] = set()
    for row in session.scalars(select(App).order_by(App.id)):
        rollout = rollouts.get(row.id)
        apps.append(
            AppSnapshot(
                id=row.id,
                name=row.name,
                namespace=businesses[row.business_id],
                business_id=row.business_id,
                cluster_id=row.cluster_id,
                state=row.state,
                domain=row.domain,
                default_template=row.default_template,
                generation=row.generation,
                instances=parse_instance_map(row.instances),
                stopped=frozenset(int(i) for i in row.stopped or ()),
                templates=templates[row.id],
                rollout=None
                if rollout is None
                else RolloutSnapshot(rollout.id, plan_of(rollout), rollout.message),
                blacklist=frozenset(blacklist[row.id]),
                recent_failures=failures[row.id],
                gpu_model_limits=dict(model_limits.get((row.business_id, row.cluster_id), {})),
            )
        )
        for template in templates[row.id].values():
            for ref in template.body.get("configs", []):
                referenced.add((row.business_id, ref["name"], bool(ref.get("secret", False))))
    configs: dict[tuple[str, str, bool], ConfigSnapshot] = {}
    for business_id, name, secret in referenced:
        item = session.scalars(
            select(ConfigItem).where(
                ConfigItem.business_id == business_id,
                ConfigItem.name == name,
                ConfigItem.secret == secret,
            )
        ).one_or_none()
        if item is None:
            continue
        data = load_config_data(
            session, secrets=secrets, business_id=business_id, name=name, secret=secret
        )
        namespace = businesses[business_id]
        configs[(namespace, name, secret)] = ConfigSnapshot(
            namespace, name, secret, item.updated_at, data or {}
        )
    quotas: dict[int, dict[str, ResourceVector]] = defaultdict(dict)
    for quota in session.scalars(select(Quota)):
        quotas[quota.cluster_id][businesses[quota.business_id]] = quota.hard()
    return Snapshot(
        clusters=clusters,
        apps=apps,
        businesses={name: bid for bid, name in businesses.items()},
        configs=configs,
        quotas=dict(quotas),
    )


def apply_rollout_step(
    session: Session,
    *,
    app_id: int,
    rollout_id: int,
    generation: int,
    assignments: dict[int, str],
    state: str,
    message: str,
    now: dt.datetime,
) -> int | None:
    """Write one rollout step; returns the app's new generation, or None when the app changed
    since the controller read it (nothing is written then)."""
    app = session.scalars(select(App).where(App.id == app_id).with_for_update()).one_or_none()
    rollout = session.get(AppRollout, rollout_id)
    if app is None or rollout is None or app.generation != generation:
        return None
    if rollout.state not in {s.value for s in ACTIVE}:
        return None  # paused or rolled back by a user meanwhile
    if assignments:
        instances = dict(app.instances)
        for iid, version in assignments.items():
            if str(iid) in instances:
                instances[str(iid)] = version
        app.instances = instances
        app.generation += 1
        app.updated_at = now
    rollout.state = state
    rollout.message = message
    rollout.updated_at = now
    if state in (RolloutState.SUCCEEDED, RolloutState.ROLLED_BACK):
        rollout.finished_at = now
    return app.generation


def record_failure(
    session: Session,
    *,
    app_id: int,
    instance_id: int,
    node: str,
    cause: str,
    exit_code: int | None,
    message: str,
    at: dt.datetime,
) -> bool:
    """Insert a failure once; True when it was new."""
    values: dict[str, Any] = {
        "app_id": app_id,
        "instance_id": instance_id,
        "node": node,
        "cause": cause,
        "exit_code": exit_code,
        "message": message[:2000],
        "at": at,
    }
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    # RETURNING, not rowcount: psycopg reports no reliable rowcount for DO NOTHING
    stmt = (
        insert(InstanceFailure)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(InstanceFailure.id)
    )
    return session.execute(stmt).first() is not None


def failures_on_node(
    session: Session, *, app_id: int, node: str, causes: frozenset[str], since: dt.datetime
) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                InstanceFailure.app_id == app_id,
                InstanceFailure.node == node,
                InstanceFailure.cause.in_(sorted(causes)),
                InstanceFailure.at >= since,
            )
        )
        or 0
    )


def blacklist_node(
    session: Session,
    *,
    app_id: int,
    node: str,
    failures: int,
    reason: str,
    now: dt.datetime,
    ttl: dt.timedelta,
) -> bool:
    """Blacklist ``node`` for the app (or renew an expired entry); True if it is new."""
    row = session.scalars(
        select(AppBlacklist).where(AppBlacklist.app_id == app_id, AppBlacklist.node == node)
    ).one_or_none()
    if row is not None and row.expires_at > now:
        return False
    if row is None:
        row = AppBlacklist(app_id=app_id, node=node)
        session.add(row)
    row.failures = failures
    row.reason = reason
    row.created_at = now
    row.expires_at = now + ttl
    session.flush()
    return True


def purge_app(session: Session, app_id: int) -> None:
    """Remove a deleted app's rows once the cluster holds nothing of it."""
    session.execute(delete(App).where(App.id == app_id))


# ---------------------------------------------------------------- quota


def hold_app_quota(
    session: Session, *, business: Business, cluster: Cluster, app_id: int, amount: ResourceVector
) -> None:
    """Resize the app's reservation to ``amount``: growth is admitted against the quota (raises
    ``QuotaExceeded`` naming the dimensions), shrinking always succeeds. The quota row is locked,
    so concurrent scale-outs of several apps cannot over-commit."""
    owner = app_owner(app_id)
    quota = session.scalars(
        select(Quota)
        .where(Quota.business_id == business.id, Quota.cluster_id == cluster.id)
        .with_for_update()
    ).one_or_none()
    current = None
    if quota is not None:
        current = session.scalars(
            select(QuotaReservation).where(
                QuotaReservation.quota_id == quota.id, QuotaReservation.owner == owner
            )
        ).one_or_none()
    if current is None:
        if amount.is_zero():
            return
        quotas.reserve(
            session, business=business, cluster=cluster, request=amount, owner=owner, commit=True
        )
        return
    assert quota is not None
    held = current.amounts()
    growth = ResourceVector(
        **{
            dim: max(0, getattr(amount, dim) - getattr(held, dim))
            for dim in ResourceVector.__dataclass_fields__
        }
    )
    if not growth.is_zero():
        violations = check_fits(requested=growth, used=quota.used(), hard=quota.hard())
        if violations:
            raise quota_exceeded(
                business=business.name, cluster=cluster.name, violations=violations
            )
    if amount.is_zero():
        quotas.release(session, current)
        return
    quota.set_used(quota.used().minus(held) + amount)
    current.set_amounts(amount)
    current.state = "committed"
    current.expires_at = None
    quota.updated_at = dt.datetime.now(dt.UTC)
    session.flush()


def release_app_quota(
    session: Session, *, business: Business, cluster: Cluster, app_id: int
) -> None:
    hold_app_quota(
        session, business=business, cluster=cluster, app_id=app_id, amount=ResourceVector()
    )
