"""Cluster-level placement: filters, topology-aware GPU choice, binpack/spread, gang, explain."""

from __future__ import annotations

import pytest

from gaia.domain.resources import ResourceVector
from gaia.scheduler import ClusterView, NodeView, PlacementRequest, Unschedulable
from gaia.scheduler.placement import GaiaScheduler

# two sockets, a PCIe switch per pair: (0,1) PIX, (2,3) PIX, 0-3 PXB inside a socket... as a
# 4-GPU workstation: 0-1 PIX, 2-3 PIX, across pairs SYS
WORKSTATION = (
    ("X", "PIX", "SYS", "SYS"),
    ("PIX", "X", "SYS", "SYS"),
    ("SYS", "SYS", "X", "PIX"),
    ("SYS", "SYS", "PIX", "X"),
)
NVLINK_PAIRS = (
    ("X", "NV2", "SYS", "SYS"),
    ("NV2", "X", "SYS", "SYS"),
    ("SYS", "SYS", "X", "NV2"),
    ("SYS", "SYS", "NV2", "X"),
)


def gpu_node(
    name: str,
    *,
    links: tuple[tuple[str, ...], ...] = WORKSTATION,
    used: dict[int, int] | None = None,
    model: str = "T4",
    cpu: int = 32_000,
    memory: int = 131_072,
    **kw: object,
) -> NodeView:
    used = used or {}
    count = len(links)
    return NodeView(
        name=name,
        ready=bool(kw.get("ready", True)),
        schedulable=True,
        free=ResourceVector(
            cpu=cpu,
            memory=memory,
            local_disk=500,
            bandwidth=10_000,
            gpu=sum(100 - used.get(i, 0) for i in range(count)),
            gpu_memory=16_384 * count,
        ),
        zone=str(kw.get("zone", "z1")),
        labels=dict(kw.get("labels", {})),  # type: ignore[call-overload]
        gpu_free={i: 100 - used.get(i, 0) for i in range(count)},
        gpu_links=links,
        gpu_memory_total=dict.fromkeys(range(count), 16_384),
        gpu_memory_free={i: 16_384 * (100 - used.get(i, 0)) // 100 for i in range(count)},
        gpu_model=model,
    )


def cpu_node(name: str, *, cpu: int, used_cpu: int = 0, zone: str = "z1") -> NodeView:
    return NodeView(
        name=name,
        ready=True,
        schedulable=True,
        free=ResourceVector(cpu=cpu - used_cpu, memory=65_536, local_disk=100, bandwidth=1000),
        zone=zone,
        used_cpu=used_cpu,
    )


def gpus(cards: float, memory: int = 0, **kw: object) -> PlacementRequest:
    return PlacementRequest(
        name="job",
        resources=ResourceVector(cpu=1000, memory=1024, gpu=int(cards * 100), gpu_memory=memory),
        **kw,  # type: ignore[arg-type]
    )


def test_two_gpus_go_to_a_linked_pair_not_across_sockets() -> None:
    # GPUs 1 and 2 are free on the first node but only across sockets (SYS);
    # the second node offers a PIX pair
    view = ClusterView(
        [
            gpu_node("split", used={0: 100, 3: 100}),
            gpu_node("paired", used={0: 100, 1: 100}),
        ]
    )
    placement = GaiaScheduler().place(gpus(2), view)
    assert placement.node == "paired"
    assert placement.gpu_ids == (2, 3)


def test_nvlink_beats_pcie_for_the_same_request() -> None:
    view = ClusterView([gpu_node("pcie"), gpu_node("nvlink", links=NVLINK_PAIRS)])
    assert GaiaScheduler().place(gpus(2), view).node == "nvlink"


def test_a_single_gpu_keeps_pairs_whole() -> None:
    # one GPU taken on the node; a new single GPU should complete that pair, not break the other
    view = ClusterView([gpu_node("n", used={0: 100})])
    placement = GaiaScheduler().place(gpus(1), view)
    assert placement.gpu_ids == (1,)


def test_fractional_requests_share_a_card_without_overcommitting() -> None:
    view = ClusterView([gpu_node("n", links=(("X",),))])
    scheduler = GaiaScheduler()
    placed = []
    for _ in range(4):
        request = gpus(0.25, memory=4096)
        placement = scheduler.place(request, view)
        view.bind(placement, request.resources)
        placed.append(placement.gpu_ids)
    assert placed == [(0,)] * 4
    with pytest.raises(Unschedulable):
        scheduler.place(gpus(0.2, memory=1024), view)


def test_memory_of_a_shared_card_is_never_overcommitted() -> None:
    view = ClusterView([gpu_node("n", links=(("X",),))])
    scheduler = GaiaScheduler()
    big = gpus(0.3, memory=12_000)
    view.bind(scheduler.place(big, view), big.resources)
    with pytest.raises(Unschedulable, match="gpu_memory"):
        scheduler.place(gpus(0.3, memory=8_000), view)  # cores fit, memory does not


def test_filters_model_zone_selector_and_link_level() -> None:
    view = ClusterView(
        [
            gpu_node("t4", model="T4", zone="z1"),
            gpu_node("v100", model="V100", zone="z2", labels={"rack": "r9"}),
        ]
    )
    scheduler = GaiaScheduler()
    assert scheduler.place(gpus(1, gpu_model="V100"), view).node == "v100"
    assert scheduler.place(gpus(1, zone="z1"), view).node == "t4"
    assert scheduler.place(gpus(1, node_selector={"rack": "r9"}), view).node == "v100"
    with pytest.raises(Unschedulable):
        scheduler.place(gpus(4, max_link="PIX"), view)  # no node has 4 GPUs all on PIX


def test_explain_aggregates_reasons_per_node() -> None:
    nodes = [gpu_node(f"a{i}", used={0: 100, 3: 100}) for i in range(3)]
    nodes += [cpu_node(f"c{i}", cpu=4000) for i in range(40)]
    view = ClusterView(nodes)
    with pytest.raises(Unschedulable) as caught:
        GaiaScheduler().place(gpus(2, max_link="PIX"), view)
    reasons = caught.value.reasons
    assert reasons["2 free GPUs but no PIX set of 2"] == 3
    assert sum(reasons.values()) == 43
    assert "0/43 nodes are available" in str(caught.value)


def test_binpack_fills_the_fullest_node_and_spread_the_emptiest() -> None:
    view = ClusterView(
        [cpu_node("busy", cpu=16_000, used_cpu=12_000), cpu_node("idle", cpu=16_000)]
    )
    request = PlacementRequest("web", ResourceVector(cpu=1000, memory=512), policy="binpack")
    assert GaiaScheduler(sample=8).place(request, view).node == "busy"
    spread = PlacementRequest("web", ResourceVector(cpu=1000, memory=512), policy="spread")
    assert GaiaScheduler(sample=8).place(spread, view).node == "idle"


def test_gang_places_all_or_nothing() -> None:
    view = ClusterView([gpu_node("a"), gpu_node("b")])
    scheduler = GaiaScheduler()
    placements = scheduler.place_gang([gpus(4), gpus(4)], view)
    assert sorted(p.node for p in placements) == ["a", "b"]
    with pytest.raises(Unschedulable):
        scheduler.place_gang([gpus(4), gpus(4), gpus(4)], view)
    # nothing was bound by the failed gang
    assert view.by_name["a"].free_cards == 4 and view.by_name["b"].free_cards == 4


def test_placement_binds_cpu_cores_next_to_the_gpus() -> None:
    from gaia.scheduler.links import parse_nvidia_smi_topo

    text = (
        "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\n"
        "GPU0\t X \tSYS\t0-3\t0\n"
        "GPU1\tSYS\t X \t4-7\t1\n"
    )
    topology = parse_nvidia_smi_topo(text)
    view = ClusterView([gpu_node("n", links=topology.links, used={0: 100})])
    view.topologies[topology.links] = topology
    request = PlacementRequest(name="job", resources=ResourceVector(cpu=2000, gpu=100))
    placement = GaiaScheduler().place(request, view)
    assert placement.gpu_ids == (1,)
    assert placement.cpu_ids == (4, 5)  # two cores asked, on GPU1's NUMA node


NVSWITCH8 = tuple(tuple("X" if a == b else "NV12" for b in range(8)) for a in range(8))


def pcie8() -> tuple[tuple[str, ...], ...]:
    """Two sockets, two PCIe switches each: PIX pairs, PXB quads, SYS across sockets."""

    def link(a: int, b: int) -> str:
        if a == b:
            return "X"
        if a // 4 != b // 4:
            return "SYS"
        return "PIX" if a // 2 == b // 2 else "PXB"

    return tuple(tuple(link(a, b) for b in range(8)) for a in range(8))


def test_small_jobs_leave_the_nvswitch_board_to_the_job_that_needs_it() -> None:
    """Greedy "cheapest link now" would give a 2-GPU job two NV12 cards of the empty board and
    leave the 8-GPU job that follows only a PCIe server (SYS). The capability loss prices that
    in: the pair goes to a PIX pair, the 8-GPU job still gets NV12."""
    view = ClusterView(
        [
            gpu_node("board", links=NVSWITCH8),
            gpu_node("pcie-a", links=pcie8()),
            gpu_node("pcie-b", links=pcie8()),
        ]
    )
    scheduler = GaiaScheduler()
    pair = scheduler.place(gpus(2), view)
    assert pair.node.startswith("pcie")
    view.bind(pair, gpus(2).resources)
    big = scheduler.place(gpus(8), view)
    assert big.node == "board"
    # with the board the only node left that can hold them, small jobs do take it
    view.bind(big, gpus(8).resources)
    full_board = ClusterView([gpu_node("board", links=NVSWITCH8)])
    assert scheduler.place(gpus(2), full_board).node == "board"


def test_capability_loss_is_relative_to_what_the_cluster_offers() -> None:
    """On a cluster of NVSwitch boards only, no board is special: the loss is zero and the pair
    binpacks onto the board already in use."""
    view = ClusterView(
        [
            gpu_node("used", links=NVSWITCH8, used={0: 100, 1: 100}),
            gpu_node("empty", links=NVSWITCH8),
        ]
    )
    assert GaiaScheduler().place(gpus(2), view).node == "used"


def test_shares_fill_a_shared_card_before_breaking_a_whole_one() -> None:
    view = ClusterView(
        [
            gpu_node("whole", links=pcie8()),
            gpu_node("shared", links=pcie8(), used={3: 50}),
        ]
    )
    placement = GaiaScheduler().place(gpus(0.25, memory=2048), view)
    assert (placement.node, placement.gpu_ids) == ("shared", (3,))


def test_binpack_prefers_the_node_it_fills_and_spread_the_one_it_does_not() -> None:
    view = ClusterView(
        [
            gpu_node("half", links=pcie8(), used={0: 100, 1: 100, 2: 100, 3: 100}),
            gpu_node("empty", links=pcie8()),
        ]
    )
    # a PIX pair on either node; binpack fills the half-used one
    assert GaiaScheduler().place(gpus(2), view).node == "half"
    assert GaiaScheduler().place(gpus(2, policy="spread"), view).node == "empty"


def test_score_orders_nodes_as_place_does() -> None:
    scheduler = GaiaScheduler()
    board = gpu_node("board", links=NVSWITCH8)
    pcie = gpu_node("pcie", links=pcie8())
    split = gpu_node("split", used={0: 100, 3: 100})  # two free cards, across sockets
    request = gpus(2)
    view = ClusterView([board, pcie, split])
    scores = {n.name: scheduler.score(request, n, view) for n in (board, pcie, split)}
    assert scores["pcie"] > scores["board"] > 0
    assert scores["pcie"] > scores["split"] > 0
    assert scheduler.place(request, view).node == "pcie"
    assert scheduler.score(gpus(4), split) == 0.0  # does not fit
