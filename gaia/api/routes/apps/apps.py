"""Apps themselves: ``/businesses/{biz}/apps[/{app}]`` — create, read, update, delete, stop and
start the whole app, its service, and the nodes it is kept off (blacklist).

Each route parses, authorises (``gaia.api.deps.writable_app`` for a change), calls one operation
of ``gaia.store.apps`` and shapes the answer (``shapes``). The store admits quota before an app
can grow; the app controller makes the cluster follow. See docs/architecture.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    business_for,
    readable_app,
    visible_cluster,
    writable_app,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.apps.fit import check_fit
from gaia.api.routes.apps.observe import observe_for_answer, provider_for
from gaia.api.routes.apps.shapes import (
    NOTHING_RUNS,
    AppPath,
    BizPath,
    NodePath,
    app_out,
    new_template,
)
from gaia.api.schemas.apps import (
    AppIn,
    AppOut,
    AppUpdate,
    BlacklistOut,
    EndpointOut,
    PortIn,
    ServiceOut,
)
from gaia.api.schemas.base import Page
from gaia.domain import apps as domain_apps
from gaia.domain.errors import NotFound
from gaia.domain.rbac import Permission
from gaia.store import apps as store_apps

router = APIRouter(route_class=CommittingRoute)


@router.get("/businesses/{biz}/apps", response_model=Page[AppOut])
async def list_apps(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AppOut]:
    """The business's apps by name, a page at a time (each app observed in its cluster)."""
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    rows, nxt = store_apps.list_apps(session, business=business, limit=limit, cursor=cursor)
    out = []
    for app in rows:
        observed = await observe_for_answer(request, session, business, app)
        out.append(app_out(session, business, app, observed))
    return Page[AppOut](items=out, next_cursor=nxt)


@router.post("/businesses/{biz}/apps", response_model=AppOut, status_code=201)
async def create_app(
    body: AppIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
) -> AppOut:
    ctx = audit(
        request,
        action="app.create",
        target=f"business/{biz}/app/{body.name}",
        cluster=body.cluster,
    )
    business = business_for(session, principal, biz, Permission.APP_WRITE, ctx=ctx)
    cluster = visible_cluster(session, principal, body.cluster)
    names = [t.name for t in body.templates]
    default = domain_apps.choose_default_template(names, body.default_template)
    app = store_apps.create_app(
        session,
        business=business,
        cluster=cluster,
        name=body.name,
        description=body.description,
        templates=[new_template(t) for t in body.templates],
        default_template=default,
        replicas=body.replicas,
        domain=body.domain,
        created_by=principal.username,
        prepull=body.prepull,
    )
    await check_fit(
        request,
        session,
        business=business,
        cluster=cluster,
        app=app,
        templates=store_apps.load_templates(session, app.id).values(),
        allow_pending=body.allow_pending,
        user=principal.username,
    )
    ctx.summary = (
        f"created app '{body.name}' in cluster '{cluster.name}' with {body.replicas} "
        f"instance(s) of {default} ({len(names)} template(s))"
    )
    return app_out(session, business, app, NOTHING_RUNS)


@router.get("/businesses/{biz}/apps/{app}", response_model=AppOut)
async def get_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    business, row = readable_app(session, principal, biz=biz, app=app)
    observed = await observe_for_answer(request, session, business, row)
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
    target = writable_app(request, session, principal, biz=biz, app=app, action="update")
    changes = store_apps.update_app(
        session,
        app=target.app,
        description=body.description,
        default_template=body.default_template,
        domain=body.domain,
        prepull=body.prepull,
    )
    target.audit.summary = f"updated app '{app}': {', '.join(changes) or 'nothing'}"
    return app_out(session, target.business, target.app, None)


@router.delete("/businesses/{biz}/apps/{app}", status_code=202)
def delete_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> Response:
    """Gives the quota back now; the controller removes the instances and service, then the app."""
    target = writable_app(request, session, principal, biz=biz, app=app, action="delete")
    store_apps.delete_app(session, business=target.business, app=target.app)
    target.audit.summary = f"deleting app '{app}' and its {len(target.app.instances)} instance(s)"
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
    target = writable_app(request, session, principal, biz=biz, app=app, action="stop")
    store_apps.stop_app(session, business=target.business, app=target.app)
    target.audit.summary = (
        f"stopped app '{app}' ({len(target.app.instances)} instance(s) removed, spec kept)"
    )
    return app_out(session, target.business, target.app, None)


@router.post("/businesses/{biz}/apps/{app}/start", response_model=AppOut)
def start_app(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
) -> AppOut:
    target = writable_app(request, session, principal, biz=biz, app=app, action="start")
    store_apps.start_app(session, business=target.business, app=target.app)
    target.audit.summary = f"started app '{app}' with {len(target.app.instances)} instance(s)"
    return app_out(session, target.business, target.app, None)


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
    business, row = readable_app(session, principal, biz=biz, app=app)
    cluster = store_apps.cluster_of(session, row)
    try:
        service = await provider_for(request, cluster).get_service(
            namespace=business.name, name=app
        )
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


@router.get("/businesses/{biz}/apps/{app}/blacklist", response_model=Page[BlacklistOut])
def list_blacklist(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[BlacklistOut]:
    _, row = readable_app(session, principal, biz=biz, app=app)
    rows, nxt = store_apps.active_blacklist(session, app=row, limit=limit, cursor=cursor)
    items = [
        BlacklistOut(
            node=b.node,
            failures=b.failures,
            reason=b.reason,
            created_at=b.created_at,
            expires_at=b.expires_at,
        )
        for b in rows
    ]
    return Page[BlacklistOut](items=items, next_cursor=nxt)


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
    target = writable_app(
        request,
        session,
        principal,
        biz=biz,
        app=app,
        action="blacklist.clear",
        target=f"{app}/blacklist/{node}",
        permission=Permission.BUSINESS_UPDATE,
        lock=False,
        refuse_deleting=False,
    )
    store_apps.clear_blacklist(session, app=target.app, node=node)
    target.audit.summary = f"cleared blacklist entry for node '{node}' of app '{app}'"
    return Response(status_code=204)
