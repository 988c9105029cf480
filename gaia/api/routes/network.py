"""The Galaxy network (issue 19; docs/network.md): floating-IP pools, allocations, an app's
addresses, and the calls of the nodes' CNI plugin.

Users: ``GET /clusters/{cluster}/ip-pools`` (anyone who sees the cluster, as for its nodes),
``POST``/``DELETE`` of pools, the allocations of a pool and freeing one, and
``GET .../ipam/token`` (platform admins); ``GET /businesses/{biz}/apps/{app}/network``
(members of the business: a page of the app's addresses, counted by the database).

The plugin (``gaia-cni`` on every node) calls ``POST /clusters/{cluster}/ipam/add|del|check|gc``
with the cluster's IPAM node token (``Authorization: Bearer gaia-ipam-...``), derived from the
platform's secret key as the P2P agent token is: every replica accepts it, and it is valid for
one cluster only. On these paths a wrong token is 401 and a user's API token 403; the node token
is no user token anywhere else. An ADD or DEL that changes an address is recorded (actor
``cni:<node>``); a repeated one and the plugin's CHECKs are not.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field
from sqlalchemy.orm import Session

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    authenticate,
    inline_write,
    platform,
    readable_app,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.network import (
    AllocationOut,
    AppAddressOut,
    AppNetworkPage,
    CniAddIn,
    CniAddOut,
    CniCheckOut,
    CniDelOut,
    CniGcIn,
    CniGcOut,
    CniPlanIn,
    CniPlanOut,
    CniSandboxIn,
    IpamTokenOut,
    IpPoolIn,
    IpPoolOut,
)
from gaia.domain.clusters import cluster_key_material
from gaia.domain.errors import Forbidden, InvalidRequest, NotFound, Unauthenticated
from gaia.domain.network import InstanceName, parse_pool
from gaia.security import SecretBox
from gaia.store import network
from gaia.store.apps import load_templates
from gaia.store.clusters import cluster_named
from gaia.store.models import Business, Cluster, FloatingIpPool, NetworkAttachment

router = APIRouter(tags=["network"], route_class=CommittingRoute)
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")
PoolPath = Path(pattern=NAME_PATTERN, max_length=63, description="pool name")
TOKEN_PREFIX = "gaia-ipam-"  # noqa: S105 - a prefix, not a secret


def ipam_token(secrets: SecretBox, cluster: Cluster) -> str:
    """The cluster's node credential for ``gaia-cni`` (a sibling of the P2P agent token)."""
    raw = secrets.derive_key(
        "ipam node token\0"
        + cluster_key_material(id=cluster.id, name=cluster.name, salt=cluster.key_salt)
    )
    return TOKEN_PREFIX + raw.hex()


def ipam_cluster(request: Request, cluster: str = ClusterPath) -> int:
    """The id of the cluster whose node token the caller sent (401 otherwise; 403 for a user's
    token). Checked in a short read of its own: the CNI routes hold no transaction across
    dependencies (a hundred sandboxes starting at once must not wait on each other's)."""
    ctx = audit(request, cluster=cluster)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send 'Authorization: Bearer <the cluster's IPAM node token>'")
    plat = platform(request)
    with plat.db.read_session() as session:
        try:
            row: Cluster | None = cluster_named(session, cluster)
        except NotFound:
            row = None
        if row is not None and hmac.compare_digest(
            token.encode(), ipam_token(plat.secrets, row).encode()
        ):
            ctx.actor = "cni"
            return row.id
        try:
            principal = authenticate(session, token, cache=plat.principals)
        except Unauthenticated:
            principal = None
    if principal is not None:
        ctx.actor = principal.username
        raise Forbidden("CNI calls take the cluster's IPAM node token, not a user's API token")
    raise Unauthenticated("the IPAM node token is not valid for this cluster")


@contextmanager
def _node_write(request: Request, cluster_id: int) -> Iterator[tuple[Session, Cluster]]:
    """One write transaction for a CNI call, begun and committed inside the route."""
    with platform(request).db.write_session() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None:
            raise NotFound("the cluster was deleted")
        yield session, cluster


IpamCluster = Annotated[int, Depends(ipam_cluster)]


def pool_out(row: FloatingIpPool, used: int) -> IpPoolOut:
    spec = parse_pool(
        subnet=row.subnet, gateway=row.gateway, first=row.range_start, last=row.range_end
    )
    return IpPoolOut(
        name=row.name,
        subnet=row.subnet,
        zone=row.zone,
        gateway=row.gateway,
        range_start=row.range_start,
        range_end=row.range_end,
        size=spec.size,
        used=used,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def allocation_out(row: NetworkAttachment, *, business: str, pool: str | None) -> AllocationOut:
    return AllocationOut(
        id=row.id,
        business=business,
        pod=row.pod,
        mode="nat" if row.mode == "nat" else "floating-ip",
        ip=row.ip,
        pool=pool,
        policy=row.policy,
        node=row.node,
        held=bool(row.container_id),
        ports=dict(row.ports or {}),
        updated_at=row.updated_at,
    )


# ---------------------------------------------------------------- pools


@router.get("/clusters/{cluster}/ip-pools", response_model=Page[IpPoolOut])
def list_pools(
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[IpPoolOut]:
    """The cluster's floating-IP pools with how full each is (a node's pool is the one of its
    ``gaia.io/subnet`` label)."""
    row = visible_cluster(session, principal, cluster)
    pools, nxt = page_in_memory(
        network.pools_of(session, cluster=row),
        key=lambda p: p.name,
        kind=f"ip-pools@cluster:{row.id}",
        limit=limit,
        cursor=cursor,
    )
    used = network.used_counts(session, [p.id for p in pools])
    return Page[IpPoolOut](items=[pool_out(p, used.get(p.id, 0)) for p in pools], next_cursor=nxt)


@router.post("/clusters/{cluster}/ip-pools", response_model=IpPoolOut, status_code=201)
@inline_write
def create_pool(
    body: IpPoolIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
) -> IpPoolOut:
    ctx = audit(
        request,
        action="ip-pool.create",
        cluster=cluster,
        target=f"cluster/{cluster}/ip-pool/{body.name}",
    )
    require_platform_admin(principal, "create floating-IP pools")
    row = network.create_pool(
        session,
        cluster=visible_cluster(session, principal, cluster),
        name=body.name,
        subnet=body.subnet,
        zone=body.zone,
        gateway=body.gateway,
        range_start=body.range_start,
        range_end=body.range_end,
        actor=principal.username,
    )
    ctx.summary = f"created pool {body.name}: {row.range_start}-{row.range_end} of {row.subnet}"
    return pool_out(row, 0)


@router.get("/clusters/{cluster}/ip-pools/{pool}", response_model=IpPoolOut)
def get_pool(
    principal: PrincipalDep, session: SessionDep, cluster: str = ClusterPath, pool: str = PoolPath
) -> IpPoolOut:
    row = network.find_pool(
        session, cluster=visible_cluster(session, principal, cluster), name=pool
    )
    return pool_out(row, network.used_counts(session, [row.id]).get(row.id, 0))


@router.delete("/clusters/{cluster}/ip-pools/{pool}", status_code=204)
@inline_write
def delete_pool(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    pool: str = PoolPath,
) -> Response:
    ctx = audit(
        request,
        action="ip-pool.delete",
        cluster=cluster,
        target=f"cluster/{cluster}/ip-pool/{pool}",
    )
    require_platform_admin(principal, "delete floating-IP pools")
    row = network.find_pool(
        session, cluster=visible_cluster(session, principal, cluster), name=pool
    )
    network.delete_pool(session, pool=row)
    ctx.summary = f"deleted pool {pool} ({row.subnet})"
    return Response(status_code=204)


@router.get("/clusters/{cluster}/ip-pools/{pool}/allocations", response_model=Page[AllocationOut])
def list_allocations(
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    pool: str = PoolPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AllocationOut]:
    """Every address the pool has given, whichever business holds it (platform admins)."""
    require_platform_admin(principal, "list a pool's allocations across businesses")
    row = network.find_pool(
        session, cluster=visible_cluster(session, principal, cluster), name=pool
    )
    rows, nxt = network.page_pool_allocations(session, pool=row, limit=limit, cursor=cursor)
    names = network.business_names(session, {r.business_id for r in rows})
    return Page[AllocationOut](
        items=[allocation_out(r, business=names[r.business_id], pool=row.name) for r in rows],
        next_cursor=nxt,
    )


@router.delete("/clusters/{cluster}/ip-pools/{pool}/allocations/{allocation_id}", status_code=204)
@inline_write
def delete_allocation(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    allocation_id: int = Path(ge=1, le=2**31 - 1),
    cluster: str = ClusterPath,
    pool: str = PoolPath,
) -> Response:
    ctx = audit(
        request,
        action="ip-allocation.delete",
        cluster=cluster,
        target=f"cluster/{cluster}/ip-pool/{pool}/allocation/{allocation_id}",
    )
    require_platform_admin(principal, "free floating IPs")
    row = visible_cluster(session, principal, cluster)
    found = network.find_pool(session, cluster=row, name=pool)
    allocation = network.attachment_by_id(session, cluster=row, attachment_id=allocation_id)
    if allocation.pool_id != found.id:
        raise NotFound(f"pool '{pool}' has no allocation {allocation_id}")
    network.release_attachment(session, row=allocation)
    ctx.summary = f"freed {allocation.ip} of {allocation.pod}"
    return Response(status_code=204)


@router.get("/clusters/{cluster}/ipam/token", response_model=IpamTokenOut)
def get_ipam_token(
    request: Request, principal: PrincipalDep, session: SessionDep, cluster: str = ClusterPath
) -> IpamTokenOut:
    """The cluster's node credential, for the CNI configuration of its nodes (platform admins)."""
    require_platform_admin(principal, "read a cluster's IPAM node token")
    row = visible_cluster(session, principal, cluster)
    return IpamTokenOut(token=ipam_token(platform(request).secrets, row))


# ---------------------------------------------------------------- an app's network


@router.get("/businesses/{biz}/apps/{app}/network", response_model=AppNetworkPage)
def app_network(
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = Path(pattern=NAME_PATTERN, max_length=63),
    app: str = Path(pattern=NAME_PATTERN, max_length=40),
    limit: Limit = 100,
    cursor: Cursor = None,
    instance: Annotated[
        list[Annotated[int, Field(ge=0, le=1_000_000)]],
        Query(max_length=500, description="only these instances' addresses (ids, repeated)"),
    ] = [],  # noqa: B006 - FastAPI copies a query list's default
    kept: bool | None = Query(
        default=None,
        description="true: only addresses kept for instances the app no longer wants; "
        "false: only those of instances it wants",
    ),
) -> AppNetworkPage:
    """The app's network mode and release policy (of its default template), and a page of the
    addresses its instances hold, by pod name: each one's pool, node, policy, NAT ports,
    whether a sandbox holds it and whether it is ``kept`` (told from the stored instance map).
    ``total`` and ``kept_total`` are counted by the database over every address, so an app of
    10,000 floating IPs costs a page, not 10,000 rows."""
    business, row = readable_app(session, principal, biz=biz, app=app)
    body = load_templates(session, row.id)[row.default_template].body
    mode = str(body.get("network_mode") or "overlay")
    rows, nxt = network.page_app_addresses(
        session, app=row, limit=limit, cursor=cursor, instance_ids=instance, kept=kept
    )
    counts = network.app_address_counts(session, app=row)
    pools = network.pool_names(session, {r.pool_id for r in rows if r.pool_id is not None})
    running = row.state == "running"
    items = []
    for r in rows:
        iid = InstanceName.parse(r.pod).instance
        if iid is None:  # not one: the store's query matches <app>-<id> only
            continue
        shown = allocation_out(
            r, business=business.name, pool=pools.get(r.pool_id) if r.pool_id else None
        )
        wanted = running and str(iid) in row.instances
        items.append(AppAddressOut(**shown.model_dump(), instance=iid, kept=not wanted))
    return AppNetworkPage(
        items=items,
        next_cursor=nxt,
        mode=mode,
        ip_release=(body.get("ip_release") or "on-delete") if mode == "floating-ip" else None,
        total=counts.total,
        kept_total=counts.kept,
    )


# ---------------------------------------------------------------- the CNI plugin


def _business(session: Session, namespace: str) -> Business:
    row = network.business_named(session, namespace)
    if row is None:
        raise NotFound(
            f"namespace '{namespace}' is no business of Gaia: floating IPs and NAT records are "
            "for the platform's instances"
        )
    return row


@router.post("/clusters/{cluster}/ipam/add", response_model=CniAddOut)
def cni_add(body: CniAddIn, request: Request, cluster_id: IpamCluster) -> CniAddOut:
    ctx = audit(request, action="network.attach", business=body.namespace)
    ctx.actor = f"cni:{body.node}"
    if body.mode == "floating-ip" and body.subnet is None:
        raise InvalidRequest("subnet: a floating-ip ADD names the node's underlay subnet")
    if body.mode == "nat" and body.node_ip is None:
        raise InvalidRequest("node_ip: a nat ADD names the node's address")
    with _node_write(request, cluster_id) as (session, cluster):
        ctx.target = f"cluster/{cluster.name}/business/{body.namespace}/pod/{body.pod}"
        business = _business(session, body.namespace)
        if body.mode == "floating-ip":
            assert body.subnet is not None
            got = network.attach_floating(
                session,
                cluster=cluster,
                business=business,
                pod=body.pod,
                subnet=network.check_subnet(body.subnet),
                node=body.node,
                container_id=body.container_id,
            )
            ctx.read_only = got.reused  # the same address again: nothing to record
            ctx.summary = f"{body.pod} on {body.node}: {got.ip} of pool {got.pool}"
            return CniAddOut(
                ip=got.ip,
                prefix_len=got.prefix_len,
                gateway=got.gateway,
                pool=got.pool,
                policy=got.policy,
                reused=got.reused,
            )
        assert body.node_ip is not None
        row = network.attach_nat(
            session,
            cluster=cluster,
            business=business,
            pod=body.pod,
            node=body.node,
            node_ip=body.node_ip,
            container_id=body.container_id,
            ports=body.ports,
        )
        ctx.summary = f"{body.pod} on {body.node}: NAT {row.ip} ports {row.ports}"
        return CniAddOut(ip=row.ip, prefix_len=32, gateway="", pool=None, policy="", reused=False)


@router.post("/clusters/{cluster}/ipam/del", response_model=CniDelOut)
def cni_del(body: CniSandboxIn, request: Request, cluster_id: IpamCluster) -> CniDelOut:
    ctx = audit(request, action="network.detach", business=body.namespace)
    with _node_write(request, cluster_id) as (session, cluster):
        ctx.target = f"cluster/{cluster.name}/business/{body.namespace}/pod/{body.pod}"
        business = network.business_named(session, body.namespace)
        released = business is not None and network.detach(
            session,
            cluster=cluster,
            business=business,
            pod=body.pod,
            container_id=body.container_id,
        )
    ctx.read_only = not released  # a repeated DEL changes nothing
    ctx.summary = f"sandbox {body.container_id} of {body.pod} let go of its address"
    return CniDelOut(released=released)


@router.post("/clusters/{cluster}/ipam/plan", response_model=CniPlanOut)
def cni_plan(body: CniPlanIn, request: Request, cluster_id: IpamCluster) -> CniPlanOut:
    """What the instance's app asks for (mode, ports, policy): the plugin's mode when the runtime
    does not name one."""
    audit(request).read_only = True
    with platform(request).db.read_session() as session:
        business = _business(session, body.namespace)
        plan = network.instance_network(
            session, business_id=business.id, cluster_id=cluster_id, pod=body.pod
        )
    return CniPlanOut(mode=plan.mode, ports=list(plan.ports), policy=plan.policy)


@router.post("/clusters/{cluster}/ipam/check", response_model=CniCheckOut)
def cni_check(body: CniSandboxIn, request: Request, cluster_id: IpamCluster) -> CniCheckOut:
    audit(request).read_only = True
    with platform(request).db.read_session() as session:
        cluster = session.get(Cluster, cluster_id)
        if cluster is None:
            raise NotFound("the cluster was deleted")
        business = _business(session, body.namespace)
        row = network.held_by(
            session,
            cluster=cluster,
            business=business,
            pod=body.pod,
            container_id=body.container_id,
        )
        if row is None:
            raise NotFound(f"sandbox {body.container_id} of {body.pod} holds no address")
        return CniCheckOut(ip=row.ip, node=row.node, mode=row.mode)


@router.post("/clusters/{cluster}/ipam/gc", response_model=CniGcOut)
def cni_gc(body: CniGcIn, request: Request, cluster_id: IpamCluster) -> CniGcOut:
    ctx = audit(request, action="network.gc")
    ctx.actor = f"cni:{body.node}"
    with _node_write(request, cluster_id) as (session, cluster):
        ctx.target = f"cluster/{cluster.name}/node/{body.node}"
        gone = network.forget_sandboxes(
            session, cluster=cluster, node=body.node, valid=set(body.valid)
        )
    ctx.read_only = not gone
    ctx.summary = f"{len(gone)} stale sandbox(es) let go of their addresses"
    return CniGcOut(released=gone)
