"""An app's instances: ``/businesses/{biz}/apps/{app}/instances...`` and scaling.

Changes of the instance map (scale out, scale in, stop and start chosen instances) are spec
changes of ``gaia.store.apps``: admitted against the quota there, carried out by the app
controller. Actions on one running instance (restart, kill, logs, exec) talk to the cluster
through the app's provider (``observe``); reads merge the stored map with what the cluster
reports.

Exec is the one door to a shell in an instance, for API clients and the console's web terminal
alike: ``POST .../instances/{instance}/exec`` with ``{"command": ["sh", "-c", "<line>"]}``. Its
operation record carries the command line, secrets redacted as in the platform's logs
(``gaia.domain.redaction.command_summary``), so a caller need not write its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Query, Request, Response

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, readable_app, writable_app
from gaia.api.pagination import Cursor, Limit, page_in_memory, page_in_memory_both_ways
from gaia.api.routes.apps.observe import (
    observe_app,
    observed_states,
    one_instance,
    provider_for,
)
from gaia.api.routes.apps.shapes import AppPath, BizPath, InstancePath, app_out, instance_out
from gaia.api.schemas.apps import (
    AppOut,
    ExecIn,
    ExecOut,
    InstanceIdsIn,
    InstanceOut,
    InstancePage,
    LogLineOut,
    ScaleInIn,
    ScaleOutIn,
)
from gaia.domain import apps as domain_apps
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.domain.instance_lists import InstanceFilter, tally_instances
from gaia.domain.redaction import command_summary
from gaia.store import apps as store_apps

router = APIRouter(route_class=CommittingRoute)

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
    target = writable_app(request, session, principal, biz=biz, app=app, action="scale-out")
    version, ids = store_apps.scale_out(
        session, business=target.business, app=target.app, template=body.template, count=body.count
    )
    target.audit.summary = (
        f"added instance(s) {ids.start}..{ids.stop - 1} of {version} to app '{app}'"
    )
    return app_out(session, target.business, target.app, None)


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
    target = writable_app(request, session, principal, biz=biz, app=app, action="scale-in")
    store_apps.scale_in(
        session, business=target.business, app=target.app, instance_ids=body.instance_ids
    )
    ids = ", ".join(map(str, sorted(body.instance_ids)[:20]))
    target.audit.summary = f"removed instance(s) {ids}"
    return app_out(session, target.business, target.app, None)


def _stop_or_start(
    body: InstanceIdsIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    *,
    biz: str,
    app: str,
    stop: bool,
) -> AppOut:
    verb = "stop" if stop else "start"
    target = writable_app(request, session, principal, biz=biz, app=app, action=f"instances.{verb}")
    store_apps.stop_or_start_instances(
        session,
        business=target.business,
        app=target.app,
        instance_ids=body.instance_ids,
        stop=stop,
    )
    ids = ", ".join(map(str, sorted(body.instance_ids)[:20]))
    target.audit.summary = f"{'stopped' if stop else 'started'} instance(s) {ids} of '{app}'"
    return app_out(session, target.business, target.app, None)


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
    return _stop_or_start(body, request, principal, session, biz=biz, app=app, stop=True)


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
    return _stop_or_start(body, request, principal, session, biz=biz, app=app, stop=False)


# ---------------------------------------------------------------- instances


@router.get("/businesses/{biz}/apps/{app}/instances", response_model=InstancePage)
async def list_instances(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    limit: Limit = 100,
    cursor: Cursor = None,
    status: str = Query(default="", max_length=40, description="only this status (Running, ...)"),
    version: str = Query(
        default="", max_length=63, description="only instances running (or bound for) it"
    ),
    node: str = Query(default="", max_length=253, description="part of the node's name"),
    name: str = Query(default="", max_length=100, description="part of the instance's name"),
    order: Literal["id", "newest"] = Query(
        default="id",
        description="id: by id, pages both ways; newest: highest id first, forward only "
        "(the instances a scale-in by count removes)",
    ),
) -> InstancePage:
    """The app's instances by id, a page at a time, with the filters given: the ones it wants
    (as the cluster reports them, else Pending or Stopped) and the ones still in the cluster
    it no longer wants (being removed, with no template). ``by_status``, ``by_version`` and
    ``total`` count every instance, ``matched`` those the filters match, so a page of 10,000
    instances needs no other call. The list is filtered, counted and paged over one small
    state per instance (``instance_states`` of the cluster's provider, and the stored map);
    only the page's instances are observed in full and shaped (at 10,000, building every view
    cost each page 50 ms)."""
    business, row = readable_app(session, principal, biz=biz, app=app)
    states = await observed_states(request, session, business, row) or {}
    instances = domain_apps.parse_instance_map(row.instances) if row.state == "running" else {}
    stopped = store_apps.stopped_ids(row)
    tally = tally_instances(
        app=row.name,
        wanted=instances,
        stopped=stopped,
        observed=states,
        chosen=InstanceFilter(status=status, version=version, node=node, name=name),
    )
    if order == "newest":
        prev = None
        ids, nxt = page_in_memory(
            tally.ids,
            key=lambda iid: iid,
            kind=f"instances-newest@app:{row.id}",
            limit=limit,
            cursor=cursor,
            descending=True,
            numeric=True,
        )
    else:
        ids, nxt, prev = page_in_memory_both_ways(
            tally.ids,
            key=lambda iid: iid,
            kind=f"instances@app:{row.id}",
            limit=limit,
            cursor=cursor,
        )
    page_in_cluster = [iid for iid in ids if iid in states]
    observed = (
        await observe_app(request, session, business, row, ids=page_in_cluster)
        if page_in_cluster
        else []
    ) or []
    by_id = {i.instance_id: i for i in observed}
    failures = store_apps.last_failures(session, app=row)
    out = [
        instance_out(
            iid,
            row,
            instances.get(iid, ""),
            by_id.get(iid),
            failures.get(iid),
            stopped=iid in stopped and iid in instances,
        )
        for iid in ids
    ]
    return InstancePage(
        items=out,
        next_cursor=nxt,
        prev_cursor=prev,
        matched=len(tally.ids),
        total=tally.total,
        by_status=tally.by_status,
        by_version=tally.by_version,
    )


@router.get("/businesses/{biz}/apps/{app}/instances/{instance}", response_model=InstanceOut)
async def get_instance(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int = InstancePath,
) -> InstanceOut:
    business, row = readable_app(session, principal, biz=biz, app=app)
    version = row.instances.get(str(instance))
    observed = await observe_app(request, session, business, row, ids=[instance]) or []
    inst = next((i for i in observed if i.instance_id == instance), None)
    if version is None and inst is None:
        raise NotFound(f"instance {instance} not found in app '{app}'")
    failure = store_apps.last_failures(session, app=row).get(instance)
    return instance_out(instance, row, version or "", inst, failure)


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
    target = writable_app(
        request,
        session,
        principal,
        biz=biz,
        app=app,
        action="instance.restart",
        target=f"{app}/instance/{instance}",
        lock=False,
    )
    cluster, inst = await one_instance(request, session, target.business, target.app, instance)
    target.audit.cluster = cluster.name
    restarted = await provider_for(request, cluster).restart_instance(
        namespace=target.business.name, name=inst.name
    )
    target.audit.summary = f"restarted {inst.name} on {inst.node}"
    version = target.app.instances.get(str(instance), "")
    return instance_out(instance, target.app, version, restarted, None)


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
    target = writable_app(
        request,
        session,
        principal,
        biz=biz,
        app=app,
        action="instance.kill",
        target=f"{app}/instance/{instance}",
        lock=False,
    )
    cluster, inst = await one_instance(request, session, target.business, target.app, instance)
    target.audit.cluster = cluster.name
    await provider_for(request, cluster).delete_instance(
        namespace=target.business.name, name=inst.name
    )
    target.audit.summary = f"killed {inst.name} on {inst.node}; it will be recreated"
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
    business, row = readable_app(session, principal, biz=biz, app=app)
    cluster, inst = await one_instance(request, session, business, row, instance)
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since must carry a timezone, e.g. 2026-01-01T00:00:00Z")
    lines = await provider_for(request, cluster).logs(
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
    """Run one command in the instance (the console's shell sends one line at a time, as
    ``["sh", "-c", line]``). The operation record names the command line, secrets redacted."""
    target = writable_app(
        request,
        session,
        principal,
        biz=biz,
        app=app,
        action="instance.exec",
        target=f"{app}/instance/{instance}",
        lock=False,
        refuse_deleting=False,
    )
    cluster, inst = await one_instance(request, session, target.business, target.app, instance)
    target.audit.cluster = cluster.name
    # set before the call, so that a refusal or a timeout is recorded with the command too
    target.audit.summary = f"$ {command_summary(body.command)} in {inst.name}"
    result = await provider_for(request, cluster).exec(
        namespace=target.business.name, name=inst.name, command=body.command, timeout=body.timeout_s
    )
    target.audit.summary += f": exit {result.exit_code}"
    return ExecOut(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)
