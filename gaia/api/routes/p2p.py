"""P2P image distribution (issue 17; docs/p2p.md): the agents' calls and the users' views.

Agents (``gaia p2p-agent`` on every node) call ``POST .../p2p/agents``, ``tasks``,
``tasks/{digest}/schedule|reports|done`` and ``manifests`` with a token that proves their node
(docs/p2p.md, "Threat model"; ``gaia.controllers.agent_auth``): their pod's ServiceAccount token,
reviewed by the cluster, the node's own token, or, where the platform allows it, the cluster-wide
token (any node). The body's ``node`` must be the proven one (403), so a node never gets another
node's registry account nor acts for it in a swarm. On these paths a token that proves nothing is
401 and a user's valid API token 403; an agent's token is no user token, so it is 401 everywhere
else. Agent calls are machine traffic, not operations: they are not written to the operation
records unless refused. They never hold a database transaction: the cluster is looked up in a
short read, kept ``GAIA_P2P_CLUSTER_CACHE_SECONDS`` (5 s; ``_agent_cluster``), a ServiceAccount
token is then reviewed by the cluster (the answer kept 30 s), then the coordinator
(``gaia.controllers.swarm``, in memory) answers; ``schedule`` may wait up to ``wait_s``.

``POST tasks`` checks first that the node may read the blob (``gaia.api.node_access``: for the
platform's registry, its node account may pull the repository and the digest is linked there);
the coordinator schedules, and so hands tickets to, only nodes with an open task for the blob.

Users: ``GET .../p2p/agent-token[?node=]`` (platform admins), ``GET .../p2p/nodes`` (anyone who
sees the cluster, as for its nodes), ``GET .../p2p/images`` (platform admins all; others the
images of the platform's registry they may pull themselves: their businesses', ``public/``,
their own), ``POST .../p2p/prewarms`` (platform admins) and ``GET .../p2p/prewarms/{id}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    authenticate,
    platform,
    require_platform_admin,
    visible_cluster,
)
from gaia.api.node_access import check_blob_access
from gaia.api.pagination import Cursor, Limit, page_in_memory
from gaia.api.schemas.base import NAME_PATTERN, Page
from gaia.api.schemas.p2p import (
    DIGEST_PATTERN,
    NODE_PATTERN,
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
from gaia.controllers.agent_auth import AgentCluster
from gaia.controllers.swarm import (
    ClusterKey,
    ImageFigures,
    ImageRef,
    PieceOutcome,
    SwarmCoordinator,
)
from gaia.domain.agent_identity import AgentIdentity
from gaia.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from gaia.domain.registry import RegistryCaller, allowed, parse_repository
from gaia.platform import Platform
from gaia.providers.port import TokenReviewer
from gaia.store import registry as registry_store
from gaia.store.clusters import cluster_named
from gaia.store.identity import Principal
from gaia.store.models import Cluster

router = APIRouter(tags=["p2p"], route_class=CommittingRoute)
ClusterPath = Path(pattern=NAME_PATTERN, max_length=63, description="cluster name")
DigestPath = Path(pattern=DIGEST_PATTERN, max_length=71, description="blob digest")
NodeQuery = Query(
    None, min_length=1, max_length=253, pattern=NODE_PATTERN, description="the node's own token"
)
PrewarmPath = Path(pattern=r"^pw-[0-9a-f]{16}$", max_length=19, description="prewarm id")


def _key(row: Cluster) -> ClusterKey:
    return ClusterKey(id=row.id, name=row.name, salt=row.key_salt)


@dataclass(frozen=True)
class AgentCall:
    """An agent call's cluster and the identity its token proves."""

    key: ClusterKey
    identity: AgentIdentity

    def as_node(self, node: str) -> ClusterKey:
        """The cluster, once the body's ``node`` is the one the token proves (403 otherwise)."""
        self.identity.require(node)
        return self.key


def _agent_cluster(plat: Platform, cluster: str) -> AgentCluster | None:
    """The cluster ``cluster`` as agent calls need it (None: not registered), read from the
    store at most once per ``GAIA_P2P_CLUSTER_CACHE_SECONDS`` (``plat.p2p_clusters``): agents
    call several times a second, and a read session per call was most of a call's CPU. A
    change to the cluster on this replica clears the cache at once; on another replica the
    old answer (the old kubeconfig's reviewer) lives at most those seconds. Misses are not
    kept, so a cluster registered a moment ago is found at once."""
    cache = plat.p2p_clusters
    hit = cache.get(cluster)
    if hit is not None:
        return hit
    generation = cache.generation
    with plat.db.read_session() as session:
        try:
            row = cluster_named(session, cluster)
        except NotFound:
            return None
        reviewer = None
        if row.kind == "kubernetes":
            provider = plat.providers.for_cluster(row)
            reviewer = provider if isinstance(provider, TokenReviewer) else None
        found = AgentCluster(key=_key(row), kind=row.kind, reviewer=reviewer)
    cache.put(cluster, found, generation=generation)
    return found


def _user_token(plat: Platform, token: str) -> str | None:
    with plat.db.read_session() as session:
        try:
            return authenticate(session, token).username
        except Unauthenticated:
            return None


async def agent_call(request: Request, cluster: str = ClusterPath) -> AgentCall:
    """The cluster and the node the caller's token proves (docs/p2p.md, "Threat model"): 401
    for a token that proves nothing here, 403 for a user's API token or a cluster-wide token
    this cluster does not accept; the route then refuses (403) a body naming another node."""
    ctx = audit(request, cluster=cluster)
    ctx.read_only = True  # machine traffic: recorded only when refused
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send 'Authorization: Bearer <the agent's token>'")
    plat = platform(request)
    # a cached cluster is answered on the loop, without the thread pool's hop
    target = plat.p2p_clusters.get(cluster) or await run_in_threadpool(
        _agent_cluster, plat, cluster
    )
    if target is not None:
        identity = await plat.p2p_auth.identify(target, token)
        if identity is not None:
            # the records' actor column holds 63 characters; a node name may have 253
            actor = "p2p-agent" if identity.node is None else f"p2p-agent:{identity.node}"
            ctx.actor = actor[:63]
            return AgentCall(key=target.key, identity=identity)
    username = await run_in_threadpool(_user_token, plat, token)
    if username is not None:
        ctx.actor = username
        raise Forbidden("P2P agent calls take an agent's token, not a user's API token")
    raise Unauthenticated("the P2P agent token is not valid for this cluster")


Agent = Annotated[AgentCall, Depends(agent_call)]


def _coordinator(request: Request) -> SwarmCoordinator:
    return platform(request).p2p


# ---------------------------------------------------------------- agent → coordinator


@router.post("/clusters/{cluster}/p2p/agents", response_model=AgentOut)
async def register_agent(request: Request, agent: Agent, body: AgentIn) -> AgentOut:
    """Register, then heartbeat with the same call every ``heartbeat_s``. The answer carries
    the node's own registry account: only for the node the token proves."""
    key = agent.as_node(body.node)
    answer = _coordinator(request).register(
        key,
        node=body.node,
        zone=body.zone,
        address=body.address,
        upload_slots=body.upload_slots,
        held=body.pieces_held,
        tickets=body.tickets,
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
        tickets=answer.tickets,
        registries=registries,
    )


@router.post("/clusters/{cluster}/p2p/tasks", response_model=TaskOut)
async def open_task(request: Request, agent: Agent, body: TaskIn) -> TaskOut:
    """Open or join the swarm of one blob, once the node may read it (403 otherwise)."""
    key = agent.as_node(body.node)
    await check_blob_access(
        platform(request),
        cluster=key.name,
        node=body.node,
        registry=body.registry,
        repository=body.repository,
        digest=body.digest,
    )
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
    request: Request, agent: Agent, body: ScheduleIn, digest: str = DigestPath
) -> ScheduleOut:
    """Up to ``want`` pieces to fetch, each from a parent or the registry (a long poll); the
    node's task for the blob must be open (404 otherwise)."""
    key = agent.as_node(body.node)
    answer = await _coordinator(request).schedule(
        key,
        node=body.node,
        digest=digest,
        # wire 1 shows one ticket to every parent: one assignment, so one parent, per answer
        want=body.want if body.wire >= 2 else 1,
        wait_s=body.wait_s,
        reports=_outcomes(body.reports),
    )
    return ScheduleOut(
        assignments=[
            AssignmentOut(
                piece=g.piece,
                source=g.source,
                parent=g.parent,
                address=g.address,
                ticket=g.ticket,
                lease=g.lease,
            )
            for g in answer.grants
        ],
        hashes=dict(answer.hashes),
        ticket=answer.ticket,
        ticket_expires=answer.ticket_expires,
        complete=answer.complete,
    )


@router.post("/clusters/{cluster}/p2p/tasks/{digest}/reports", response_model=EmptyOut)
async def report_pieces(
    request: Request, agent: Agent, body: ReportsIn, digest: str = DigestPath
) -> EmptyOut:
    key = agent.as_node(body.node)
    _coordinator(request).report(
        key, node=body.node, digest=digest, reports=_outcomes(body.reports)
    )
    return EmptyOut()


def _outcomes(reports: list[PieceReportIn]) -> list[PieceOutcome]:
    return [
        PieceOutcome(
            piece=r.piece,
            ok=r.ok,
            sha256=r.sha256,
            parent=r.parent,
            bytes=r.bytes,
            reason=r.reason,
            lease=r.lease,
        )
        for r in reports
    ]


@router.post("/clusters/{cluster}/p2p/tasks/{digest}/done", response_model=EmptyOut)
async def blob_done(
    request: Request, agent: Agent, body: DoneIn, digest: str = DigestPath
) -> EmptyOut:
    key = agent.as_node(body.node)
    _coordinator(request).done(key, node=body.node, digest=digest, ok=body.ok, evicted=body.evicted)
    return EmptyOut()


@router.post("/clusters/{cluster}/p2p/manifests", response_model=EmptyOut)
async def manifest_served(request: Request, agent: Agent, body: ManifestIn) -> EmptyOut:
    key = agent.as_node(body.node)
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
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    node: str | None = NodeQuery,
) -> AgentTokenOut:
    """A token for the agents' Secret (platform administrators): with ``node``, the token
    that proves that node alone; without, the cluster-wide token (any node: only where
    ``GAIA_P2P_SHARED_AGENT_TOKEN`` lets this cluster use it, 409 elsewhere)."""
    require_platform_admin(principal, "read a cluster's P2P agent token")
    row = visible_cluster(session, principal, cluster)
    key = _key(row)
    plat = platform(request)
    if node is not None:
        return AgentTokenOut(token=plat.p2p_auth.node_token(key, node), node=node)
    if not plat.p2p_auth.shared_token_allowed(row.kind):
        raise Conflict(
            f"cluster {row.name}'s agents prove their node: run them as the DaemonSet of "
            "deploy/p2p-agent (ServiceAccount tokens), or ask for one node's token with "
            "?node=<node>"
        )
    return AgentTokenOut(token=_coordinator(request).agent_token(key))


@router.get("/clusters/{cluster}/p2p/images", response_model=Page[P2PImageOut])
async def list_images(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = ClusterPath,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[P2PImageOut]:
    """Images the cluster's agents served, by name, with what moved them: all of them for a
    platform administrator; for anyone else, those of the platform's registry they may pull
    themselves (a name and digest of another business's image are its business)."""
    row = visible_cluster(session, principal, cluster)
    images = _coordinator(request).images(_key(row))
    if not principal.is_platform_admin:
        images = _pullable(platform(request), session, principal, images)
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


def _pullable(
    plat: Platform, session: Session, principal: Principal, images: list[ImageFigures]
) -> list[ImageFigures]:
    """The images ``principal`` may pull from the platform's registry (the registry's own
    rules, ``gaia.domain.registry.allowed``). Other registries' images are the cluster
    operators' business: the coordinator cannot tell which business an agent pulled them for."""
    if not plat.registry.enabled:
        return []
    names = registry_store.business_names(session, principal.roles)
    caller = RegistryCaller(
        username=principal.username,
        roles={names[i]: role for i, role in principal.roles.items() if i in names},
    )
    out = []
    for image in images:
        if image.image.registry != plat.registry.address:
            continue
        try:
            repo = parse_repository(image.image.repository)
        except InvalidRequest:
            continue
        if "pull" in allowed(caller, repo):
            out.append(image)
    return out


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
    nodes = _coordinator(request).nodes(_key(row))
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
    pid = _coordinator(request).create_prewarm(_key(row), image=image, nodes=body.nodes)
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
    job, progress = _coordinator(request).prewarm(_key(row), prewarm)
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
