"""Backups: list them, start one now, and give Gaia access to a cluster's etcd (platform admins).

A backup started here is a ``Pending`` row; the ``controllers`` leader takes it within a few
seconds (``gaia.controllers.backups``) and moves it through ``Running`` (with its step) to
``Succeeded`` or ``Failed``, so the answer to POST is 202 and the client polls
``GET /backups/{id}``. Restoring is not an API call: it replaces the database the API runs on,
so it is ``gaia restore`` with every replica stopped (docs/backup.md). A cluster's etcd access
(endpoints and client certificate) is stored encrypted like its kubeconfig and never returned.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    inline_write,
    platform,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.backups import BackupOut, EtcdAccessIn, EtcdAccessOut
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.store import backups
from gaia.store.backup import EtcdAccess
from gaia.store.models import Backup

router = APIRouter(tags=["backups"], route_class=CommittingRoute)
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")


@router.get("/backups", response_model=Page[BackupOut])
def list_backups(
    principal: PrincipalDep, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[BackupOut]:
    """Backups, newest first."""
    require_platform_admin(principal, "list backups")
    rows, nxt = backups.page_backups(session, limit=limit, cursor=cursor)
    return Page[BackupOut](items=[BackupOut.of(b) for b in rows], next_cursor=nxt)


@router.post("/backups", response_model=BackupOut, status_code=202)
@inline_write
def start_backup(request: Request, principal: PrincipalDep, session: SessionDep) -> BackupOut:
    """Take a backup now (409 while another is pending or running)."""
    ctx = audit(request, action="backup.create", target="backups")
    require_platform_admin(principal, "start backups")
    backup = backups.request_backup(
        session, trigger="api", by=principal.username, now=platform(request).clock.now()
    )
    ctx.summary = f"asked for backup {backup.id}"
    return BackupOut.of(backup)


@router.get("/backups/{backup_id}", response_model=BackupOut)
def get_backup(
    principal: PrincipalDep, session: SessionDep, backup_id: int = Path(ge=1, le=2**31 - 1)
) -> BackupOut:
    require_platform_admin(principal, "read backups")
    row = session.get(Backup, backup_id)
    if row is None:
        raise NotFound(f"backup {backup_id} not found")
    return BackupOut.of(row)


def _access_out(cluster: str, access: EtcdAccess | None) -> EtcdAccessOut:
    if access is None:
        return EtcdAccessOut(cluster=cluster, configured=False, endpoints=[], tls=False)
    return EtcdAccessOut(
        cluster=cluster, configured=True, endpoints=access.endpoints, tls=bool(access.cert)
    )


@router.get("/clusters/{cluster}/etcd", response_model=EtcdAccessOut)
def get_etcd_access(
    request: Request, principal: PrincipalDep, session: SessionDep, cluster: str = ClusterPath
) -> EtcdAccessOut:
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "read a cluster's etcd access")
    """Whether backups snapshot this cluster's etcd, and where (never the certificates)."""
    if row.etcd_encrypted is None:
        return _access_out(cluster, None)
    access = EtcdAccess.from_json(platform(request).secrets.decrypt(row.etcd_encrypted))
    return _access_out(cluster, access)


@router.put("/clusters/{cluster}/etcd", response_model=EtcdAccessOut)
@inline_write
def set_etcd_access(
    body: EtcdAccessIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
) -> EtcdAccessOut:
    """Let backups snapshot this kubernetes cluster's etcd."""
    ctx = audit(request, action="cluster.etcd", cluster=cluster, target=f"cluster/{cluster}")
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "change a cluster's etcd access")
    for url in body.endpoints:
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"endpoints: {url!r} is not an http:// or https:// URL")
    if bool(body.cert) != bool(body.key):
        raise InvalidRequest("cert and key go together (Gaia's client certificate and its key)")
    access = EtcdAccess(endpoints=body.endpoints, ca=body.ca, cert=body.cert, key=body.key)
    backups.set_etcd_access(session, cluster=row, access=access, secrets=platform(request).secrets)
    ctx.summary = f"backups snapshot the etcd of '{cluster}' at {', '.join(body.endpoints)}"
    return _access_out(cluster, access)


@router.delete("/clusters/{cluster}/etcd", status_code=204)
@inline_write
def remove_etcd_access(
    request: Request, principal: PrincipalDep, session: SessionDep, cluster: str = ClusterPath
) -> Response:
    ctx = audit(request, action="cluster.etcd", cluster=cluster, target=f"cluster/{cluster}")
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "change a cluster's etcd access")
    backups.set_etcd_access(session, cluster=row, access=None, secrets=platform(request).secrets)
    ctx.summary = f"backups no longer snapshot the etcd of '{cluster}'"
    return Response(status_code=204)
