"""Issue 15, ``cpu_ids``: an instance is bound to exactly the cores it asked for, next to its GPUs.

The old scheduler bound every GPU instance to all the cores next to its GPUs (a 4-core instance
showed the whole 16- or 32-core socket) and gave the same cores to its neighbour. Now
(``gaia.scheduler.cpus``): whole-core requests get exactly that many cores, on the NUMA node of
their GPUs, never a core another exclusive instance on the node holds; when that NUMA node is
full they spill to the node's other free cores; fractional requests share the pool of cores no
exclusive instance holds; the controller rebuilds what is held from the running instances.
"""

from __future__ import annotations

import pytest

from gaia.domain.resources import ResourceVector
from gaia.platform import Platform
from gaia.scheduler import ClusterView, NodeView, PlacementRequest, Unschedulable
from gaia.scheduler.placement import GaiaScheduler
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template

# two sockets of 8 cores; GPUs 0-1 on NUMA node 0 (cores 0-7), 2-3 on node 1 (cores 8-15)
LINKS = (
    ("X", "PIX", "SYS", "SYS"),
    ("PIX", "X", "SYS", "SYS"),
    ("SYS", "SYS", "X", "PIX"),
    ("SYS", "SYS", "PIX", "X"),
)
SOCKET = {0: tuple(range(8)), 1: tuple(range(8, 16))}


def node(*, cpu: int = 16_000, exclusive: set[int] | None = None) -> NodeView:
    return NodeView(
        name="n1",
        ready=True,
        schedulable=True,
        free=ResourceVector(cpu=cpu, memory=65_536, gpu=400, gpu_memory=4 * 16_384),
        gpu_free=dict.fromkeys(range(4), 100),
        gpu_links=LINKS,
        gpu_memory_total=dict.fromkeys(range(4), 16_384),
        gpu_memory_free=dict.fromkeys(range(4), 16_384),
        gpu_model="T4",
        gpu_cpus={g: SOCKET[g // 2] for g in range(4)},
        exclusive_cpus=set(exclusive or ()),
    )


def ask(cpu: int, gpu: int = 100) -> PlacementRequest:
    return PlacementRequest(name="job", resources=ResourceVector(cpu=cpu, memory=1024, gpu=gpu))


def place(view: ClusterView, request: PlacementRequest) -> tuple[tuple[int, ...], tuple[int, ...]]:
    placement = GaiaScheduler().place(request, view)
    view.bind(placement, request.resources)
    return placement.gpu_ids, placement.cpu_ids


def test_two_four_core_instances_get_four_disjoint_cores_each_next_to_their_gpus() -> None:
    """The bug: each saw the whole socket, and both saw the same cores."""
    view = ClusterView([node()])
    first_gpus, first = place(view, ask(4000))
    second_gpus, second = place(view, ask(4000))
    assert len(first) == 4 and len(second) == 4
    assert not set(first) & set(second)
    for gpus, cores in ((first_gpus, first), (second_gpus, second)):
        assert set(cores) <= set(SOCKET[gpus[0] // 2]), (gpus, cores)


def test_a_full_numa_node_spills_to_the_other_socket() -> None:
    """GPU 0's socket has one free core left: the instance gets it and spills the rest."""
    view = ClusterView([node(exclusive=set(range(7)))])
    request = ask(3000)
    # GPUs 2-3 would be nearer free cores, so pin the choice by taking GPUs 1-3 first
    view.by_name["n1"].gpu_free.update({1: 0, 2: 0, 3: 0})
    gpus, cores = place(view, request)
    assert gpus == (0,)
    assert cores == (7, 8, 9)


def test_too_few_free_whole_cores_does_not_fit() -> None:
    """Free millicores are not enough: an exclusive request needs that many untaken cores."""
    view = ClusterView([node(cpu=16_000, exclusive=set(range(14)))])
    with pytest.raises(Unschedulable, match="Insufficient free whole CPU cores"):
        GaiaScheduler().place(ask(3000), view)


def test_a_fractional_request_shares_the_pool_of_cores_no_one_holds() -> None:
    view = ClusterView([node(exclusive=set(range(4)))])
    _, cores = place(view, ask(500))
    assert cores == tuple(range(4, 16))
    # and holds none of them: an exclusive instance may still take them
    assert view.by_name["n1"].exclusive_cpus == set(range(4))


def test_released_cores_are_free_again() -> None:
    view = ClusterView([node()])
    request = ask(4000)
    placement = GaiaScheduler().place(request, view)
    view.bind(placement, request.resources)
    assert view.by_name["n1"].exclusive_cpus == set(placement.cpu_ids)
    view.release("n1", request.resources, placement.gpu_ids, placement.cpu_ids)
    assert view.by_name["n1"].exclusive_cpus == set()


def test_the_allocation_survives_a_controller_restart(world: World, platform: Platform) -> None:
    """A new controller (a crash, a deploy) rebuilds the held cores from the running
    instances, so the instances it places next never get a core an older one holds."""
    r = world.client.post(
        "/api/v1/clusters",
        json={"name": "cores-1", "kind": "sim", "sim": {"nodes": 1, "gpus": 8, "cpu": 32}},
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    quota = {"cpu": 32, "memory": 65_536, "gpu": 8, "local_disk": 100, "bandwidth": 1000}
    r = world.client.put(f"{BIZ}/quotas/cores-1", json={"hard": quota}, headers=world.admin)
    assert r.status_code == 200, r.text
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    shape = template("v1", "ml/infer:1", cpu=4, memory=1024, gpu=1)
    body = {"name": "infer", "cluster": "cores-1", "templates": [shape], "replicas": 2}
    h.post(f"{BIZ}/apps", body, status=201)
    h.settle(h.ready("infer", 2))
    h.restart_controller()
    h.post(f"{BIZ}/apps/infer/scale-out", {"count": 4})
    h.settle(h.ready("infer", 6))
    held: set[int] = set()
    for inst in h.instances("infer").values():
        cores = set(inst["cpu_ids"])
        assert len(cores) == 4 and not cores & held, inst
        held |= cores
        # the sim's pcie-2socket board: GPUs 0-3 on cores 0-15, GPUs 4-7 on cores 16-31
        socket = inst["gpu_ids"][0] // 4
        assert cores <= set(range(socket * 16, socket * 16 + 16)), inst


def test_an_instance_bound_to_a_whole_socket_before_the_rule_holds_no_core() -> None:
    """Instances placed by the old rule are bound to all their GPUs' socket (shared with their
    neighbours); rebuilding from them must not mark the socket as held and refuse new work."""
    view = ClusterView([node()])
    legacy = ResourceVector(cpu=4000, gpu=100)
    view.hold_cores("n1", legacy, SOCKET[0])
    view.hold_cores("n1", legacy, SOCKET[0])
    assert view.by_name["n1"].exclusive_cpus == set()
    view.hold_cores("n1", legacy, (8, 9, 10, 11))
    assert view.by_name["n1"].exclusive_cpus == {8, 9, 10, 11}
