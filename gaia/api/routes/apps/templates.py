"""An app's versions: ``/businesses/{biz}/apps/{app}/templates[/{version}]``.

A template is one version (image, command, resources, probes ...). Templates are immutable: a
change is a new version, and a version can go only when nothing uses it (no instance, not the
default, not part of an upgrade in progress; ``gaia.store.apps.delete_template``).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, readable_app, writable_app
from gaia.api.pagination import Cursor, Limit
from gaia.api.routes.apps.fit import check_fit
from gaia.api.routes.apps.shapes import AppPath, BizPath, VersionPath, new_template, template_out
from gaia.api.schemas.apps import TemplateIn, TemplateOut
from gaia.api.schemas.base import Page
from gaia.domain import apps as domain_apps
from gaia.store import apps as store_apps

router = APIRouter(route_class=CommittingRoute)


@router.get("/businesses/{biz}/apps/{app}/templates", response_model=Page[TemplateOut])
def list_templates(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[TemplateOut]:
    """The app's versions, oldest first."""
    _, row = readable_app(session, principal, biz=biz, app=app)
    instances = domain_apps.parse_instance_map(row.instances)
    rows, nxt = store_apps.list_template_rows(session, app=row, limit=limit, cursor=cursor)
    return Page[TemplateOut](items=[template_out(t, instances) for t in rows], next_cursor=nxt)


@router.post("/businesses/{biz}/apps/{app}/templates", response_model=TemplateOut, status_code=201)
async def add_template(
    body: TemplateIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    allow_pending: bool = Query(
        default=False,
        description="accept a version whose one instance fits no node of the cluster even when "
        "empty (422 otherwise); its instances wait for such a node, and the app's events say so",
    ),
) -> TemplateOut:
    """Add a version. Templates are immutable; a change is a new version. A version whose one
    instance could fit no node of the cluster is refused unless ``allow_pending``."""
    target = writable_app(
        request,
        session,
        principal,
        biz=biz,
        app=app,
        action="template.create",
        target=f"{app}/template/{body.name}",
    )
    template = store_apps.add_template(
        session,
        business=target.business,
        app=target.app,
        template=new_template(body),
        created_by=principal.username,
    )
    await check_fit(
        request,
        session,
        business=target.business,
        cluster=store_apps.cluster_of(session, target.app),
        app=target.app,
        templates=[store_apps.load_templates(session, target.app.id)[body.name]],
        allow_pending=allow_pending,
        user=principal.username,
    )
    target.audit.summary = f"added template '{body.name}' (image {body.image}) to app '{app}'"
    return template_out(template, domain_apps.parse_instance_map(target.app.instances))


@router.get("/businesses/{biz}/apps/{app}/templates/{version}", response_model=TemplateOut)
def get_template(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    version: str = VersionPath,
) -> TemplateOut:
    _, row = readable_app(session, principal, biz=biz, app=app)
    template = store_apps.find_template(session, app=row, name=version)
    return template_out(template, domain_apps.parse_instance_map(row.instances))


@router.delete("/businesses/{biz}/apps/{app}/templates/{version}", status_code=204)
def delete_template(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    version: str = VersionPath,
) -> Response:
    target = writable_app(
        request,
        session,
        principal,
        biz=biz,
        app=app,
        action="template.delete",
        target=f"{app}/template/{version}",
        refuse_deleting=False,
    )
    store_apps.delete_template(session, app=target.app, name=version)
    target.audit.summary = f"deleted template '{version}' of app '{app}'"
    return Response(status_code=204)
