"""Apps: ``/businesses/{biz}/apps``, their templates, instances, gray upgrades and blacklist.

The routes change only the store: the app's templates and its map *instance id → template*, its
state, and gray-upgrade plans. The app controller (``gaia.controllers.apps``) makes the cluster
follow. Every change that can grow what an app requests goes through quota admission here
(``gaia.store.apps.hold_app_quota``) before it is written, so the controller never has to refuse.
Reads of instances merge the stored map with what the cluster reports; restart, kill, logs and
exec of one instance talk to the cluster directly.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from gaia.api.deps import (
    AuditContext,
    Principal,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    platform,
    visible_cluster,
)
from gaia.api.schemas.apps import (
    AppIn,
    AppOut,
    AppUpdate,
    BlacklistOut,
    EndpointOut,
    ExecIn,
    ExecOut,
    FailureOut,
    InstanceIdsIn,
    InstanceOut,
    LogLineOut,
    PortIn,
    ScaleInIn,
    ScaleOutIn,
    ServiceOut,
    TemplateIn,
    TemplateOut,
    UpgradeIn,
    UpgradeOut,
    UpgradeProgressOut,
)
from gaia.api.schemas.base import NAME_PATTERN, ResourceAmounts
from gaia.domain import apps as domain_apps
from gaia.domain.errors import Conflict, InvalidRequest, NotFound
from gaia.domain.rbac import Permission
from gaia.domain.redaction import command_summary
from gaia.domain.resources import ResourceVector
from gaia.domain.upgrades import ACTIVE, RolloutState, new_plan, step_rollout
from gaia.providers.port import ClusterProvider, Instance
from gaia.store import apps as store_apps
from gaia.store.instance_configs import find_config
from gaia.store.models import (
    App,
    AppBlacklist,
    AppRollout,
    AppTemplate,
    Business,
    Cluster,
    InstanceFailure,
    utcnow,
)

router = APIRouter(tags=["apps"])
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
AppPath = Path(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", max_length=40, description="app")
VersionPath = Path(pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", max_length=63)
InstancePath = Path(ge=0, le=1_000_000, description="instance id")
UpgradePath = Path(ge=1, le=2**31 - 1, description="upgrade id")
NodePath = Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


# ---------------------------------------------------------------- helpers


def _ctx(request: Request, verb: str, biz: str, target: str) -> AuditContext:
    ctx = audit(request, action=f"app.{verb}", target=f"business/{biz}/app/{target}")
    return ctx


def _app(session: Session, business: Business, name: str, *, lock: bool = False) -> App:
    stmt = select(App).where(App.business_id == business.id, App.name == name)
    if lock:
        stmt = stmt.with_for_update()
    app = session.scalars(stmt).one_or_none()
    if app is None:
        raise NotFound(f"app '{name}' not found in business '{business.name}'")
    return app


def _writable(app: App) -> None:
    if app.state == "deleting":
        raise Conflict(f"app '{app.name}' is being deleted")


def _provider(request: Request, cluster: Cluster) -> ClusterProvider:
    return platform(request).providers.for_cluster(cluster)


async def _observe(
    request: Request, cluster: Cluster, namespace: str, app: str
) -> list[Instance] | None:
    try:
        return await _provider(request, cluster).list_instances(namespace=namespace, app=app)
    except ConnectionError:
        return None


def template_document(session: Session, business: Business, body: TemplateIn) -> dict[str, object]:
    """The stored form of a template: internal resource units, everything else as given."""
    if body.instance_config is not None:
        vector = find_config(session, business, body.instance_config).amounts()
    else:
        assert body.resources is not None
        vector = body.resources.to_vector()
    doc = body.model_dump(mode="json", exclude={"name", "resources", "instance_config"})
    doc["resources"] = vector.as_internal()
    if body.instance_config is not None:
        doc["instance_config"] = body.instance_config
    return doc


def _templates(session: Session, app: App) -> dict[str, domain_apps.TemplateSpec]:
    return store_apps.load_templates(session, app.id)


def _stopped(app: App) -> set[int]:
    return {int(i) for i in app.stopped or ()}


def _hold(session: Session, business: Business, app: App, instances: dict[int, str]) -> None:
    """Hold the quota of ``instances`` (an app's map), less the instances stopped one by one."""
    cluster = session.get(Cluster, app.cluster_id)
    assert cluster is not None
    stopped = _stopped(app)
    running = {i: v for i, v in instances.items() if i not in stopped}
    amount = (
        domain_apps.demand(running, _templates(session, app))
        if app.state == "running"
        else ResourceVector()
    )
    store_apps.hold_app_quota(
        session, business=business, cluster=cluster, app_id=app.id, amount=amount
    )


def _set_map(app: App, instances: dict[int, str]) -> None:
    app.instances = domain_apps.dump_instance_map(instances)
    if app.stopped:
        app.stopped = sorted(i for i in _stopped(app) if i in instances)
    app.generation += 1
    app.updated_at = utcnow()


def _active_rollout(session: Session, app: App) -> AppRollout | None:
    return session.scalars(
        select(AppRollout).where(
            AppRollout.app_id == app.id, AppRollout.state.in_([s.value for s in ACTIVE])
        )
    ).first()


def upgrade_out(row: AppRollout, observed: Sequence[Instance] | None, app: App) -> UpgradeOut:
    progress = None
    if observed is not None:
        step = step_rollout(
            store_apps.plan_of(row),
            instances=domain_apps.parse_instance_map(app.instances),
            observed={i.instance_id: i for i in observed},
        )
        p = step.progress
        progress = UpgradeProgressOut(
            total=p.total, done=p.done, in_flight=list(p.in_flight), waiting=p.waiting
        )
    return UpgradeOut(
        id=row.id,
        target=row.target,
        instance_ids=list(row.instance_ids),
        previous=dict(row.previous),
        max_unavailable=row.max_unavailable,
        state=row.state,
        message=row.message,
        progress=progress,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def app_out(
    session: Session, business: Business, app: App, observed: Sequence[Instance] | None
) -> AppOut:
    cluster = session.get(Cluster, app.cluster_id)
    instances = domain_apps.parse_instance_map(app.instances)
    templates = _templates(session, app)
    rollout = session.scalars(
        select(AppRollout).where(AppRollout.app_id == app.id).order_by(AppRollout.id.desc())
    ).first()
    return AppOut(
        name=app.name,
        business=business.name,
        cluster=cluster.name if cluster else "",
        description=app.description,
        state=app.state,
        default_template=app.default_template,
        templates=sorted(templates),
        replicas=len(instances),
        versions=dict(sorted(Counter(instances.values()).items())),
        ready=None if observed is None else sum(1 for i in observed if i.ready),
        running=None if observed is None else sum(1 for i in observed if i.phase == "Running"),
        domain=app.domain,
        resources=ResourceAmounts.from_vector(domain_apps.demand(instances, templates)),
        upgrade=None if rollout is None else upgrade_out(rollout, observed, app),
        created_by=app.created_by,
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def template_out(row: AppTemplate, instances: dict[int, str]) -> TemplateOut:
    spec = template_from_row(row)
    return TemplateOut(
        name=row.name,
        image=spec.image,
        resources=ResourceAmounts.from_vector(spec.resources),
        spec=dict(row.spec),
        created_at=row.created_at,
        instances=sum(1 for v in instances.values() if v == row.name),
    )


def template_from_row(row: AppTemplate) -> domain_apps.TemplateSpec:
    return domain_apps.template_from_document(row.name, row.spec)


def instance_out(
    iid: int,
    app: App,
    template: str,
    inst: Instance | None,
    last_failure: InstanceFailure | None,
    *,
    stopped: bool = False,
) -> InstanceOut:
    failure = None
    if inst is not None and inst.last_failure is not None:
        f = inst.last_failure
        failure = FailureOut(cause=str(f.cause), at=f.at, message=f.message, exit_code=f.exit_code)
    elif last_failure is not None:
        failure = FailureOut(
            cause=last_failure.cause,
            at=last_failure.at,
            message=last_failure.message,
            exit_code=last_failure.exit_code,
        )
    if inst is None:
        return InstanceOut(
            id=iid,
            name=domain_apps.instance_name(app.name, iid),
            template=template,
            version=None,
            status="Stopped" if stopped else "Pending",
            ready=False,
            node="",
            pod_ip="",
            host_ip="",
            gpu_ids=[],
            restarts=0,
            created_at=None,
            started_at=None,
            last_failure=failure,
            pull_progress=None,
        )
    pull = None
    if inst.pull is not None and inst.pull.total_bytes:
        pull = round(inst.pull.done_bytes / inst.pull.total_bytes, 4)
    return InstanceOut(
        id=iid,
        name=inst.name,
        template=template,
        version=inst.version,
        status=str(inst.phase),
        ready=inst.ready,
        node=inst.node,
        pod_ip=inst.pod_ip,
        host_ip=inst.host_ip,
        gpu_ids=list(inst.gpu_ids),
        cpu_ids=list(inst.cpu_ids),
        restarts=inst.restarts,
        created_at=inst.created_at,
        started_at=inst.started_at,
        last_failure=failure,
        pull_progress=pull,
    )


# ---------------------------------------------------------------- apps


@router.get("/businesses/{biz}/apps", response_model=list[AppOut])
async def list_apps(
    request: Request, principal: PrincipalDep, session: SessionDep, biz: str = BizPath
) -> list[AppOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    apps = session.scalars(
        select(App).where(App.business_id == business.id).order_by(App.name)
    ).all()
    out = []
    for app in apps:
        cluster = session.get(Cluster, app.cluster_id)
        assert cluster is not None
        observed = await _observe(request, cluster, business.name, app.name)
        out.append(app_out(session, business, app, observed))
    return out


@router.post("/businesses/{biz}/apps", response_model=AppOut, status_code=201)
async def create_app(
    body: AppIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> AppOut:
    ctx = _ctx(request, "create", biz, body.name)
    ctx.cluster = body.cluster
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    cluster = visible_cluster(session, principal, body.cluster)
    names = [t.name for t in body.templates]
    if len(set(names)) != len(names):
        raise InvalidRequest("two templates share a name; each template is one version")
    default = body.default_template or names[0]
    if default not in names:
        raise InvalidRequest(f"default_template {default!r} is not one of the templates: {names}")
    clash = session.scalars(
        select(App).where(App.business_id == business.id, App.name == body.name)
    ).one_or_none()
    if clash is not None:
        raise Conflict(f"app '{body.name}' already exists in business '{biz}'")
    now = utcnow()
    app = App(
        business_id=business.id,
        cluster_id=cluster.id,
        name=body.name,
        description=body.description,
        default_template=default,
        instances={},
        next_instance_id=body.replicas,
        state="running",
        domain=body.domain,
        created_by=principal.username,
        created_at=now,
        updated_at=now,
    )
    session.add(app)
    session.flush()
    for template in body.templates:
        session.add(
            AppTemplate(
                app_id=app.id,
                name=template.name,
                spec=template_document(session, business, template),
                created_by=principal.username,
                created_at=now,
            )
        )
    session.flush()
    instances = dict.fromkeys(range(body.replicas), default)
    _hold(session, business, app, instances)
    _set_map(app, instances)
    ctx.summary = (
        f"created app '{body.name}' in cluster '{cluster.name}' with {body.replicas} "
        f"instance(s) of {default} ({len(names)} template(s))"
    )
    return app_out(session, business, app, [])


@router.get("/businesses/{biz}/apps/{app}", response_model=AppOut)
async def get_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    observed = await _observe(request, cluster, business.name, row.name)
    return app_out(session, business, row, observed)


@router.patch("/businesses/{biz}/apps/{app}", response_model=AppOut)
def update_app(
    body: AppUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    ctx = _ctx(request, "update", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    changes = []
    if body.description is not None:
        row.description = body.description
        changes.append("description")
    if body.default_template is not None:
        if body.default_template not in _templates(session, row):
            raise InvalidRequest(f"template {body.default_template!r} does not exist")
        row.default_template = body.default_template
        changes.append(f"default template {body.default_template}")
    if body.domain is not None:
        row.domain = body.domain
        changes.append(f"domain {body.domain or '(none)'}")
    row.updated_at = utcnow()
    ctx.summary = f"updated app '{app}': {', '.join(changes) or 'nothing'}"
    return app_out(session, business, row, None)


@router.delete("/businesses/{biz}/apps/{app}", status_code=202)
def delete_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> Response:
    """Gives the quota back now; the controller removes the instances and service, then the app."""
    ctx = _ctx(request, "delete", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    row.state = "deleting"
    _hold(session, business, row, {})
    row.generation += 1
    row.updated_at = utcnow()
    ctx.summary = f"deleting app '{app}' and its {len(row.instances)} instance(s)"
    return Response(status_code=202)


@router.post("/businesses/{biz}/apps/{app}/stop", response_model=AppOut)
def stop_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    """Keep the spec and the instance map; remove the instances and give the quota back."""
    ctx = _ctx(request, "stop", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    if row.state == "stopped":
        raise Conflict(f"app '{app}' is already stopped")
    row.state = "stopped"
    _hold(session, business, row, {})
    row.generation += 1
    row.updated_at = utcnow()
    ctx.summary = f"stopped app '{app}' ({len(row.instances)} instance(s) removed, spec kept)"
    return app_out(session, business, row, None)


@router.post("/businesses/{biz}/apps/{app}/start", response_model=AppOut)
def start_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    ctx = _ctx(request, "start", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    if row.state == "running":
        raise Conflict(f"app '{app}' is already running")
    row.state = "running"
    _hold(session, business, row, domain_apps.parse_instance_map(row.instances))
    row.generation += 1
    row.updated_at = utcnow()
    ctx.summary = f"started app '{app}' with {len(row.instances)} instance(s)"
    return app_out(session, business, row, None)


# ---------------------------------------------------------------- templates


@router.get("/businesses/{biz}/apps/{app}/templates", response_model=list[TemplateOut])
def list_templates(
    principal: PrincipalDep, session: SessionDep, biz: str = BizPath, app: str = AppPath
) -> list[TemplateOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    instances = domain_apps.parse_instance_map(row.instances)
    rows = session.scalars(
        select(AppTemplate).where(AppTemplate.app_id == row.id).order_by(AppTemplate.id)
    )
    return [template_out(t, instances) for t in rows]


@router.post("/businesses/{biz}/apps/{app}/templates", response_model=TemplateOut, status_code=201)
def add_template(
    body: TemplateIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> TemplateOut:
    """Add a version. Templates are immutable; a change is a new version."""
    ctx = _ctx(request, "template.create", biz, f"{app}/template/{body.name}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    if body.name in _templates(session, row):
        raise Conflict(
            f"template '{body.name}' already exists in app '{app}'; templates are immutable, "
            "add a new version instead"
        )
    template = AppTemplate(
        app_id=row.id,
        name=body.name,
        spec=template_document(session, business, body),
        created_by=principal.username,
        created_at=utcnow(),
    )
    session.add(template)
    session.flush()
    ctx.summary = f"added template '{body.name}' (image {body.image}) to app '{app}'"
    return template_out(template, domain_apps.parse_instance_map(row.instances))


@router.get("/businesses/{biz}/apps/{app}/templates/{version}", response_model=TemplateOut)
def get_template(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    version: str = VersionPath,
) -> TemplateOut:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    template = _template_row(session, row, version)
    return template_out(template, domain_apps.parse_instance_map(row.instances))


def _template_row(session: Session, app: App, version: str) -> AppTemplate:
    template = session.scalars(
        select(AppTemplate).where(AppTemplate.app_id == app.id, AppTemplate.name == version)
    ).one_or_none()
    if template is None:
        raise NotFound(f"template '{version}' not found in app '{app.name}'")
    return template


@router.delete("/businesses/{biz}/apps/{app}/templates/{version}", status_code=204)
def delete_template(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    version: str = VersionPath,
) -> Response:
    ctx = _ctx(request, "template.delete", biz, f"{app}/template/{version}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    template = _template_row(session, row, version)
    users = sum(1 for v in row.instances.values() if v == version)
    if users:
        raise Conflict(f"template '{version}' is used by {users} instance(s)")
    if row.default_template == version:
        raise Conflict(f"template '{version}' is the app's default; choose another default first")
    rollout = _active_rollout(session, row)
    if rollout is not None and version in {rollout.target, *rollout.previous.values()}:
        raise Conflict(f"template '{version}' is part of upgrade {rollout.id} in progress")
    session.delete(template)
    ctx.summary = f"deleted template '{version}' of app '{app}'"
    return Response(status_code=204)


# ---------------------------------------------------------------- scaling


@router.post("/businesses/{biz}/apps/{app}/scale-out", response_model=AppOut)
def scale_out(
    body: ScaleOutIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    """Add ``count`` instances of ``template`` (default: the app's default) with new ids."""
    ctx = _ctx(request, "scale-out", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    version = body.template or row.default_template
    if version not in _templates(session, row):
        raise InvalidRequest(f"template {version!r} does not exist in app '{app}'")
    instances = domain_apps.parse_instance_map(row.instances)
    if len(instances) + body.count > domain_apps.MAX_INSTANCES:
        raise InvalidRequest(f"an app has at most {domain_apps.MAX_INSTANCES} instances")
    first = row.next_instance_id
    for iid in range(first, first + body.count):
        instances[iid] = version
    _hold(session, business, row, instances)
    row.next_instance_id = first + body.count
    _set_map(row, instances)
    last = first + body.count - 1
    ctx.summary = f"added instance(s) {first}..{last} of {version} to app '{app}'"
    return app_out(session, business, row, None)


@router.post("/businesses/{biz}/apps/{app}/scale-in", response_model=AppOut)
def scale_in(
    body: ScaleInIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    """Remove exactly the chosen instances; the others keep their ids, nodes and versions."""
    ctx = _ctx(request, "scale-in", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    instances = domain_apps.parse_instance_map(row.instances)
    missing = sorted(set(body.instance_ids) - set(instances))
    if missing:
        raise InvalidRequest(
            f"instance id(s) {', '.join(map(str, missing[:10]))} are not in app '{app}'",
            details={"missing": missing[:100]},
        )
    for iid in body.instance_ids:
        instances.pop(iid, None)
    _hold(session, business, row, instances)
    _set_map(row, instances)
    ctx.summary = f"removed instance(s) {', '.join(map(str, sorted(body.instance_ids)[:20]))}"
    return app_out(session, business, row, None)


def _stop_or_start(
    body: InstanceIdsIn,
    request: Request,
    principal: Principal,
    session: Session,
    biz: str,
    app: str,
    *,
    stop: bool,
) -> AppOut:
    verb = "stop" if stop else "start"
    ctx = _ctx(request, f"instances.{verb}", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    if row.state != "running":
        raise Conflict(f"app '{app}' is stopped; start the app first")
    instances = domain_apps.parse_instance_map(row.instances)
    missing = sorted(set(body.instance_ids) - set(instances))
    if missing:
        raise InvalidRequest(
            f"instance id(s) {', '.join(map(str, missing[:10]))} are not in app '{app}'",
            details={"missing": missing[:100]},
        )
    active = _active_rollout(session, row)
    if stop and active is not None and set(active.instance_ids) & set(body.instance_ids):
        raise Conflict(
            f"upgrade {active.id} includes some of these instances; finish or roll it back first"
        )
    stopped = _stopped(row)
    stopped = stopped | set(body.instance_ids) if stop else stopped - set(body.instance_ids)
    row.stopped = sorted(stopped)
    _hold(session, business, row, instances)  # admits a start; gives a stop's quota back
    row.generation += 1
    row.updated_at = utcnow()
    ids = ", ".join(map(str, sorted(body.instance_ids)[:20]))
    ctx.summary = f"{'stopped' if stop else 'started'} instance(s) {ids} of '{app}'"
    return app_out(session, business, row, None)


@router.post("/businesses/{biz}/apps/{app}/instances/stop", response_model=AppOut)
def stop_instances(
    body: InstanceIdsIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    """Stop the chosen instances: they keep their ids and versions in the app, their containers
    are removed and their quota given back; the other instances are not touched."""
    return _stop_or_start(body, request, principal, session, biz, app, stop=True)


@router.post("/businesses/{biz}/apps/{app}/instances/start", response_model=AppOut)
def start_instances(
    body: InstanceIdsIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    """Start instances stopped one by one again (admitted against the quota first)."""
    return _stop_or_start(body, request, principal, session, biz, app, stop=False)


# ---------------------------------------------------------------- instances


@router.get("/businesses/{biz}/apps/{app}/instances", response_model=list[InstanceOut])
async def list_instances(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> list[InstanceOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    observed = await _observe(request, cluster, business.name, row.name) or []
    by_id = {i.instance_id: i for i in observed}
    failures = _last_failures(session, row.id)
    instances = domain_apps.parse_instance_map(row.instances) if row.state == "running" else {}
    stopped = _stopped(row)
    out = [
        instance_out(iid, row, version, by_id.get(iid), failures.get(iid), stopped=iid in stopped)
        for iid, version in sorted(instances.items())
    ]
    # instances still in the cluster that the app no longer wants (being removed)
    for iid, inst in sorted(by_id.items()):
        if iid not in instances:
            out.append(instance_out(iid, row, "", inst, failures.get(iid)))
    return out


def _last_failures(session: Session, app_id: int) -> dict[int, InstanceFailure]:
    rows = session.scalars(
        select(InstanceFailure).where(InstanceFailure.app_id == app_id).order_by(InstanceFailure.at)
    )
    return {r.instance_id: r for r in rows}


async def _one_instance(
    request: Request, session: Session, business: Business, app: App, iid: int
) -> tuple[Cluster, Instance]:
    cluster = session.get(Cluster, app.cluster_id)
    assert cluster is not None
    observed = await _observe(request, cluster, business.name, app.name)
    if observed is None:
        raise ConnectionError(f"cluster '{cluster.name}' is unreachable")
    for inst in observed:
        if inst.instance_id == iid:
            return cluster, inst
    if str(iid) in app.instances:
        raise Conflict(f"instance {app.name}-{iid} is not running yet")
    raise NotFound(f"instance {iid} not found in app '{app.name}'")


@router.get("/businesses/{biz}/apps/{app}/instances/{instance}", response_model=InstanceOut)
async def get_instance(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int = InstancePath,
) -> InstanceOut:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    version = row.instances.get(str(instance))
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    observed = await _observe(request, cluster, business.name, row.name) or []
    inst = next((i for i in observed if i.instance_id == instance), None)
    if version is None and inst is None:
        raise NotFound(f"instance {instance} not found in app '{app}'")
    return instance_out(
        instance, row, version or "", inst, _last_failures(session, row.id).get(instance)
    )


@router.post(
    "/businesses/{biz}/apps/{app}/instances/{instance}/restart", response_model=InstanceOut
)
async def restart_instance(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int = InstancePath,
) -> InstanceOut:
    """Restart the instance's container where it is (same node, IP, GPUs)."""
    ctx = _ctx(request, "instance.restart", biz, f"{app}/instance/{instance}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app)
    _writable(row)
    cluster, inst = await _one_instance(request, session, business, row, instance)
    ctx.cluster = cluster.name
    restarted = await _provider(request, cluster).restart_instance(
        namespace=business.name, name=inst.name
    )
    ctx.summary = f"restarted {inst.name} on {inst.node}"
    return instance_out(instance, row, row.instances.get(str(instance), ""), restarted, None)


@router.post("/businesses/{biz}/apps/{app}/instances/{instance}/kill", status_code=202)
async def kill_instance(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int = InstancePath,
) -> Response:
    """Delete the instance; the controller creates it again with the same id (maybe elsewhere)."""
    ctx = _ctx(request, "instance.kill", biz, f"{app}/instance/{instance}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app)
    _writable(row)
    cluster, inst = await _one_instance(request, session, business, row, instance)
    ctx.cluster = cluster.name
    await _provider(request, cluster).delete_instance(namespace=business.name, name=inst.name)
    ctx.summary = f"killed {inst.name} on {inst.node}; it will be recreated"
    return Response(status_code=202)


@router.get(
    "/businesses/{biz}/apps/{app}/instances/{instance}/logs", response_model=list[LogLineOut]
)
async def instance_logs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int = InstancePath,
    tail: int = Query(default=100, ge=1, le=5000),
    since: dt.datetime | None = Query(default=None),
) -> list[LogLineOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    cluster, inst = await _one_instance(request, session, business, row, instance)
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since must carry a timezone, e.g. 2026-01-01T00:00:00Z")
    lines = await _provider(request, cluster).logs(
        namespace=business.name, name=inst.name, tail=tail, since=since
    )
    return [LogLineOut(at=line.at, stream=line.stream, text=line.text) for line in lines]


@router.post("/businesses/{biz}/apps/{app}/instances/{instance}/exec", response_model=ExecOut)
async def instance_exec(
    body: ExecIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int = InstancePath,
) -> ExecOut:
    """Run one command in the instance (the console's shell sends one line at a time)."""
    ctx = _ctx(request, "instance.exec", biz, f"{app}/instance/{instance}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app)
    cluster, inst = await _one_instance(request, session, business, row, instance)
    ctx.cluster = cluster.name
    # the command line, redacted (it may carry secrets the operator typed); a refused or
    # failed run is recorded with it too
    ctx.summary = f"$ {command_summary(body.command)} in {inst.name}"
    result = await _provider(request, cluster).exec(
        namespace=business.name, name=inst.name, command=body.command, timeout=body.timeout_s
    )
    ctx.summary += f": exit {result.exit_code}"
    return ExecOut(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)


# ---------------------------------------------------------------- gray upgrades


@router.post("/businesses/{biz}/apps/{app}/upgrades", response_model=UpgradeOut, status_code=201)
def create_upgrade(
    body: UpgradeIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> UpgradeOut:
    """Gray upgrade: move the chosen instances (or all, in id order) to ``template`` in batches of
    ``max_unavailable``. In place when only the image differs."""
    ctx = _ctx(request, "upgrade.create", biz, app)
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    if row.state != "running":
        raise Conflict(f"app '{app}' is stopped; start it before upgrading")
    active = _active_rollout(session, row)
    if active is not None:
        raise Conflict(
            f"upgrade {active.id} to {active.target} is {active.state}; "
            "finish or roll it back first"
        )
    stopped = _stopped(row)
    instances = {
        i: v for i, v in domain_apps.parse_instance_map(row.instances).items() if i not in stopped
    }
    templates = _templates(session, row)
    ids = sorted(instances) if body.all else list(body.instance_ids or [])
    halted = sorted(stopped & set(ids))
    if halted:
        raise Conflict(
            f"instance(s) {', '.join(map(str, halted[:20]))} are stopped; start them before "
            "upgrading them"
        )
    plan = new_plan(
        target=body.template,
        instance_ids=ids,
        instances=instances,
        templates=list(templates),
        max_unavailable=body.max_unavailable,
    )
    # admit the end state up front when the new version asks for more
    final = dict(instances)
    for iid in ids:
        final[iid] = body.template
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    now_demand = domain_apps.demand(instances, templates)
    end_demand = domain_apps.demand(final, templates)
    store_apps.hold_app_quota(
        session,
        business=business,
        cluster=cluster,
        app_id=row.id,
        amount=ResourceVector(
            **{d: max(getattr(now_demand, d), getattr(end_demand, d)) for d in _DIMS}
        ),
    )
    now = utcnow()
    rollout = AppRollout(
        app_id=row.id,
        target=plan.target,
        instance_ids=list(plan.instance_ids),
        previous={str(k): v for k, v in plan.previous.items()},
        max_unavailable=plan.max_unavailable,
        state=RolloutState.RUNNING.value,
        message="",
        created_by=principal.username,
        created_at=now,
        updated_at=now,
    )
    session.add(rollout)
    row.generation += 1
    session.flush()
    in_place = all(
        templates[plan.previous[i]].same_shape(templates[plan.target]) for i in plan.instance_ids
    )
    ctx.summary = (
        f"upgrade {rollout.id}: {len(ids)} instance(s) of '{app}' to {plan.target}, "
        f"{plan.max_unavailable} at a time, {'in place' if in_place else 'recreating'}"
    )
    return upgrade_out(rollout, None, row)


_DIMS = tuple(ResourceVector.__dataclass_fields__)


@router.get("/businesses/{biz}/apps/{app}/upgrades", response_model=list[UpgradeOut])
async def list_upgrades(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> list[UpgradeOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    rows = session.scalars(
        select(AppRollout).where(AppRollout.app_id == row.id).order_by(AppRollout.id.desc())
    ).all()
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    observed = await _observe(request, cluster, business.name, row.name)
    return [upgrade_out(r, observed, row) for r in rows]


def _upgrade(session: Session, app: App, upgrade_id: int) -> AppRollout:
    rollout = session.get(AppRollout, upgrade_id)
    if rollout is None or rollout.app_id != app.id:
        raise NotFound(f"upgrade {upgrade_id} not found in app '{app.name}'")
    return rollout


@router.get("/businesses/{biz}/apps/{app}/upgrades/{upgrade}", response_model=UpgradeOut)
async def get_upgrade(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    upgrade: int = UpgradePath,
) -> UpgradeOut:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    rollout = _upgrade(session, row, upgrade)
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    observed = await _observe(request, cluster, business.name, row.name)
    return upgrade_out(rollout, observed, row)


def _transition(
    request: Request,
    principal: PrincipalDep,
    session: Session,
    *,
    biz: str,
    app: str,
    upgrade: int,
    verb: str,
    allowed_from: set[RolloutState],
    to: RolloutState,
) -> UpgradeOut:
    ctx = _ctx(request, f"upgrade.{verb.replace(' ', '')}", biz, f"{app}/upgrade/{upgrade}")
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    row = _app(session, business, app, lock=True)
    _writable(row)
    rollout = _upgrade(session, row, upgrade)
    if RolloutState(rollout.state) not in allowed_from:
        raise Conflict(
            f"upgrade {upgrade} is {rollout.state}; it can {verb} only when "
            f"{' or '.join(sorted(allowed_from))}"
        )
    if to is RolloutState.ROLLING_BACK:
        newer = session.scalars(
            select(AppRollout.id).where(AppRollout.app_id == row.id, AppRollout.id > rollout.id)
        ).first()
        if newer is not None:
            raise Conflict(f"upgrade {newer} came after this one; roll that one back instead")
    rollout.state = to.value
    rollout.message = f"{verb} by {principal.username}"
    rollout.updated_at = utcnow()
    rollout.finished_at = None
    row.generation += 1
    ctx.summary = f"{verb} upgrade {upgrade} of app '{app}' (to {rollout.target})"
    return upgrade_out(rollout, None, row)


def _transition_route(
    verb: str, allowed_from: set[RolloutState], to: RolloutState, doc: str
) -> None:
    """Register ``POST .../upgrades/{upgrade}/<verb>``: one state change of an upgrade."""

    def route(
        request: Request,
        principal: PrincipalDep,
        session: SessionDep,
        biz: str = BizPath,
        app: str = AppPath,
        upgrade: int = UpgradePath,
    ) -> UpgradeOut:
        return _transition(
            request,
            principal,
            session,
            biz=biz,
            app=app,
            upgrade=upgrade,
            verb=verb.replace("rollback", "roll back"),
            allowed_from=allowed_from,
            to=to,
        )

    route.__doc__ = doc
    route.__name__ = f"{verb}_upgrade"
    router.post(
        f"/businesses/{{biz}}/apps/{{app}}/upgrades/{{upgrade}}/{verb}", response_model=UpgradeOut
    )(route)


_transition_route(
    "pause", {RolloutState.RUNNING}, RolloutState.PAUSED, "Stop starting new batches."
)
_transition_route(
    "resume", {RolloutState.PAUSED}, RolloutState.RUNNING, "Go on with the next batches."
)
_transition_route(
    "rollback",
    {RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.SUCCEEDED},
    RolloutState.ROLLING_BACK,
    "Move every instance the upgrade touched back to its previous template, in batches.",
)


# ---------------------------------------------------------------- service and blacklist


@router.get("/businesses/{biz}/apps/{app}/service", response_model=ServiceOut)
async def get_service(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> ServiceOut:
    """The app's service: endpoints are the instances that pass readiness."""
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    cluster = session.get(Cluster, row.cluster_id)
    assert cluster is not None
    try:
        service = await _provider(request, cluster).get_service(namespace=business.name, name=app)
    except NotFound:
        # the controller has not made it yet (a new app) or removed it (a stopped app)
        return ServiceOut(
            name=app, cluster_ip="", domain=row.domain, ports=[], endpoints=[], ready_endpoints=0
        )
    return ServiceOut(
        name=service.name,
        cluster_ip=service.cluster_ip,
        domain=service.domain,
        ports=[
            PortIn(port=p.port, name=p.name, protocol="UDP" if p.protocol == "UDP" else "TCP")
            for p in service.ports
        ],
        endpoints=[
            EndpointOut(instance=e.instance, ip=e.ip, node=e.node, ready=e.ready)
            for e in service.endpoints
        ],
        ready_endpoints=len(service.ready_endpoints),
    )


@router.get("/businesses/{biz}/apps/{app}/blacklist", response_model=list[BlacklistOut])
def list_blacklist(
    principal: PrincipalDep, session: SessionDep, biz: str = BizPath, app: str = AppPath
) -> list[BlacklistOut]:
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = _app(session, business, app)
    rows = session.scalars(
        select(AppBlacklist)
        .where(AppBlacklist.app_id == row.id, AppBlacklist.expires_at > utcnow())
        .order_by(AppBlacklist.node)
    )
    return [
        BlacklistOut(
            node=b.node,
            failures=b.failures,
            reason=b.reason,
            created_at=b.created_at,
            expires_at=b.expires_at,
        )
        for b in rows
    ]


@router.delete("/businesses/{biz}/apps/{app}/blacklist/{node}", status_code=204)
def clear_blacklist(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    node: str = NodePath,
) -> Response:
    """Let the app on ``node`` again (a business administrator's call)."""
    ctx = _ctx(request, "blacklist.clear", biz, f"{app}/blacklist/{node}")
    business = business_for(session, principal, biz, Permission.BUSINESS_UPDATE, ctx=ctx)
    row = _app(session, business, app)
    entry = session.scalars(
        select(AppBlacklist).where(AppBlacklist.app_id == row.id, AppBlacklist.node == node)
    ).one_or_none()
    if entry is None:
        raise NotFound(f"node '{node}' is not blacklisted for app '{app}'")
    session.delete(entry)
    ctx.summary = f"cleared blacklist entry for node '{node}' of app '{app}'"
    return Response(status_code=204)
