"""Hosts of a cluster: list, scale out (add), cordon, drain, scale in (remove); sim faults.

Reading nodes needs only visibility of the cluster; changing them is a platform administrator's
job. Scale in is two steps, as operators expect: drain (cordon and evict; the app controller
recreates the evicted instances on other nodes), then remove, which is refused while anything is
still bound to the node. ``GET /clusters/{cluster}/nodes/{node}`` is one node with what is bound
to it: each instance and the GPUs it holds (the console draws the node's GPU topology with it);
callers see the business, app and instance of their own businesses' instances only, others' as
anonymous holders. ``POST /clusters/{cluster}/sim/faults`` injects failures into a
simulated cluster (crash, OOM, liveness, image pull, node lost, app load) for drills and demos.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Path, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    platform,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page, ResourceAmounts
from gaia.api.schemas.nodes import (
    BoundInstanceOut,
    DrainOut,
    FaultIn,
    GpuOut,
    NodeDetailOut,
    NodeIn,
    NodeOut,
)
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.domain.resources import ResourceVector
from gaia.providers.port import Instance, Node, NodeSpec
from gaia.providers.sim import SimCluster
from gaia.store.businesses import business_names

router = APIRouter(tags=["nodes"], route_class=CommittingRoute)
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")
NodePath = Path(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _allocated(node: Node) -> ResourceVector:
    """What the node's instances hold. GPU memory is read per card: an instance holding whole
    cards requests no GPU memory, yet holds all of theirs (8 cards taken read "0 / 196608 MiB"
    when the requests were summed)."""
    if not node.gpu_memory_used:
        return node.allocated
    held = sum(node.gpu_memory_used.values())
    return dataclasses.replace(node.allocated, gpu_memory=max(held, node.allocated.gpu_memory))


def node_out(node: Node) -> NodeOut:
    return NodeOut(
        name=node.name,
        ready=node.ready,
        schedulable=node.schedulable,
        zone=node.zone,
        labels=dict(node.labels),
        host_ip=node.host_ip,
        capacity=ResourceAmounts.from_vector(node.capacity),
        allocated=ResourceAmounts.from_vector(_allocated(node)),
        gpus=[
            GpuOut(
                index=g.index,
                model=g.model,
                memory_mib=g.memory_mib,
                numa_node=g.numa_node,
                used=node.gpu_used.get(g.index, 0) / 100,
                healthy=g.healthy,
            )
            for g in node.gpus
        ],
        gpu_links=[list(row) for row in node.gpu_links],
        instances=node.instance_count,
        message=node.message,
    )


def _ctx_node(request: Request, verb: str, cluster: str, node: str) -> None:
    audit(request, action=f"node.{verb}", cluster=cluster, target=f"cluster/{cluster}/node/{node}")


@router.get("/clusters/{cluster}/nodes", response_model=Page[NodeOut])
async def list_nodes(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[NodeOut]:
    """The cluster's nodes by name, a page at a time. The provider reports the nodes as one
    list (no table holds them), so they are paged in memory over the node name."""
    row = visible_cluster(session, principal, cluster)
    nodes = await platform(request).providers.for_cluster(row).list_nodes()
    page, nxt = page_in_memory(
        nodes,
        key=lambda n: n.name,
        kind=f"nodes@cluster:{row.id}",
        limit=limit,
        cursor=cursor,
    )
    return Page[NodeOut](items=[node_out(n) for n in page], next_cursor=nxt)


def _bound_out(inst: Instance, *, named: bool) -> BoundInstanceOut:
    cards = len(inst.gpu_ids)
    return BoundInstanceOut(
        business=inst.namespace if named else None,
        app=inst.app if named else None,
        name=inst.name if named else None,
        instance_id=inst.instance_id if named else None,
        phase=str(inst.phase),
        ready=inst.ready,
        resources=ResourceAmounts.from_vector(inst.resources),
        gpu_ids=list(inst.gpu_ids),
        gpu_share=round(inst.resources.gpu / cards / 100, 2) if cards else 0.0,
    )


@router.get("/clusters/{cluster}/nodes/{node}", response_model=NodeDetailOut)
async def get_node(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    node: str = NodePath,
) -> NodeDetailOut:
    """One node and the instances bound to it, with the GPUs each holds."""
    row = visible_cluster(session, principal, cluster)
    provider = platform(request).providers.for_cluster(row)
    found = next((n for n in await provider.list_nodes() if n.name == node), None)
    if found is None:
        raise NotFound(f"node '{node}' not found in cluster '{cluster}'")
    # Instances live in a namespace named after their business.
    mine: set[str] | None = None
    if not principal.is_platform_admin:
        mine = business_names(session, principal.business_ids())
    bound = [
        _bound_out(inst, named=mine is None or inst.namespace in mine)
        for inst in await provider.list_instances()
        if inst.node == node
    ]
    bound.sort(
        key=lambda b: (b.business is None, b.business or "", b.app or "", b.instance_id or 0)
    )
    return NodeDetailOut(**node_out(found).model_dump(), bound=bound)


@router.post("/clusters/{cluster}/nodes", response_model=NodeOut, status_code=201)
async def add_node(
    body: NodeIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
) -> NodeOut:
    """Scale out: add a host."""
    _ctx_node(request, "add", cluster, body.name)
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "add nodes")
    node = (
        await platform(request)
        .providers.for_cluster(row)
        .add_node(
            NodeSpec(
                name=body.name,
                cpu_milli=body.cpu * 1000,
                memory_mib=body.memory_mib,
                local_disk_gib=body.local_disk_gib,
                bandwidth_mbps=body.bandwidth_mbps,
                gpus=body.gpus,
                gpu_model=body.gpu_model,
                gpu_memory_mib=body.gpu_memory_mib,
                gpu_links=tuple(tuple(r) for r in body.gpu_links),
                zone=body.zone,
                labels=body.labels,
            )
        )
    )
    audit(request).summary = f"added node {body.name}: {body.cpu} cores, {body.gpus} GPU(s)"
    return node_out(node)


async def _schedulable(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str,
    node: str,
    on: bool,
) -> NodeOut:
    _ctx_node(request, "uncordon" if on else "cordon", cluster, node)
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "cordon or uncordon nodes")
    result = await platform(request).providers.for_cluster(row).set_schedulable(node, on)
    audit(request).summary = f"{'uncordoned' if on else 'cordoned'} node {node}"
    return node_out(result)


@router.post("/clusters/{cluster}/nodes/{node}/cordon", response_model=NodeOut)
async def cordon_node(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    node: str = NodePath,
) -> NodeOut:
    return await _schedulable(request, principal, session, cluster, node, False)


@router.post("/clusters/{cluster}/nodes/{node}/uncordon", response_model=NodeOut)
async def uncordon_node(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    node: str = NodePath,
) -> NodeOut:
    return await _schedulable(request, principal, session, cluster, node, True)


@router.post("/clusters/{cluster}/nodes/{node}/drain", response_model=DrainOut)
async def drain_node(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    node: str = NodePath,
) -> DrainOut:
    """Cordon the node and evict its instances; apps recreate them on other nodes."""
    _ctx_node(request, "drain", cluster, node)
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "drain nodes")
    evicted = await platform(request).providers.for_cluster(row).drain(node)
    audit(request).summary = f"drained node {node}: {len(evicted)} instance(s) evicted"
    return DrainOut(node=node, evicted=evicted)


@router.delete("/clusters/{cluster}/nodes/{node}", status_code=204)
async def remove_node(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    node: str = NodePath,
) -> Response:
    """Scale in: remove a drained host (refused while instances are bound to it)."""
    _ctx_node(request, "remove", cluster, node)
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "remove nodes")
    await platform(request).providers.for_cluster(row).remove_node(node)
    audit(request).summary = f"removed node {node}"
    return Response(status_code=204)


@router.post("/clusters/{cluster}/sim/faults", status_code=202)
async def inject_fault(
    body: FaultIn,
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
) -> Response:
    """Inject a failure into a simulated cluster (drills, demos, tests)."""
    ctx = audit(
        request,
        action="sim.fault",
        cluster=cluster,
        target=f"cluster/{cluster}/{body.instance or body.app or body.node or body.image or ''}",
    )
    row = visible_cluster(session, principal, cluster)
    require_platform_admin(principal, "inject faults")
    provider = platform(request).providers.for_cluster(row)
    if not isinstance(provider, SimCluster):
        raise InvalidRequest(f"cluster '{cluster}' is not simulated; faults are for sim clusters")
    fault: dict[str, Any] = body.model_dump(exclude_none=True)
    provider.inject(fault)
    ctx.summary = f"injected fault {body.kind}"
    return Response(status_code=202)
