"""Issue 15, apps that fit no node: both adapters' nodes tell the scheduler their capacity.

The API refuses a shape whose one instance fits no node of the cluster even when empty
(``gaia.api.routes.apps.fit``); it reads the nodes through the port and asks
``gaia.scheduler.capacity.fits_nowhere`` over ``gaia.controllers.apps.node_view(..., empty=True)``.
This runs that question on each adapter's own nodes, so a provider that reports GPUs, memory or
cores the scheduler cannot read shows here rather than as an app refused (or admitted) wrongly.
"""

from __future__ import annotations

from gaia.controllers.apps import node_view
from gaia.domain.resources import ResourceVector
from gaia.scheduler.capacity import fits_nowhere
from gaia.scheduler.port import PlacementRequest
from tests.contract.conftest import Harness, contract


@contract
async def test_fit_asks_each_nodes_capacity(provider_harness: Harness) -> None:
    nodes = await provider_harness.provider.list_nodes()
    views = [node_view(n, empty=True) for n in nodes]
    most_gpus = max(len(n.gpus) for n in nodes)
    most_memory = max(n.capacity.memory for n in nodes)

    def ask(**amounts: int) -> str | None:
        request = PlacementRequest(name="fit", resources=ResourceVector(**amounts))
        return fits_nowhere(request, views, cluster="c1")

    assert ask(cpu=100, memory=64) is None
    assert ask(gpu=100 * most_gpus) is None
    assert ask(gpu=100 * (most_gpus + 1)) == (
        f"needs {most_gpus + 1} GPUs per instance; the largest node of cluster c1 has "
        f"{most_gpus} GPUs"
    )
    assert ask(memory=most_memory + 1) == (
        f"needs {most_memory + 1} MiB of memory per instance; the largest node of cluster c1 "
        f"has {most_memory} MiB"
    )
