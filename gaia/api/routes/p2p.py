"""P2P image distribution (issue 17; docs/p2p.md): the agents' calls and the users' views.

Agents (``gaia p2p-agent`` on every node) call ``POST .../p2p/agents``, ``tasks``,
``tasks/{digest}/schedule|reports|done`` and ``manifests`` with the cluster's agent token
(``Authorization: Bearer gaia-p2p-...``, derived from the platform's secret key: every replica
accepts it). On these paths a wrong token is 401 and a user's valid API token 403; an agent
token is no user token, so it is 401 everywhere else. Agent calls are machine traffic, not
operations: they are not written to the operation records unless refused. They never hold a
database transaction: the cluster is looked up in a short read, then the coordinator
(``gaia.controllers.swarm``, in memory) answers; ``schedule`` may wait up to ``wait_s``.

Users: ``GET .../p2p/agent-token`` (platform admins), ``GET .../p2p/images`` and
``GET .../p2p/nodes`` (anyone who sees the cluster, as for its nodes), ``POST .../p2p/prewarms``
(platform admins) and ``GET .../p2p/prewarms/{id}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from gaia.api.deps import (
    PrincipalDep,
    SessionDep,
    audit,
    authenticate,
    platform,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.p2p import (
    DIGEST_PATTERN,
    AgentIn,
    AgentOut,
    AgentRegistryOut,
    AgentTokenOut,
    AssignmentOut,
    DoneIn,
    EmptyOut,
    ManifestIn,
    P2PImageOut,
    P2PNodeOut,
    PieceReportIn,
    PrewarmCreatedOut,
    PrewarmIn,
    PrewarmJobOut,
    PrewarmNodeOut,
    PrewarmOut,
    ReportsIn,
    ScheduleIn,
    ScheduleOut,
    TaskIn,
    TaskOut,
)
from gaia.controllers.swarm import ClusterKey, ImageRef, PieceOutcome, SwarmCoordinator
from gaia.domain.errors import Forbidden, NotFound, Unauthenticated
from gaia.store.clusters import cluster_named

router = APIRouter(tags=["p2p"])
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")
DigestPath = Path(pattern=DIGEST_PATTERN, max_length=71, description="blob digest")
PrewarmPath = Path(pattern=r"^pw-[0-9a-f]{16}$", max_length=19, description="prewarm id")


def _key(row_id: int, name: str) -> ClusterKey:
    return ClusterKey(id=row_id, name=name)


def agent_cluster(request: Request, cluster: str = ClusterPath) -> ClusterKey:
    """The cluster whose agent token the caller sent (401 otherwise; 403 for a user's token)."""
    ctx = audit(request, cluster=cluster)
    ctx.read_only = True  # machine traffic: recorded only when refused
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send 'Authorization: Bearer <the cluster's p2p agent token>'")
    plat = platform(request)
    with plat.db.read_session() as session:
        try:
            row = cluster_named(session, cluster)
            key = _key(row.id, row.name)
        except NotFound:
            key = None
        if key is not None and plat.p2p.is_agent_token(key, token):
            ctx.actor = "p2p-agent"
            return key
        try:
            principal = authenticate(session, token)
        except Unauthenticated:
            principal = None
    if principal is not None:
        ctx.actor = principal.username
        raise Forbidden("P2P agent calls take the cluster's agent token, not a user's API token")
    raise Unauthenticated("the P2P agent token is not valid for this cluster")


AgentCluster = Annotated[ClusterKey, Depends(agent_cluster)]


def _coordinator(request: Request) -> SwarmCoordinator:
    return platform(request).p2p


# ---------------------------------------------------------------- agent → coordinator


@router.post("/clusters/{cluster}/p2p/agents", response_model=AgentOut)
async def register_agent(request: Request, key: AgentCluster, body: AgentIn) -> AgentOut:
    """Register, then heartbeat with the same call every ``heartbeat_s``."""
    answer = _coordinator(request).register(
        key,
        node=body.node,
        zone=body.zone,
        address=body.address,
        upload_slots=body.upload_slots,
        held=body.pieces_held,
    )
    registry = platform(request).registry
    registries = {}
    if registry.enabled:
        username, password = registry.node_credentials(key.name, body.node)
        # how nodes reach it: Gaia's own URL for it when that names the same address, else
        # HTTPS at the address (a registries file's URL for it wins on the agent)
        same = registry.url.split("://", 1)[-1] == registry.address
        registries[registry.address] = AgentRegistryOut(
            url=registry.url if same else f"https://{registry.address}",
            username=username,
            password=password,
            ca_pem=registry.ca_pem,
        )
    return AgentOut(
        ticket_key=answer.ticket_key.hex(),
        heartbeat_s=answer.heartbeat_s,
        prewarm=[PrewarmJobOut(id=pid, image=image) for pid, image in answer.prewarm],
        registries=registries,
    )


@router.post("/clusters/{cluster}/p2p/tasks", response_model=TaskOut)
async def open_task(request: Request, key: AgentCluster, body: TaskIn) -> TaskOut:
    """Open or join the swarm of one blob."""
    task = _coordinator(request).open_task(key, node=body.node, digest=body.digest, size=body.size)
    return TaskOut(
        digest=task.digest,
        size=task.size,
        piece_size=task.piece_size,
        pieces=task.pieces,
        hashes=dict(task.hashes),
    )


@router.post("/clusters/{cluster}/p2p/tasks/{digest}/schedule", response_model=ScheduleOut)
async def schedule(
    request: Request, key: AgentCluster, body: ScheduleIn, digest: str = DigestPath
) -> ScheduleOut:
    """Up to ``want`` pieces to fetch, each from a parent or the registry (a long poll)."""
    answer = await _coordinator(request).schedule(
        key,
        node=body.node,
        digest=digest,
        want=body.want,
        wait_s=body.wait_s,
        reports=_outcomes(body.reports),
    )
    return ScheduleOut(
        assignments=[
            AssignmentOut(piece=g.piece, source=g.source, parent=g.parent, address=g.address)
            for g in answer.grants
        ],
        hashes=dict(answer.hashes),
        ticket=answer.ticket,
        ticket_expires=answer.ticket_expires,
        complete=answer.complete,
    )


@router.post("/clusters/{cluster}/p2p/tasks/{digest}/reports", response_model=EmptyOut)
async def report_pieces(
    request: Request, key: AgentCluster, body: ReportsIn, digest: str = DigestPath
) -> EmptyOut:
    _coordinator(request).report(
        key, node=body.node, digest=digest, reports=_outcomes(body.reports)
    )
    return EmptyOut()


def _outcomes(reports: list[PieceReportIn]) -> list[PieceOutcome]:
    return [
        PieceOutcome(
            piece=r.piece, ok=r.ok, sha256=r.sha256, parent=r.parent, bytes=r.bytes, reason=r.reason
        )
        for r in reports
    ]


@router.post("/clusters/{cluster}/p2p/tasks/{digest}/done", response_model=EmptyOut)
async def blob_done(
    request: Request, key: AgentCluster, body: DoneIn, digest: str = DigestPath
) -> EmptyOut:
    _coordinator(request).done(key, node=body.node, digest=digest, ok=body.ok, evicted=body.evicted)
    return EmptyOut()


@router.post("/clusters/{cluster}/p2p/manifests", response_model=EmptyOut)
async def manifest_served(request: Request, key: AgentCluster, body: ManifestIn) -> EmptyOut:
    _coordinator(request).manifest(
        key,
        node=body.node,
        image=ImageRef(body.registry, body.repository, body.reference),
        digest=body.digest,
        media_type=body.media_type,
        blobs=[(b.digest, b.size) for b in body.blobs],
    )
    return EmptyOut()


# ---------------------------------------------------------------- users
# async, like the agents' calls: the coordinator is touched from the event loop only


@router.get("/clusters/{cluster}/p2p/agent-token", response_model=AgentTokenOut)
async def agent_token(
    request: Request, principal: PrincipalDep, session: SessionDep, cluster: str = ClusterPath
) -> AgentTokenOut:
    """The cluster's agent token, for the agents' Secret (platform administrators)."""
    require_platform_admin(principal, "read a cluster's P2P agent token")
    row = visible_cluster(session, principal, cluster)
    return AgentTokenOut(token=_coordinator(request).agent_token(_key(row.id, row.name)))


@router.get("/clusters/{cluster}/p2p/images", response_model=Page[P2PImageOut])
async def list_images(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[P2PImageOut]:
    """Images the cluster's agents served, by name, with what moved them."""
    row = visible_cluster(session, principal, cluster)
    images = _coordinator(request).images(_key(row.id, row.name))
    page, nxt = page_in_memory(
        images,
        key=lambda i: str(i.image),
        kind=f"p2p-images@cluster:{row.id}",
        limit=limit,
        cursor=cursor,
    )
    return Page[P2PImageOut](
        items=[
            P2PImageOut(
                registry=i.image.registry,
                repository=i.image.repository,
                reference=i.image.reference,
                digest=i.digest,
                nodes_complete=i.nodes_complete,
                bytes_from_peers=i.bytes_from_peers,
                bytes_from_registry=i.bytes_from_registry,
            )
            for i in page
        ],
        next_cursor=nxt,
    )


@router.get("/clusters/{cluster}/p2p/nodes", response_model=Page[P2PNodeOut])
async def list_agents(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[P2PNodeOut]:
    """The cluster's registered P2P agents, by node name."""
    row = visible_cluster(session, principal, cluster)
    nodes = _coordinator(request).nodes(_key(row.id, row.name))
    page, nxt = page_in_memory(
        nodes, key=lambda n: n.name, kind=f"p2p-nodes@cluster:{row.id}", limit=limit, cursor=cursor
    )
    return Page[P2PNodeOut](
        items=[
            P2PNodeOut(
                name=n.name,
                zone=n.zone,
                address=n.address,
                upload_slots=n.upload_slots,
                last_heartbeat=n.last_heartbeat,
                pieces_held=n.pieces_held,
                bytes_up=n.bytes_up,
                bytes_down=n.bytes_down,
            )
            for n in page
        ],
        next_cursor=nxt,
    )


@router.post("/clusters/{cluster}/p2p/prewarms", response_model=PrewarmCreatedOut, status_code=201)
async def create_prewarm(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    body: PrewarmIn,
    cluster: str = ClusterPath,
) -> PrewarmCreatedOut:
    """Ask the named nodes' agents to pull an image ahead of need (their next heartbeat)."""
    ctx = audit(request, action="p2p.prewarm", cluster=cluster, target=f"cluster/{cluster}")
    require_platform_admin(principal, "prewarm images")
    row = visible_cluster(session, principal, cluster)
    image = ImageRef.parse(body.image)
    pid = _coordinator(request).create_prewarm(
        _key(row.id, row.name), image=image, nodes=body.nodes
    )
    ctx.summary = f"prewarm {image} on {len(body.nodes)} node(s): {pid}"
    return PrewarmCreatedOut(id=pid)


@router.get("/clusters/{cluster}/p2p/prewarms/{prewarm}", response_model=PrewarmOut)
async def get_prewarm(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    prewarm: str = PrewarmPath,
) -> PrewarmOut:
    """A prewarm's progress per node: pending (the manifest not pulled yet), pulling, done."""
    row = visible_cluster(session, principal, cluster)
    job, progress = _coordinator(request).prewarm(_key(row.id, row.name), prewarm)
    return PrewarmOut(
        id=job.id,
        image=str(job.image),
        nodes=[
            PrewarmNodeOut(
                node=p.node, state=p.state, blobs_done=p.blobs_done, blobs_total=p.blobs_total
            )
            for p in progress
        ],
    )
