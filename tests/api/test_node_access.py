"""Where a node account's businesses come from (gaia.api.node_access.node_businesses): one
listing of the cluster's instances, by node, for every node; a node that lacks the business
asked for is looked up on a listing begun after the call, once per NODE_CACHE_S per node."""

from __future__ import annotations

import asyncio
from typing import Any

from gaia.api.node_access import node_businesses
from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.providers.port import InstanceSpec
from gaia.store import registry as registry_store
from tests.conftest import World


def test_every_node_is_answered_from_one_listing_of_the_cluster(
    world: World, platform: Platform
) -> None:
    with platform.db.read_session() as session:
        row = registry_store.cluster_by_name(session, "sim-1")
    assert row is not None
    provider = platform.providers.for_cluster(row)
    listings = 0
    listed = provider.list_instances

    async def counted(**kw: Any) -> Any:
        nonlocal listings
        listings += 1
        return await listed(**kw)

    provider.list_instances = counted  # type: ignore[method-assign]

    def place(business: str, node: str) -> InstanceSpec:
        return InstanceSpec(
            namespace=business, app="web", instance_id=len(node), version="v1",
            image=f"registry.local/{business}/web:v1", node=node,
            resources=ResourceVector(cpu=100, memory=64),
        )  # fmt: skip

    async def ask(node: str, *wanted: str) -> frozenset[str]:
        return await node_businesses(platform, "sim-1", node, wanted=wanted)

    async def scenario() -> None:
        nodes = sorted(n.name for n in await provider.list_nodes())
        await provider.create_instance(place("alpha", nodes[0]))
        # every node at once: one listing, in flight for all of them
        answers = await asyncio.gather(*(ask(n) for n in nodes))
        assert answers == [frozenset({"alpha"})] + [frozenset()] * (len(nodes) - 1)
        assert listings == 1
        assert await ask(nodes[0], "alpha") == {"alpha"}  # later: the same listing
        assert listings == 1
        # an instance placed since that listing: its node lacks the business on it, so it is
        # looked up on a new one (its image is pulled at once)
        await provider.create_instance(place("beta", nodes[1]))
        assert await ask(nodes[1], "beta") == {"beta"}
        assert listings == 2
        # a node refused again and again lists the cluster once per NODE_CACHE_S, not per call
        for _ in range(3):
            assert await ask(nodes[2], "beta") == frozenset()
        assert listings == 3

    asyncio.run(scenario())
