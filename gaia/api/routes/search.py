"""``GET /api/v1/search?q=``: the console's search box (issue 20). Businesses and apps by name,
instances by name or floating/NAT address (``gaia.store.search``), and nodes by name or host
address from the clusters the caller may see (asked of their providers at once, each for at
most ``NODE_TIMEOUT_S``: a cluster that is down is left out, not waited for). Everything is
limited to what the caller may see, as the lists are."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import APIRouter, Query, Request

from gaia.api.deps import CommittingRoute, PrincipalDep, SessionDep, platform
from gaia.api.schemas.overview import SearchHit, SearchOut
from gaia.providers.port import Node
from gaia.store.clusters import visible_clusters
from gaia.store.models import Cluster
from gaia.store.search import search as search_store

router = APIRouter(tags=["overview"], route_class=CommittingRoute)
NODE_TIMEOUT_S = 2.0
MAX_CLUSTERS = 50


@router.get("/search", response_model=SearchOut)
async def search(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    q: Annotated[str, Query(min_length=2, max_length=100, pattern=r"^[\w.:-]+$")],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> SearchOut:
    """What matches ``q`` (two characters at least; letters, digits, ``.``, ``-``, ``:``)."""
    scope = principal.business_scope()
    found = search_store(session, q=q, business_ids=scope, limit=limit)
    hits = [SearchHit(**dataclasses.asdict(h)) for h in found]
    clusters = list(
        session.scalars(visible_clusters(scope).order_by(Cluster.name).limit(MAX_CLUSTERS))
    )
    providers = platform(request).providers

    async def nodes_of(row: Cluster) -> list[Node]:
        try:
            return await asyncio.wait_for(
                providers.for_cluster(row).list_nodes(), timeout=NODE_TIMEOUT_S
            )
        except Exception:
            return []

    wanted = q.lower()
    for row, nodes in zip(clusters, await asyncio.gather(*map(nodes_of, clusters)), strict=True):
        for node in nodes:
            if wanted in node.name.lower() or (node.host_ip and node.host_ip.startswith(q)):
                detail = node.host_ip if wanted not in node.name.lower() else ""
                hits.append(SearchHit(kind="node", name=node.name, cluster=row.name, detail=detail))
                if sum(h.kind == "node" for h in hits) >= limit:
                    break
    return SearchOut(query=q, items=hits)
