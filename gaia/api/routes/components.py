"""The platform's own components (issue 21, "platform service management"), for platform
administrators only.

``GET /platform/components``: every replica (from its heartbeat row, ``gaia.store.replicas``)
with its loops, who leads each loop group (``leader_leases``), the database (a round trip
timed now) and the metric store. ``GET /platform/components/clusters``: registered clusters'
control planes, a page at a time, each probed now (the API server's ``/readyz`` through the
provider's health check, etcd's readiness from the control-plane figures), bounded by a short
timeout each so one dead cluster cannot stall the page. ``POST .../loops/{loop}/restart``
asks a replica to restart one of its loops: written to its row, carried out by that replica at
its next heartbeat (within five seconds), whichever replica took the request.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Path, Request
from sqlalchemy import select, text

from gaia import __version__
from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    inline_write,
    platform,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit
from gaia.api.schemas.base import Page
from gaia.api.schemas.components import (
    ClusterComponentsOut,
    ComponentsOut,
    ControlPlanePart,
    LeaderOut,
    LoopOut,
    LoopRestartOut,
    ReplicaOut,
    StoreOut,
)
from gaia.domain.errors import InvalidRequest, NotFound
from gaia.store import clusters as cluster_store
from gaia.store import replicas as replica_store
from gaia.store.models import Cluster, LeaderLease, PlatformReplica

router = APIRouter(tags=["platform"], route_class=CommittingRoute)
PROBE_TIMEOUT_S = 3.0
ReplicaPath = Path(max_length=255, pattern=r"^[A-Za-z0-9._:-]+$")
LoopPath = Path(max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")


@router.get("/platform/components", response_model=ComponentsOut)
async def components(
    request: Request, principal: PrincipalDep, session: SessionDep
) -> ComponentsOut:
    require_platform_admin(principal, "see the platform's components")
    plat = platform(request)
    now = plat.clock.now()

    def read() -> tuple[list[ReplicaOut], list[LeaderOut], StoreOut]:
        began = time.perf_counter()
        try:
            session.execute(text("SELECT 1"))
            database = StoreOut(
                kind="sqlite" if plat.db.is_sqlite else "postgresql",
                healthy=True,
                detail=f"schema {plat.schema_revision()}",
                latency_ms=round((time.perf_counter() - began) * 1000, 2),
            )
        except Exception as exc:
            database = StoreOut(kind="database", healthy=False, detail=type(exc).__name__)
        replicas = [
            ReplicaOut(
                name=row.name,
                version=row.version,
                host=row.host,
                pid=row.pid,
                address=row.address,
                schema_revision=row.schema_revision,
                started_at=row.started_at,
                seen_at=row.seen_at,
                state="gone" if replica_store.is_stale(row, now=now) else "up",
                this_replica=row.name == plat.replica_id,
                asked_restarts=list(row.restart_loops or []),
                loops=[LoopOut.model_validate(loop) for loop in row.loops or []],
            )
            for row in replica_store.listed(session)
        ]
        leaders = [
            LeaderOut(
                group=lease.name,
                holder=lease.holder,
                epoch=lease.epoch,
                acquired_at=lease.acquired_at,
                expires_at=lease.expires_at,
                expired=lease.expires_at <= now,
            )
            for lease in session.scalars(select(LeaderLease).order_by(LeaderLease.name))
        ]
        return replicas, leaders, database

    replicas, leaders, database = await asyncio.to_thread(read)
    return ComponentsOut(
        version=__version__,
        this_replica=plat.replica_id,
        replicas=replicas,
        leaders=leaders,
        database=database,
        metric_store=await _metric_store(request),
    )


async def _metric_store(request: Request) -> StoreOut:
    plat = platform(request)
    kind = plat.settings.metrics_store
    if kind == "prometheus":
        began = time.perf_counter()
        try:
            await asyncio.wait_for(
                plat.metric_store.latest("gaia_cluster_up", at=time.time()), PROBE_TIMEOUT_S
            )
        except Exception as exc:
            return StoreOut(kind=kind, healthy=False, detail=f"{type(exc).__name__}: {exc}"[:300])
        return StoreOut(
            kind=kind,
            healthy=True,
            detail=plat.settings.prometheus_url,
            latency_ms=round((time.perf_counter() - began) * 1000, 2),
        )
    return StoreOut(
        kind=kind,
        healthy=True,
        detail="in this replica's process (per replica: use Prometheus with several replicas)",
    )


@router.get("/platform/components/clusters", response_model=Page[ClusterComponentsOut])
async def cluster_components(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[ClusterComponentsOut]:
    """Registered clusters' control planes, probed now (at most 50 a page)."""
    require_platform_admin(principal, "see the clusters' control planes")
    rows, nxt = await asyncio.to_thread(
        cluster_store.page_clusters,
        session,
        business_ids=None,
        limit=min(limit, 50),
        cursor=cursor,
    )
    items = await asyncio.gather(*(_probe(request, row) for row in rows))
    return Page[ClusterComponentsOut](items=list(items), next_cursor=nxt)


async def _probe(request: Request, row: Cluster) -> ClusterComponentsOut:
    provider = platform(request).providers.for_cluster(row)
    parts: list[ControlPlanePart] = []
    try:
        health = await asyncio.wait_for(
            provider.check_health(timeout=PROBE_TIMEOUT_S), PROBE_TIMEOUT_S + 1
        )
        parts.append(
            ControlPlanePart(
                name="apiserver",
                healthy=health.state.value == "Healthy",
                detail=health.message[:300],
            )
        )
    except Exception as exc:
        parts.append(ControlPlanePart(name="apiserver", healthy=False, detail=type(exc).__name__))
    try:
        samples = await asyncio.wait_for(provider.control_plane_metrics(), PROBE_TIMEOUT_S)
    except Exception as exc:
        parts.append(
            ControlPlanePart(name="etcd", healthy=None, detail=f"no figures: {type(exc).__name__}")
        )
    else:
        figures = {s.name: s.value for s in samples if not s.labels}
        up = figures.get("gaia_etcd_up")
        detail = []
        if "gaia_etcd_db_size_bytes" in figures:
            detail.append(f"database {figures['gaia_etcd_db_size_bytes'] / 2**20:.1f} MiB")
        objects = sum(s.value for s in samples if s.name == "gaia_etcd_objects")
        if objects:
            detail.append(f"{objects:,.0f} objects")
        parts.append(
            ControlPlanePart(
                name="etcd",
                healthy=None if up is None else up == 1.0,
                detail=", ".join(detail) or ("ready" if up == 1.0 else ""),
            )
        )
    return ClusterComponentsOut(
        cluster=row.name,
        kind=row.kind,
        health=row.health,
        health_message=row.health_message,
        health_checked_at=row.health_checked_at,
        parts=parts,
    )


@router.post(
    "/platform/replicas/{replica}/loops/{loop}/restart",
    response_model=LoopRestartOut,
    status_code=202,
)
@inline_write
def restart_loop(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    replica: str = ReplicaPath,
    loop: str = LoopPath,
) -> LoopRestartOut:
    audit(request, action="replica.loop.restart", target=f"replica/{replica}/loop/{loop}")
    require_platform_admin(principal, "restart the platform's loops")
    row = session.get(PlatformReplica, replica)
    if row is None:
        raise NotFound(f"replica '{replica}' not found (it has not reported for a day, or never)")
    names = {str(item.get("name")) for item in row.loops or []}
    if loop not in names:
        raise InvalidRequest(
            f"replica '{replica}' runs no loop named '{loop}'; it runs: {', '.join(sorted(names))}"
        )
    if loop == "replica-heartbeat":
        raise InvalidRequest("the heartbeat cannot be restarted on its own: restart the replica")
    if replica_store.is_stale(row, now=platform(request).clock.now()):
        raise InvalidRequest(f"replica '{replica}' has not reported for a while: it is gone")
    replica_store.ask_restart(session, replica=replica, loop=loop)
    return LoopRestartOut(replica=replica, loop=loop, state="asked")
