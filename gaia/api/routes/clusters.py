"""Clusters: register a ``sim`` or ``kubernetes`` cluster, see its health, remove it.

A kubeconfig is validated at registration (``parse_kubeconfig`` says what is wrong), stored
encrypted, and never returned, logged or recorded; responses only say ``has_kubeconfig``.
Platform admins see every cluster; other users see the clusters where a business of theirs holds
a quota (that is where they can deploy). Removal never contacts the cluster, so a dead cluster
can always be removed. The rows are written by ``gaia.store.clusters``; what is parsed and
validated (the kubeconfig, the sim spec) is checked here first. See docs/architecture.md, "api".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    platform,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.clusters import ClusterCreate, ClusterOut, ClusterUpdate
from gaia.domain.errors import InvalidRequest
from gaia.kube import parse_kubeconfig
from gaia.providers.sim import validate_sim_spec
from gaia.security import SecretBox
from gaia.store import clusters
from gaia.store.models import Cluster

router = APIRouter(tags=["clusters"], route_class=CommittingRoute)
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")


def cluster_out(c: Cluster) -> ClusterOut:
    return ClusterOut(
        name=c.name,
        kind=c.kind,
        region=c.region,
        zone=c.zone,
        labels=c.labels or {},
        description=c.description,
        has_kubeconfig=c.kubeconfig_encrypted is not None,
        sim=c.sim_spec if c.kind == "sim" else None,
        health=c.health,
        health_message=c.health_message,
        health_checked_at=c.health_checked_at,
        health_changed_at=c.health_changed_at,
        node_count=c.node_count,
        ready_node_count=c.ready_node_count,
        created_at=c.created_at,
    )


def _connection(body: ClusterCreate, *, secrets: SecretBox) -> tuple[bytes | None, dict[str, Any]]:
    """How the platform will reach the cluster: its kubeconfig, checked and encrypted (kind
    ``kubernetes``), or its sim spec with defaults filled (kind ``sim``)."""
    if body.kind == "kubernetes":
        if body.sim is not None:
            raise InvalidRequest("sim: only for kind=sim")
        if not body.kubeconfig:
            raise InvalidRequest("kubeconfig: required for kind=kubernetes")
        parse_kubeconfig(body.kubeconfig)
        return secrets.encrypt(body.kubeconfig), {}
    if body.kubeconfig is not None:
        raise InvalidRequest("kubeconfig: only for kind=kubernetes")
    return None, validate_sim_spec(body.sim.model_dump() if body.sim is not None else {})


@router.get("/clusters", response_model=Page[ClusterOut])
def list_clusters(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[ClusterOut]:
    rows, nxt = clusters.page_clusters(
        session, business_ids=principal.business_scope(), limit=limit, cursor=cursor
    )
    return Page[ClusterOut](items=[cluster_out(c) for c in rows], next_cursor=nxt)


@router.post("/clusters", response_model=ClusterOut, status_code=201)
def create_cluster(
    body: ClusterCreate, request: Request, principal: PrincipalDep, session: SessionDep
) -> ClusterOut:
    ctx = audit(request, action="cluster.create", cluster=body.name, target=f"cluster/{body.name}")
    require_platform_admin(principal, "register clusters")
    # A taken name is refused before the connection is looked at, as it always was.
    clusters.check_name_free(session, body.name)
    kubeconfig_encrypted, sim_spec = _connection(body, secrets=platform(request).secrets)
    cluster = clusters.create_cluster(
        session,
        name=body.name,
        kind=body.kind,
        region=body.region,
        zone=body.zone,
        labels=body.labels,
        description=body.description,
        kubeconfig_encrypted=kubeconfig_encrypted,
        sim_spec=sim_spec,
        user=principal.username,
    )
    ctx.summary = (
        f"registered {body.kind} cluster '{body.name}' in region '{body.region}' zone '{body.zone}'"
    )
    return cluster_out(cluster)


@router.get("/clusters/{cluster}", response_model=ClusterOut)
def get_cluster(
    principal: PrincipalDep, session: SessionDep, cluster: str = ClusterPath
) -> ClusterOut:
    return cluster_out(visible_cluster(session, principal, cluster))


@router.patch("/clusters/{cluster}", response_model=ClusterOut)
def update_cluster(
    body: ClusterUpdate,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
) -> ClusterOut:
    ctx = audit(request, action="cluster.update", cluster=cluster, target=f"cluster/{cluster}")
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "change clusters")
    kubeconfig_encrypted = None
    if body.kubeconfig is not None:
        if row.kind != "kubernetes":
            raise InvalidRequest("kubeconfig: only for kind=kubernetes")
        parse_kubeconfig(body.kubeconfig)
        kubeconfig_encrypted = platform(request).secrets.encrypt(body.kubeconfig)
    changed = clusters.update_cluster(
        row,
        region=body.region,
        zone=body.zone,
        description=body.description,
        labels=body.labels,
        kubeconfig_encrypted=kubeconfig_encrypted,
    )
    ctx.summary = "updated " + (", ".join(changed) or "nothing")
    return cluster_out(row)


@router.delete("/clusters/{cluster}", status_code=204)
def delete_cluster(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    force: bool = Query(
        False,
        description="also remove a cluster that still holds apps or quotas (dropped with it); "
        "without it such a cluster is refused with 409",
    ),
) -> Response:
    """Unregister the cluster. One that holds apps or quotas is refused (409 naming them)
    unless ``force``; the record then lists everything dropped. Nothing in the cluster is
    touched."""
    ctx = audit(request, action="cluster.delete", cluster=cluster, target=f"cluster/{cluster}")
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "remove clusters")
    dropped = clusters.delete_cluster(session, cluster=row, force=force)
    platform(request).providers.forget(row.id)
    ctx.summary = f"removed {row.kind} cluster '{cluster}'" + (
        f" (forced) and with it {dropped.describe()}" if dropped else ""
    )
    return Response(status_code=204)
