"""Apps in the store: the API's spec changes, snapshots for the controller, guarded writes, quota.

What flows in: the API's changes of an app's spec (create, update, delete, stop and start the
app; add and delete a version; scale out and in; stop and start chosen instances; start, pause,
resume and roll back a gray upgrade; clear a blacklist entry), each one keyword-only function
that checks what only the store can check (a taken name, ids not in the map, an upgrade in
progress), admits quota where the app may grow, and writes. The routes of ``gaia.api.routes.apps``
parse and authorise before and shape the answer after; the errors raised here (``Conflict``,
``InvalidRequest``, ``NotFound``, ``QuotaExceeded``) carry the messages users read.

What flows out: the app controller works from a *snapshot* (plain data, no open session) read
once per pass, so it never holds a database transaction while it talks to a cluster. Its writes
are short and guarded: ``apply_upgrade_step`` locks the app row and only moves the instance map
if the app's ``generation`` is the one the controller planned from; a concurrent API change
(scale, a new upgrade) wins and the controller plans again on its next pass. Every spec change
bumps ``generation`` for that reason.

Quota: an app holds one reservation, owner ``app:<id>``, sized to what its instance map requests
(``hold_app_quota``): creation and scale-out go through admission, scale-in and stop give back;
the arithmetic is ``gaia.domain.resources`` (see docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import InstrumentedAttribute, Session, defer

from gaia.domain.apps import (
    MAX_INSTANCES,
    TemplateSpec,
    demand,
    dump_instance_map,
    parse_instance_map,
    template_from_document,
)
from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.network import policy_of
from gaia.domain.resources import ResourceVector, check_fits, quota_exceeded
from gaia.domain.upgrades import ACTIVE, GrayUpgradePlan, Prepull, UpgradeState, new_plan
from gaia.security import SecretBox
from gaia.store import network, quotas
from gaia.store.configs import load_config_data
from gaia.store.instance_configs import find_config
from gaia.store.models import (
    App,
    AppBlacklist,
    AppTemplate,
    AppUpgrade,
    Business,
    Cluster,
    ConfigItem,
    GpuModelLimit,
    InstanceFailure,
    OperationRecord,
    Quota,
    QuotaReservation,
    utcnow,
)
from gaia.store.paging import page_of


def app_owner(app_id: int) -> str:
    return f"app:{app_id}"


@dataclass(frozen=True, slots=True)
class UpgradeSnapshot:
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
    upgrade: UpgradeSnapshot | None
    stopped: frozenset[int]
    blacklist: frozenset[str]
    recent_failures: dict[int, int] = field(default_factory=dict)
    gpu_model_limits: dict[str, int] = field(default_factory=dict)  # model -> hundredths
    # floating-IP apps (issue 19): instance id -> the subnet of the address it keeps, and the
    # (subnet, zone) of the cluster's pools that have a free address
    ip_subnets: dict[int, str] = field(default_factory=dict)
    free_subnets: frozenset[tuple[str, str]] = frozenset()
    # what may be pulled onto the app's nodes ahead of time (``gaia.domain.upgrades.Prepull``)
    prepull: Prepull = Prepull.UPGRADES


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
    businesses: dict[str, int]  # name -> id, of the businesses that have apps or quotas
    configs: dict[tuple[str, str, bool], ConfigSnapshot]
    # cluster id -> business namespace -> hard limits, mirrored into the cluster
    quotas: dict[int, dict[str, ResourceVector]] = field(default_factory=dict)


def plan_of(row: AppUpgrade) -> GrayUpgradePlan:
    return GrayUpgradePlan(
        target=row.target,
        instance_ids=tuple(row.instance_ids),
        previous=parse_instance_map(row.previous),
        max_unavailable=row.max_unavailable,
        state=UpgradeState(row.state),
    )


def load_templates(session: Session, app_id: int) -> dict[str, TemplateSpec]:
    """The app's versions, in the order they were declared."""
    rows = session.scalars(
        select(AppTemplate).where(AppTemplate.app_id == app_id).order_by(AppTemplate.id)
    )
    return {t.name: template_from_document(t.name, t.spec) for t in rows}


# the tables whose newest ids make the change mark: operation records (every change through the
# API, on any replica, writes one), app versions and upgrades (a pipeline's deploy writes those
# without a record)
_MARKED: tuple[type[OperationRecord] | type[AppTemplate] | type[AppUpgrade], ...] = (
    OperationRecord,
    AppTemplate,
    AppUpgrade,
)
# PostgreSQL gives a row its id when it is inserted, so a transaction may commit after one with
# a higher id: below its top ids a mark keeps the ids it has not seen, and the next tick reads
# those too. A full pass's mark looks this many ids below each top for them...
GAP_WINDOW = 64
# ...and an id is waited for this long at most: a rolled-back insert or a deleted row never shows
# up (and the resync's full pass reads everything anyway)
GAP_WAIT = dt.timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class ChangeMark:
    """What tells the app controller whether the store may have changed since it last looked:
    per table of ``_MARKED``, the newest id (``top``) and the ids below it not committed yet
    when it was read (``missing``: id -> when first missed; read-only). Equal marks do not prove
    nothing changed (the controller's own writes and time itself are not in it): the controller
    also resyncs on a slow period."""

    top: tuple[int, int, int]
    missing: tuple[Mapping[int, dt.datetime], ...] = ({}, {}, {})


def _tops(session: Session) -> tuple[int, int, int]:
    a, b, c = (session.scalar(select(func.max(table.id))) or 0 for table in _MARKED)
    return a, b, c


def change_mark(session: Session, *, now: dt.datetime) -> ChangeMark:
    """The mark as a full pass reads it: three primary-key lookups (a quiet controller reads
    the tops each second instead of its whole snapshot), and the ids missing in the
    ``GAP_WINDOW`` below each."""
    top = _tops(session)
    missing = []
    for table, high in zip(_MARKED, top, strict=True):
        low = max(high - GAP_WINDOW, 0)
        present = set(session.scalars(select(table.id).where(table.id > low, table.id <= high)))
        missing.append({i: now for i in range(low + 1, high + 1) if i not in present})
    return ChangeMark(top, tuple(missing))


# what an operation record says it changed (``OperationRecord.touches``): "<business>/<app>" one
# app, TOUCHES_NOTHING nothing the app controller reads, TOUCHES_ALL (or None) anything
TOUCHES_NOTHING = ""
TOUCHES_ALL = "*"
# the most ids a tick reads per table to tell whose changes they are; beyond, a full pass
CHANGES_READ = 200


def touches_app(business: str, app: str) -> str:
    return f"{business}/{app}"  # neither name holds a "/"


def app_touched(touches: str | None) -> tuple[str, str] | None:
    """(business, app) of a record that touches one app, else None."""
    if not touches or touches == TOUCHES_ALL:
        return None
    business, _, app = touches.partition("/")
    return business, app


@dataclass(frozen=True, slots=True)
class AppWritten:
    """What the API tells the app controller once it has committed a change to one app (its
    business, which is its namespace, and its name): look at that app now."""

    namespace: str
    name: str


def changed_apps(
    session: Session, *, since: ChangeMark, now: dt.datetime
) -> tuple[ChangeMark, set[int] | None]:
    """The change mark now and the ids of the apps whose changes took it past ``since`` (an
    earlier mark) or filled one of its missing ids, or None when one of them is no one app's
    (a quota, a config, a cluster, an app created) or there are too many to read (more than
    ``CHANGES_READ`` ids in a table): only a full pass reads those.

    An operation record says what its call changed (``OperationRecord.touches``, which the API
    sets: a failed call, a login or an alert rule changed nothing the controller reads); a new
    app version or upgrade (a pipeline's deploy writes those without a record) concerns its
    app. A record, version or upgrade that commits after one with a higher id (PostgreSQL,
    several writers) is seen at the next tick all the same: the mark keeps the ids it skipped
    (``ChangeMark.missing``) and reads them again."""
    top = _tops(session)
    if top == since.top and not any(since.missing):
        return since, set()
    rows: list[Sequence[Any]] = []
    missing: list[dict[int, dt.datetime]] = []
    columns = (
        (OperationRecord.touches,),
        (AppTemplate.app_id,),
        (AppUpgrade.app_id,),
    )
    for table, extra, low, high, before in zip(
        _MARKED, columns, since.top, top, since.missing, strict=True
    ):
        waited = {i: at for i, at in before.items() if now - at < GAP_WAIT}
        if high - low + len(waited) > CHANGES_READ:
            return since, None
        wanted = (table.id > low) & (table.id <= high)
        if waited:
            wanted = wanted | table.id.in_(sorted(waited))
        found = session.execute(select(table.id, *extra).where(wanted)).all()
        ids = {row[0] for row in found}
        gaps = {i: at for i, at in waited.items() if i not in ids}
        gaps.update((i, now) for i in range(low + 1, high + 1) if i not in ids)
        rows.append(found)
        missing.append(gaps)
    mark = ChangeMark(top, tuple(missing))
    names: set[tuple[str, str]] = set()
    for _id, touches in rows[0]:
        if touches == TOUCHES_NOTHING:
            continue
        app = app_touched(touches)
        if app is None:
            return mark, None  # anything, or a record from before the API said (None)
        names.add(app)
    ids = {app_id for _id, app_id in rows[1]} | {app_id for _id, app_id in rows[2]}
    if names:
        found_apps = session.execute(
            select(App.id, Business.name, App.name)
            .join(Business, Business.id == App.business_id)
            .where(App.name.in_({name for _, name in names}))
        ).all()
        by_name = {(business, name): app_id for app_id, business, name in found_apps}
        if not names <= by_name.keys():
            return mark, None  # an app gone (purged) meanwhile: let a full pass see
        ids |= {by_name[key] for key in names}
    return mark, ids


def load_snapshot(
    session: Session,
    *,
    now: dt.datetime,
    failure_memory: dt.timedelta,
    secrets: SecretBox,
    app_ids: Collection[int] | None = None,
) -> Snapshot:
    """What the app controller reads in one pass; ``app_ids``: only those apps (the work
    queue's due ones), with every cluster and quota all the same."""
    clusters = {c.id: c for c in session.scalars(select(Cluster))}
    ids = None if app_ids is None else sorted(app_ids)

    def of_apps(query: Any, column: InstrumentedAttribute[int]) -> Any:  # any SELECT
        return query if ids is None else query.where(column.in_(ids))

    # the names of the businesses that have apps or quotas, not of every business: a pass reads
    # this every second, and a platform may hold thousands that have neither
    businesses: dict[int, str] = {}
    templates: dict[int, dict[str, TemplateSpec]] = defaultdict(dict)
    # in the order they were declared (``template_to_prepull`` takes the newest)
    for t in session.scalars(
        of_apps(select(AppTemplate), AppTemplate.app_id).order_by(AppTemplate.id)
    ):
        templates[t.app_id][t.name] = template_from_document(t.name, t.spec)
    upgrades = {
        r.app_id: r
        for r in session.scalars(
            of_apps(
                select(AppUpgrade).where(AppUpgrade.state.in_([s.value for s in ACTIVE])),
                AppUpgrade.app_id,
            )
        )
    }
    blacklist: dict[int, set[str]] = defaultdict(set)
    for b in session.scalars(
        of_apps(select(AppBlacklist).where(AppBlacklist.expires_at > now), AppBlacklist.app_id)
    ):
        blacklist[b.app_id].add(b.node)
    failures: dict[int, dict[int, int]] = defaultdict(dict)
    counted = session.execute(
        of_apps(
            select(InstanceFailure.app_id, InstanceFailure.instance_id, func.count()).where(
                InstanceFailure.at >= now - failure_memory
            ),
            InstanceFailure.app_id,
        ).group_by(InstanceFailure.app_id, InstanceFailure.instance_id)
    )
    for app_id, instance_id, count in counted:
        failures[app_id][instance_id] = count
    model_limits: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    for limit in session.scalars(select(GpuModelLimit)):
        model_limits[(limit.business_id, limit.cluster_id)][limit.model] = limit.gpu
    apps: list[AppSnapshot] = []
    referenced: set[tuple[int, str, bool]] = set()
    for row, business_name in session.execute(
        of_apps(
            select(App, Business.name).join(Business, Business.id == App.business_id), App.id
        ).order_by(App.id)
    ):
        businesses[row.business_id] = business_name
        upgrade = upgrades.get(row.id)
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
                upgrade=None
                if upgrade is None
                else UpgradeSnapshot(upgrade.id, plan_of(upgrade), upgrade.message),
                blacklist=frozenset(blacklist[row.id]),
                recent_failures=failures[row.id],
                gpu_model_limits=dict(model_limits.get((row.business_id, row.cluster_id), {})),
                prepull=Prepull(row.prepull),
            )
        )
        if any(policy_of(t.body) for t in templates[row.id].values()):
            floating = network.floating_view(
                session, cluster_id=row.cluster_id, business_id=row.business_id, app=row.name
            )
            apps[-1].ip_subnets, apps[-1].free_subnets = floating
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
    for quota, business_name in session.execute(
        select(Quota, Business.name).join(Business, Business.id == Quota.business_id)
    ):
        businesses[quota.business_id] = business_name
        quotas[quota.cluster_id][business_name] = quota.hard()
    return Snapshot(
        clusters=clusters,
        apps=apps,
        businesses={name: bid for bid, name in businesses.items()},
        configs=configs,
        quotas=dict(quotas),
    )


def apply_upgrade_step(
    session: Session,
    *,
    app_id: int,
    upgrade_id: int,
    generation: int,
    assignments: dict[int, str],
    state: str,
    message: str,
    now: dt.datetime,
) -> int | None:
    """Write one upgrade step; returns the app's new generation, or None when the app changed
    since the controller read it (nothing is written then)."""
    app = session.scalars(select(App).where(App.id == app_id).with_for_update()).one_or_none()
    upgrade = session.get(AppUpgrade, upgrade_id)
    if app is None or upgrade is None or app.generation != generation:
        return None
    if upgrade.state not in {s.value for s in ACTIVE}:
        return None  # paused or rolled back by a user meanwhile
    if assignments:
        instances = dict(app.instances)
        for iid, version in assignments.items():
            if str(iid) in instances:
                instances[str(iid)] = version
        app.instances = instances
        app.generation += 1
        app.updated_at = now
    upgrade.state = state
    upgrade.message = message
    upgrade.updated_at = now
    if state in (UpgradeState.SUCCEEDED, UpgradeState.ROLLED_BACK):
        upgrade.finished_at = now
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
    growth = amount.minus(held)
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


# ---------------------------------------------------------------- spec changes of the API
#
# Each function below is one change a route asks for: it checks what only the store can check
# (name clashes, the instance map, the active upgrade), admits quota where the app may grow, and
# writes. The API's routes parse and authorise before, and shape the answer after. Callers hold
# the app row locked (``find_app(..., lock=True)``) for every change of its map.


def find_app(session: Session, *, business: Business, name: str, lock: bool = False) -> App:
    """The app ``name`` of ``business`` (locked for update when ``lock``), or ``NotFound``."""
    stmt = select(App).where(App.business_id == business.id, App.name == name)
    if lock:
        stmt = stmt.with_for_update()
    app = session.scalars(stmt).one_or_none()
    if app is None:
        raise NotFound(f"app '{name}' not found in business '{business.name}'")
    return app


def refuse_if_deleting(app: App) -> None:
    """A deleted app is gone for its users already; only the controller still removes it."""
    if app.state == "deleting":
        raise Conflict(f"app '{app.name}' is being deleted")


def list_apps(
    session: Session, *, business: Business, limit: int, cursor: str | None
) -> tuple[list[App], str | None]:
    """One page of the business's apps, by name."""
    return page_of(
        session,
        select(App).where(App.business_id == business.id),
        key=App.name,
        limit=limit,
        cursor=cursor,
        scope=f"business:{business.id}",
    )


def cluster_of(session: Session, app: App) -> Cluster:
    cluster = session.get(Cluster, app.cluster_id)
    assert cluster is not None  # the foreign key cascades: an app never outlives its cluster
    return cluster


def stopped_ids(app: App) -> set[int]:
    return {int(i) for i in app.stopped or ()}


def hold_instances_quota(
    session: Session, *, business: Business, app: App, instances: dict[int, str]
) -> None:
    """Hold the quota of ``instances`` (an app's map), less the instances stopped one by one;
    nothing at all while the app is not running."""
    stopped = stopped_ids(app)
    running = {i: v for i, v in instances.items() if i not in stopped}
    amount = (
        demand(running, load_templates(session, app.id))
        if app.state == "running"
        else ResourceVector()
    )
    hold_app_quota(
        session, business=business, cluster=cluster_of(session, app), app_id=app.id, amount=amount
    )


def _set_instance_map(app: App, instances: dict[int, str]) -> None:
    app.instances = dump_instance_map(instances)
    if app.stopped:
        app.stopped = sorted(i for i in stopped_ids(app) if i in instances)
    _changed(app)


def _changed(app: App) -> None:
    """Tell the controller the spec moved: it plans from the generation it read."""
    app.generation += 1
    app.updated_at = utcnow()


@dataclass(frozen=True, slots=True)
class NewTemplate:
    """A version to store: its name, its document (``gaia.domain.apps.TemplateSpec`` form, less
    the resources) and its resources, given or named by an instance configuration."""

    name: str
    document: dict[str, Any]
    resources: ResourceVector | None = None
    instance_config: str | None = None


def _template_document(
    session: Session, business: Business, template: NewTemplate
) -> dict[str, Any]:
    """The stored form: the document with the resources in internal units (an instance
    configuration's amounts are copied, so a later change of the configuration does not move
    running versions)."""
    if template.instance_config is not None:
        vector = find_config(session, business, template.instance_config).amounts()
    else:
        assert template.resources is not None
        vector = template.resources
    doc = dict(template.document)
    doc["resources"] = vector.as_internal()
    if template.instance_config is not None:
        doc["instance_config"] = template.instance_config
    return doc


def create_app(
    session: Session,
    *,
    business: Business,
    cluster: Cluster,
    name: str,
    description: str,
    templates: Sequence[NewTemplate],
    default_template: str,
    replicas: int,
    domain: str,
    created_by: str,
    prepull: Prepull = Prepull.UPGRADES,
) -> App:
    """Store a new app with ``replicas`` instances of ``default_template`` (ids 0..replicas-1),
    admitted against the quota; ``Conflict`` when the name is taken in the business."""
    clash = session.scalars(
        select(App).where(App.business_id == business.id, App.name == name)
    ).one_or_none()
    if clash is not None:
        raise Conflict(f"app '{name}' already exists in business '{business.name}'")
    _claim_domain(session, domain)
    now = utcnow()
    app = App(
        business_id=business.id,
        cluster_id=cluster.id,
        name=name,
        description=description,
        default_template=default_template,
        instances={},
        next_instance_id=replicas,
        state="running",
        domain=domain,
        prepull=prepull.value,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(app)
    session.flush()
    for template in templates:
        session.add(
            AppTemplate(
                app_id=app.id,
                name=template.name,
                spec=_template_document(session, business, template),
                created_by=created_by,
                created_at=now,
            )
        )
    session.flush()
    instances = dict.fromkeys(range(replicas), default_template)
    hold_instances_quota(session, business=business, app=app, instances=instances)
    _set_instance_map(app, instances)
    return app


def _claim_domain(session: Session, domain: str, *, app_id: int | None = None) -> None:
    """``Conflict`` when another app (of any business) has ``domain``: it routes traffic.
    The unique index on apps.domain holds the same line against concurrent requests."""
    if not domain:
        return
    holder = session.scalars(select(App.id).where(App.domain == domain)).first()
    if holder is not None and holder != app_id:
        raise Conflict(f"domain {domain!r} is bound to another app; choose another")


def update_app(
    session: Session,
    *,
    app: App,
    description: str | None,
    default_template: str | None,
    domain: str | None,
    prepull: Prepull | None = None,
) -> list[str]:
    """Change what is given (None leaves a field); returns what changed, for the record."""
    changes = []
    if description is not None:
        app.description = description
        changes.append("description")
    if default_template is not None:
        if default_template not in load_templates(session, app.id):
            raise InvalidRequest(f"template {default_template!r} does not exist")
        app.default_template = default_template
        changes.append(f"default template {default_template}")
    if domain is not None:
        _claim_domain(session, domain, app_id=app.id)
        app.domain = domain
        changes.append(f"domain {domain or '(none)'}")
    if prepull is not None and prepull.value != app.prepull:
        app.prepull = prepull.value
        changes.append(f"pre-pull {prepull.value}")
    app.updated_at = utcnow()
    return changes


def delete_app(session: Session, *, business: Business, app: App) -> None:
    """Mark the app deleting and give its quota back now; the controller removes the rest."""
    app.state = "deleting"
    hold_instances_quota(session, business=business, app=app, instances={})
    _changed(app)


def stop_app(session: Session, *, business: Business, app: App) -> None:
    """Keep the spec and the instance map; the controller removes the instances."""
    if app.state == "stopped":
        raise Conflict(f"app '{app.name}' is already stopped")
    app.state = "stopped"
    hold_instances_quota(session, business=business, app=app, instances={})
    _changed(app)


def start_app(session: Session, *, business: Business, app: App) -> None:
    """Run the stored map again, admitted against the quota first."""
    if app.state == "running":
        raise Conflict(f"app '{app.name}' is already running")
    app.state = "running"
    hold_instances_quota(
        session, business=business, app=app, instances=parse_instance_map(app.instances)
    )
    _changed(app)


# ---------------------------------------------------------------- templates (versions)


def list_template_rows(
    session: Session, *, app: App, limit: int, cursor: str | None
) -> tuple[list[AppTemplate], str | None]:
    """One page of the app's templates (versions), oldest first."""
    return page_of(
        session,
        select(AppTemplate).where(AppTemplate.app_id == app.id),
        key=AppTemplate.id,
        limit=limit,
        cursor=cursor,
        numeric=True,
        scope=f"app:{app.id}",
    )


def find_template(session: Session, *, app: App, name: str) -> AppTemplate:
    template = session.scalars(
        select(AppTemplate).where(AppTemplate.app_id == app.id, AppTemplate.name == name)
    ).one_or_none()
    if template is None:
        raise NotFound(f"template '{name}' not found in app '{app.name}'")
    return template


def add_template(
    session: Session, *, business: Business, app: App, template: NewTemplate, created_by: str
) -> AppTemplate:
    """Add a version; templates are immutable, so a taken name is a ``Conflict``."""
    if template.name in load_templates(session, app.id):
        raise Conflict(
            f"template '{template.name}' already exists in app '{app.name}'; templates are "
            "immutable, add a new version instead"
        )
    row = AppTemplate(
        app_id=app.id,
        name=template.name,
        spec=_template_document(session, business, template),
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def delete_template(session: Session, *, app: App, name: str) -> None:
    """Remove a version nothing uses: no instance, not the default, not in an active upgrade."""
    template = find_template(session, app=app, name=name)
    users = sum(1 for v in app.instances.values() if v == name)
    if users:
        raise Conflict(f"template '{name}' is used by {users} instance(s)")
    if app.default_template == name:
        raise Conflict(f"template '{name}' is the app's default; choose another default first")
    upgrade = active_upgrade(session, app=app)
    if upgrade is not None and name in {upgrade.target, *upgrade.previous.values()}:
        raise Conflict(f"template '{name}' is part of upgrade {upgrade.id} in progress")
    session.delete(template)


# ---------------------------------------------------------------- instances


def _refuse_unknown_ids(app: App, instances: dict[int, str], ids: Sequence[int]) -> None:
    missing = sorted(set(ids) - set(instances))
    if missing:
        raise InvalidRequest(
            f"instance id(s) {', '.join(map(str, missing[:10]))} are not in app '{app.name}'",
            details={"missing": missing[:100]},
        )


def scale_out(
    session: Session, *, business: Business, app: App, template: str | None, count: int
) -> tuple[str, range]:
    """Add ``count`` instances of ``template`` (None: the app's default) with new ids; returns
    the version and the ids given."""
    version = template or app.default_template
    if version not in load_templates(session, app.id):
        raise InvalidRequest(f"template {version!r} does not exist in app '{app.name}'")
    instances = parse_instance_map(app.instances)
    if len(instances) + count > MAX_INSTANCES:
        raise InvalidRequest(f"an app has at most {MAX_INSTANCES} instances")
    ids = range(app.next_instance_id, app.next_instance_id + count)
    for iid in ids:
        instances[iid] = version
    hold_instances_quota(session, business=business, app=app, instances=instances)
    app.next_instance_id = ids.stop
    _set_instance_map(app, instances)
    return version, ids


def scale_in(
    session: Session, *, business: Business, app: App, instance_ids: Sequence[int]
) -> None:
    """Remove exactly the chosen instances; the others keep their ids and versions."""
    instances = parse_instance_map(app.instances)
    _refuse_unknown_ids(app, instances, instance_ids)
    for iid in instance_ids:
        instances.pop(iid, None)
    hold_instances_quota(session, business=business, app=app, instances=instances)
    _set_instance_map(app, instances)


def stop_or_start_instances(
    session: Session, *, business: Business, app: App, instance_ids: Sequence[int], stop: bool
) -> None:
    """Stop (or start again) the chosen instances of a running app: they stay in the map; a
    stop gives their quota back, a start is admitted first."""
    if app.state != "running":
        raise Conflict(f"app '{app.name}' is stopped; start the app first")
    instances = parse_instance_map(app.instances)
    _refuse_unknown_ids(app, instances, instance_ids)
    active = active_upgrade(session, app=app)
    if stop and active is not None and set(active.instance_ids) & set(instance_ids):
        raise Conflict(
            f"upgrade {active.id} includes some of these instances; finish or roll it back first"
        )
    stopped = stopped_ids(app)
    stopped = stopped | set(instance_ids) if stop else stopped - set(instance_ids)
    app.stopped = sorted(stopped)
    hold_instances_quota(session, business=business, app=app, instances=instances)
    _changed(app)


def last_failures(session: Session, *, app: App) -> dict[int, InstanceFailure]:
    """Each instance's most recent failure."""
    rows = session.scalars(
        select(InstanceFailure).where(InstanceFailure.app_id == app.id).order_by(InstanceFailure.at)
    )
    return {r.instance_id: r for r in rows}


# ---------------------------------------------------------------- gray upgrades


def active_upgrade(session: Session, *, app: App) -> AppUpgrade | None:
    return session.scalars(
        select(AppUpgrade).where(
            AppUpgrade.app_id == app.id, AppUpgrade.state.in_([s.value for s in ACTIVE])
        )
    ).first()


def list_upgrades(
    session: Session, *, app: App, limit: int, cursor: str | None, state: str = ""
) -> tuple[list[AppUpgrade], str | None]:
    """One page of the app's upgrades, newest first (``state``: only those in it). Their
    instance lists (``instance_ids``, ``previous``: 10,000 entries each for an upgrade of every
    instance of a large app) are left unloaded: an attribute access loads one row's, which the
    list does for an upgrade in progress only; ``instance_counts`` counts the others'."""
    stmt = (
        select(AppUpgrade)
        .where(AppUpgrade.app_id == app.id)
        .options(defer(AppUpgrade.instance_ids), defer(AppUpgrade.previous))
    )
    if state:
        stmt = stmt.where(AppUpgrade.state == state)
    return page_of(
        session,
        stmt,
        key=AppUpgrade.id,
        limit=limit,
        cursor=cursor,
        descending=True,
        numeric=True,
        scope=f"app:{app.id}" + (f":{state}" if state else ""),
    )


def instance_counts(session: Session, upgrade_ids: Collection[int]) -> dict[int, int]:
    """How many instances each upgrade covers, counted by the database (``json_array_length``,
    the same function on SQLite and PostgreSQL) without sending their lists."""
    if not upgrade_ids:
        return {}
    rows = session.execute(
        select(AppUpgrade.id, func.json_array_length(AppUpgrade.instance_ids)).where(
            AppUpgrade.id.in_(upgrade_ids)
        )
    )
    return {int(i): int(n or 0) for i, n in rows}


@dataclass(frozen=True, slots=True)
class UpgradeCounts:
    """An app's upgrades per state (one ``GROUP BY``), and the one in progress, if any."""

    by_state: dict[str, int]
    active: int | None


def upgrade_counts(session: Session, *, app: App) -> UpgradeCounts:
    by_state = {
        str(state): int(n)
        for state, n in session.execute(
            select(AppUpgrade.state, func.count())
            .where(AppUpgrade.app_id == app.id)
            .group_by(AppUpgrade.state)
        )
    }
    active = session.scalar(
        select(AppUpgrade.id)
        .where(AppUpgrade.app_id == app.id, AppUpgrade.state.in_([s.value for s in ACTIVE]))
        .order_by(AppUpgrade.id.desc())
        .limit(1)
    )
    return UpgradeCounts(by_state=dict(sorted(by_state.items())), active=active)


def latest_upgrade(session: Session, *, app: App) -> AppUpgrade | None:
    return session.scalars(
        select(AppUpgrade).where(AppUpgrade.app_id == app.id).order_by(AppUpgrade.id.desc())
    ).first()


def find_upgrade(session: Session, *, app: App, upgrade_id: int) -> AppUpgrade:
    upgrade = session.get(AppUpgrade, upgrade_id)
    if upgrade is None or upgrade.app_id != app.id:
        raise NotFound(f"upgrade {upgrade_id} not found in app '{app.name}'")
    return upgrade


def create_upgrade(
    session: Session,
    *,
    business: Business,
    app: App,
    target: str,
    instance_ids: Sequence[int] | None,
    max_unavailable: int,
    created_by: str,
) -> tuple[AppUpgrade, bool]:
    """Start a gray upgrade of ``instance_ids`` (None: every running instance, in id order) to
    ``target``. The quota admits the larger of the app's demand before and after up front, so
    the controller never has to refuse a batch. Returns the upgrade and whether it runs in
    place (only the image differs)."""
    if app.state != "running":
        raise Conflict(f"app '{app.name}' is stopped; start it before upgrading")
    active = active_upgrade(session, app=app)
    if active is not None:
        raise Conflict(
            f"upgrade {active.id} to {active.target} is {active.state}; "
            "finish or roll it back first"
        )
    stopped = stopped_ids(app)
    instances = {i: v for i, v in parse_instance_map(app.instances).items() if i not in stopped}
    templates = load_templates(session, app.id)
    ids = sorted(instances) if instance_ids is None else list(instance_ids)
    halted = sorted(stopped & set(ids))
    if halted:
        raise Conflict(
            f"instance(s) {', '.join(map(str, halted[:20]))} are stopped; start them before "
            "upgrading them"
        )
    plan = new_plan(
        target=target,
        instance_ids=ids,
        instances=instances,
        templates=list(templates),
        max_unavailable=max_unavailable,
    )
    final = dict(instances)
    for iid in ids:
        final[iid] = target
    hold_app_quota(
        session,
        business=business,
        cluster=cluster_of(session, app),
        app_id=app.id,
        amount=demand(instances, templates).covering(demand(final, templates)),
    )
    now = utcnow()
    upgrade = AppUpgrade(
        app_id=app.id,
        target=plan.target,
        instance_ids=list(plan.instance_ids),
        previous={str(k): v for k, v in plan.previous.items()},
        max_unavailable=plan.max_unavailable,
        state=UpgradeState.RUNNING.value,
        message="",
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(upgrade)
    app.generation += 1
    session.flush()
    in_place = all(
        templates[plan.previous[i]].same_shape(templates[plan.target]) for i in plan.instance_ids
    )
    return upgrade, in_place


def transition_upgrade(
    session: Session,
    *,
    app: App,
    upgrade_id: int,
    verb: str,
    allowed_from: frozenset[UpgradeState],
    to: UpgradeState,
    actor: str,
) -> AppUpgrade:
    """Move an upgrade to ``to`` (pause, resume, roll back) if it is in one of ``allowed_from``;
    only the newest upgrade can be rolled back."""
    upgrade = find_upgrade(session, app=app, upgrade_id=upgrade_id)
    if UpgradeState(upgrade.state) not in allowed_from:
        raise Conflict(
            f"upgrade {upgrade_id} is {upgrade.state}; it can {verb} only when "
            f"{' or '.join(sorted(allowed_from))}"
        )
    if to is UpgradeState.ROLLING_BACK:
        newer = session.scalars(
            select(AppUpgrade.id).where(AppUpgrade.app_id == app.id, AppUpgrade.id > upgrade.id)
        ).first()
        if newer is not None:
            raise Conflict(f"upgrade {newer} came after this one; roll that one back instead")
    upgrade.state = to.value
    upgrade.message = f"{verb} by {actor}"
    upgrade.updated_at = utcnow()
    upgrade.finished_at = None
    app.generation += 1
    return upgrade


# ---------------------------------------------------------------- blacklist


def active_blacklist(
    session: Session, *, app: App, limit: int, cursor: str | None
) -> tuple[list[AppBlacklist], str | None]:
    """One page of the nodes the app is kept off now, by node name."""
    return page_of(
        session,
        select(AppBlacklist).where(
            AppBlacklist.app_id == app.id, AppBlacklist.expires_at > utcnow()
        ),
        key=AppBlacklist.node,
        limit=limit,
        cursor=cursor,
        scope=f"app:{app.id}",
    )


def clear_blacklist(session: Session, *, app: App, node: str) -> None:
    entry = session.scalars(
        select(AppBlacklist).where(AppBlacklist.app_id == app.id, AppBlacklist.node == node)
    ).one_or_none()
    if entry is None:
        raise NotFound(f"node '{node}' is not blacklisted for app '{app.name}'")
    session.delete(entry)
