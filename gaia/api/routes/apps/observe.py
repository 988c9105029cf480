"""What the cluster reports about an app, through the app's cluster provider.

Reads of apps, instances and upgrades merge the store with one observation; the actions on one
instance (restart, kill, logs, exec) need the instance as the cluster has it. An unreachable
cluster is an answer here (None), never a 500: lists still show the stored spec.
"""

from __future__ import annotations

from collections.abc import Collection

from fastapi import Request
from sqlalchemy.orm import Session

from gaia.api.deps import platform
from gaia.api.routes.apps.shapes import AppObservation
from gaia.domain.errors import Conflict, NotFound
from gaia.providers.port import ClusterProvider, Instance, InstanceState
from gaia.store import apps as store_apps
from gaia.store.models import App, Business, Cluster


def provider_for(request: Request, cluster: Cluster) -> ClusterProvider:
    return platform(request).providers.for_cluster(cluster)


async def observe(
    request: Request,
    cluster: Cluster,
    namespace: str,
    app: str,
    *,
    ids: Collection[int] | None = None,
) -> list[Instance] | None:
    """The app's instances in the cluster (``ids``: only those), or None when the cluster
    cannot be reached."""
    try:
        return await provider_for(request, cluster).list_instances(
            namespace=namespace, app=app, ids=ids
        )
    except ConnectionError:
        return None


async def observed_states(
    request: Request, session: Session, business: Business, app: App
) -> dict[int, InstanceState] | None:
    """Phase, node and version of each of the app's instances in the cluster, by id (what a
    list filters and counts by), or None when the cluster cannot be reached."""
    cluster = store_apps.cluster_of(session, app)
    try:
        return await provider_for(request, cluster).instance_states(
            namespace=business.name, app=app.name
        )
    except ConnectionError:
        return None


async def progress_states(
    request: Request, session: Session, business: Business, app: App, *, ids: Collection[int]
) -> dict[int, InstanceState] | None:
    """The small states an upgrade's progress over ``ids`` is stepped against: every
    instance's (``instance_states``) when the upgrade covers half the app or more, else only
    the views of ``ids`` reduced to states (on Kubernetes a state costs a pod's reading as a
    view does, so an upgrade of a few instances of a large app reads a few pods). None when
    the cluster cannot be reached."""
    if len(ids) * 2 >= len(app.instances):
        return await observed_states(request, session, business, app)
    views = await observe_app(request, session, business, app, ids=ids) if ids else []
    if views is None:
        return None
    return {
        v.instance_id: InstanceState(phase=v.phase, node=v.node, version=v.version, ready=v.ready)
        for v in views
    }


async def observe_for_answer(
    request: Request, session: Session, business: Business, app: App
) -> AppObservation | None:
    """What ``app_out`` shows of the cluster: every instance's small state (its counts, and its
    latest upgrade's progress); None when the cluster cannot be reached."""
    states = await observed_states(request, session, business, app)
    return None if states is None else AppObservation(states=states)


async def observe_app(
    request: Request,
    session: Session,
    business: Business,
    app: App,
    *,
    ids: Collection[int] | None = None,
) -> list[Instance] | None:
    return await observe(
        request, store_apps.cluster_of(session, app), business.name, app.name, ids=ids
    )


async def one_instance(
    request: Request, session: Session, business: Business, app: App, iid: int
) -> tuple[Cluster, Instance]:
    """Instance ``iid`` as the cluster has it: 409 while it is wanted but not there yet, 404
    when the app has no such instance, ``ConnectionError`` when the cluster is unreachable."""
    cluster = store_apps.cluster_of(session, app)
    observed = await observe(request, cluster, business.name, app.name, ids=[iid])
    if observed is None:
        raise ConnectionError(f"cluster '{cluster.name}' is unreachable")
    for inst in observed:
        if inst.instance_id == iid:
            return cluster, inst
    if str(iid) in app.instances:
        raise Conflict(f"instance {app.name}-{iid} is not running yet")
    raise NotFound(f"instance {iid} not found in app '{app.name}'")
