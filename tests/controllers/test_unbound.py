"""The rule behind the repair of placements left half-done (``gaia.controllers.apps``): which
instances count as waiting for a node, and the sim provider, which binds in one step, never
giving the repair anything to do. The repair itself runs on a real control plane in
``tests/providers/kubernetes/test_unbound.py``."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

import pytest

from gaia.controllers.apps import unbound_for
from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.providers.port import Instance, InstancePhase
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
UNBOUND = Instance(
    namespace="alpha",
    name="web-0",
    app="web",
    instance_id=0,
    version="v1",
    image="shop/web:1",
    node="",
    phase=InstancePhase.SCHEDULED,
    ready=False,
    resources=ResourceVector(cpu=1000, memory=1024),
    created_at=NOW - dt.timedelta(seconds=90),
)


def test_an_instance_without_a_node_has_waited_since_its_creation() -> None:
    assert unbound_for(UNBOUND, now=NOW) == dt.timedelta(seconds=90)


@pytest.mark.parametrize(
    "change",
    [
        {"node": "n1"},  # bound, the kubelet has not reported yet
        {"phase": InstancePhase.TERMINATING},  # being deleted
        {"phase": InstancePhase.FAILED},  # the restart rules' business
        {"created_at": None},  # no creation time: nothing to measure a grace period from
    ],
)
def test_only_a_live_instance_without_a_node_waits_for_one(change: dict[str, object]) -> None:
    assert unbound_for(dataclasses.replace(UNBOUND, **change), now=NOW) is None  # type: ignore[arg-type]


def test_the_sim_binds_in_one_step_so_nothing_is_ever_left_unbound(
    world: World, platform: Platform
) -> None:
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    body = {"name": "web", "cluster": "sim-1", "templates": [template("v1", "shop/web:1")]}
    h.post(f"{BIZ}/apps", {**body, "replicas": 4}, status=201)
    sim = h.sim("sim-1")
    for _ in range(5):
        h.tick(120)  # far past any grace period
        observed = asyncio.run(sim.list_instances(namespace="alpha"))
        assert observed and all(inst.node for inst in observed)
        assert h.controller.last.actions.get("delete-unbound", 0) == 0
