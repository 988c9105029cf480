"""GPU allocation on one node's resource access cost tree: linked, fragment-aware, shared.

Topologies are the ``nvidia-smi topo -m`` fixtures of ``tests/fixtures/topology`` (described in
``tests/scheduler/test_links.py``) plus matrices drawn at random, for which allocation must still
be optimal although they look like no real machine.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaia.scheduler.links import (
    GpuTopology,
    link_cost,
    parse_nvidia_smi_topo,
    topology_from_matrix,
)
from gaia.scheduler.tree import GpuAllocation, GpuRequest, TopologyTree, TreeNode
from tests.support.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "topology"
CARD_MIB = 16384


def topology(name: str) -> GpuTopology:
    return parse_nvidia_smi_topo((FIXTURES / f"{name}.txt").read_text())


def node(
    name: str, *, memory: Sequence[int] | None = None, used: Sequence[int] = ()
) -> TopologyTree:
    topo = topology(name)
    tree = TopologyTree.build(topo, memory_mib=memory or [CARD_MIB] * topo.count)
    occupy(tree, *used)
    return tree


def whole(*ids: int) -> GpuAllocation:
    return GpuAllocation(
        gpu_ids=ids, cores_per_gpu=100, memory_per_gpu_mib=0, cost=0, worst_link="X"
    )


def share(gpu: int, cores: int, memory: int) -> GpuAllocation:
    return GpuAllocation(
        gpu_ids=(gpu,), cores_per_gpu=cores, memory_per_gpu_mib=memory, cost=0, worst_link="X"
    )


def occupy(tree: TopologyTree, *ids: int) -> None:
    for gpu in ids:
        tree.take(whole(gpu))


def key(tree: TopologyTree, ids: Sequence[int]) -> tuple[int, int]:
    """How allocation ranks sets: dearest link first, then the summed cost."""
    return link_cost(tree.worst_link(ids)), tree.set_cost(ids)


def render(node: TreeNode) -> str:
    if node.is_leaf:
        return str(node.gpus[0])
    return f"{node.link}[{' '.join(render(child) for child in node.children)}]"


# -- the tree ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("pcie8_cascade", "SYS[PXB[PIX[0 1] PIX[2 3]] PXB[PIX[4 5] PIX[6 7]]]"),
        ("pcie8_two_switches", "SYS[PHB[PIX[0 1] PIX[2 3]] PHB[PIX[4 5] PIX[6 7]]]"),
        ("pcie8_l40s_nics", "SYS[NODE[PIX[0 1] PIX[2 3]] NODE[PIX[4 5] PIX[6 7]]]"),
        ("dgx1_v100", "SYS[NV1[NV2[0 3] NV2[1 2]] NV1[NV2[4 7] NV2[5 6]]]"),
        ("dgx1_p100", "SOC[NV1[0 1 2 3] NV1[4 5 6 7]]"),
        ("dgx_a100", "NV12[0 1 2 3 4 5 6 7]"),
        ("workstation4_dual_socket", "SYS[PHB[0 1] PHB[2 3]]"),
        ("workstation4_nvlink_bridges", "NODE[NV4[0 1] NV4[2 3]]"),
    ],
)
def test_tree_puts_the_dearest_link_at_the_root(name: str, shape: str) -> None:
    assert render(node(name).root) == shape


def test_inner_nodes_count_free_gpus_below_them() -> None:
    tree = node("pcie8_cascade", used=[0, 5])
    root = tree.root
    socket0, socket1 = root.children
    assert (root.cost, socket0.cost, socket0.children[0].cost) == (320, 40, 20)
    assert [tree.free_below(n) for n in (root, socket0, socket1)] == [6, 3, 3]
    assert [tree.free_below(n) for n in socket0.children] == [1, 2]
    assert tree.free_gpus() == [1, 2, 3, 4, 6, 7]


def test_leaves_know_free_cores_and_memory() -> None:
    tree = node("workstation4_dual_socket")
    tree.take(share(2, 30, 4096))
    assert tree.gpu_state(2) == (70, CARD_MIB - 4096)
    assert tree.gpu_state(3) == (100, CARD_MIB)
    assert 2 not in tree.free_gpus()


def test_set_cost_sums_links_over_pairs() -> None:
    tree = node("pcie8_cascade")
    assert tree.set_cost([0]) == 0 and tree.worst_link([0]) == "X"
    assert tree.set_cost([0, 1]) == link_cost("PIX")
    assert tree.set_cost([0, 1, 2]) == link_cost("PIX") + 2 * link_cost("PXB")
    assert tree.worst_link([0, 1, 2]) == "PXB"
    assert tree.worst_link([0, 1, 4]) == "SYS"


@pytest.mark.parametrize(
    ("name", "levels"),
    [
        ("pcie8_cascade", {1: "X", 2: "PIX", 3: "PXB", 4: "PXB", 5: "SYS", 8: "SYS"}),
        ("dgx1_v100", {2: "NV2", 3: "NV1", 4: "NV1", 5: "SYS"}),
        ("dgx1_p100", {2: "NV1", 4: "NV1", 5: "SOC"}),
        ("dgx_h100", {2: "NV18", 8: "NV18"}),
        ("dgx2", {16: "NV6"}),
        ("workstation4_nvlink_bridges", {2: "NV4", 3: "NODE", 4: "NODE"}),
    ],
)
def test_best_possible_level(name: str, levels: dict[int, str]) -> None:
    tree = node(name, used=[0, 1])  # what is used does not matter: it is the empty node's best
    for count, level in levels.items():
        assert tree.best_possible_level(count) == level


def test_best_possible_level_beyond_the_node_is_an_error() -> None:
    with pytest.raises(ValueError, match="has 4 GPUs; cannot place 5"):
        node("workstation4_dual_socket").best_possible_level(5)


def test_cpu_cores_for_gpus_are_those_next_to_them() -> None:
    tree = node("dgx_a100")
    pair = tree.cpu_cores_for([0, 1])
    assert pair == tuple(range(48, 64)) + tuple(range(176, 192))
    assert tree.cpu_cores_for([1, 2]) == tuple(
        sorted(set(pair) | set(range(16, 32)) | set(range(144, 160)))
    )
    assert node("dgx_a100").cpu_cores_for([]) == ()
    assert (
        TopologyTree.build(
            topology_from_matrix([["X", "PIX"], ["PIX", "X"]]), memory_mib=[0, 0]
        ).cpu_cores_for([0, 1])
        == ()
    )


# -- linked ------------------------------------------------------------------------------


def test_linked_pair_on_dgx1_takes_a_double_nvlink() -> None:
    tree = node("dgx1_v100")
    pair = tree.allocate_linked(2)
    assert pair is not None and tree.worst_link(pair) == "NV2"


def test_linked_four_on_dgx1_is_one_fully_connected_quad() -> None:
    tree = node("dgx1_v100", used=[5])
    assert tree.allocate_linked(4) == (0, 1, 2, 3)
    occupy(tree, 0)
    # no quad is whole any more: the cheapest four now cross the sockets
    four = tree.allocate_linked(4)
    assert four is not None and tree.worst_link(four) == "SYS"


def test_linked_pair_on_pcie_takes_gpus_of_one_switch() -> None:
    tree = node("pcie8_cascade", used=[0, 2])
    pair = tree.allocate_linked(2)
    assert pair is not None and tree.worst_link(pair) == "PIX"


def test_linked_four_on_pcie_stays_on_one_socket() -> None:
    tree = node("pcie8_l40s_nics", used=[1])
    assert tree.allocate_linked(4) == (4, 5, 6, 7)
    assert tree.allocate_linked(3) == (0, 2, 3)  # NODE, not across sockets


def test_linked_tie_takes_from_the_broken_group_and_keeps_the_whole_one() -> None:
    # GPU2 is busy: PIX pairs {0,1}, {4,5} and {6,7} cost the same; taking {0,1} keeps the
    # four GPUs of socket 1 whole for a 4-GPU job.
    tree = node("pcie8_cascade", used=[2])
    assert tree.allocate_linked(2) == (0, 1)
    tree = node("pcie8_cascade", used=[6])
    assert tree.allocate_linked(2) == (4, 5)


def test_linked_three_uses_the_remaining_gpus_of_a_broken_socket() -> None:
    tree = node("pcie8_two_switches", used=[0])
    assert tree.allocate_linked(3) == (1, 2, 3)


def test_linked_eight_of_sixteen_stays_on_one_socket() -> None:
    def link(a: int, b: int) -> str:
        if a == b:
            return "X"
        if a // 8 != b // 8:
            return "SYS"
        if a // 4 != b // 4:
            return "PHB"
        return "PIX" if a // 2 == b // 2 else "PXB"

    tree = TopologyTree.build(
        topology_from_matrix([[link(a, b) for b in range(16)] for a in range(16)]),
        memory_mib=[CARD_MIB] * 16,
    )
    occupy(tree, 3)
    assert tree.allocate_linked(8) == tuple(range(8, 16))
    # the four of the broken socket, which keeps socket 1 whole for an 8-GPU job
    assert tree.allocate_linked(4) == (4, 5, 6, 7)
    assert tree.allocate_linked(2) == (0, 1)
    assert tree.allocate_linked(16) is None


def test_linked_on_dgx2_takes_any_eight() -> None:
    tree = node("dgx2", used=[0, 9])
    eight = tree.allocate_linked(8)
    assert eight is not None and len(eight) == 8 and tree.worst_link(eight) == "NV6"
    assert not {0, 9} & set(eight)


def test_linked_returns_none_when_too_few_are_free() -> None:
    tree = node("workstation4_dual_socket", used=[0, 3])
    assert tree.allocate_linked(3) is None
    assert tree.allocate_linked(2) == (1, 2)
    with pytest.raises(ValueError, match="at least one GPU"):
        tree.allocate_linked(0)


def test_shared_cards_are_not_free_for_whole_card_jobs() -> None:
    tree = node("workstation4_dual_socket")
    tree.take(share(0, 10, 1024))
    assert tree.allocate_linked(2) == (2, 3)


def brute_force_best(tree: TopologyTree, count: int) -> tuple[int, int]:
    return min(key(tree, s) for s in itertools.combinations(tree.free_gpus(), count))


@pytest.mark.parametrize(
    "name",
    [
        "dgx1_v100",
        "dgx1_p100",
        "pcie8_cascade",
        "pcie8_two_switches",
        "pcie8_l40s_nics",
        "workstation4_dual_socket",
        "workstation4_nvlink_bridges",
    ],
)
def test_linked_is_optimal_for_every_free_set(name: str) -> None:
    """Exhaustive: every subset of free GPUs, every count that fits."""
    count = topology(name).count
    for busy in range(1 << count):
        tree = node(name, used=[g for g in range(count) if busy >> g & 1])
        free = len(tree.free_gpus())
        for want in range(1, min(free, 4) + 1):
            chosen = tree.allocate_linked(want)
            assert chosen is not None and set(chosen) <= set(tree.free_gpus())
            assert key(tree, chosen) == brute_force_best(tree, want), (busy, want)
        assert tree.allocate_linked(free + 1) is None


LABELS = ["NV1", "NV2", "NV4", "PIX", "PXB", "PHB", "NODE", "SYS"]


@st.composite
def drawn_trees(draw: st.DrawFn) -> TopologyTree:
    """Any symmetric link matrix, most of them no real machine; a few GPUs busy."""
    count = draw(st.integers(2, 7))
    matrix = [["X"] * count for _ in range(count)]
    for a in range(count):
        for b in range(a):
            matrix[a][b] = matrix[b][a] = draw(st.sampled_from(LABELS[: draw(st.integers(2, 8))]))
    tree = TopologyTree.build(topology_from_matrix(matrix), memory_mib=[CARD_MIB] * count)
    occupy(tree, *draw(st.sets(st.integers(0, count - 1), max_size=count - 1)))
    return tree


@given(tree=drawn_trees(), data=st.data())
@settings(max_examples=300, deadline=None)
def test_linked_is_optimal_on_drawn_topologies(tree: TopologyTree, data: st.DataObject) -> None:
    free = tree.free_gpus()
    want = data.draw(st.integers(1, len(free)))
    chosen = tree.allocate_linked(want)
    assert chosen is not None
    assert key(tree, chosen) == brute_force_best(tree, want)
    # and among the cheapest sets, none leaves less fragmentation behind
    sizes = tuple(2**e for e in range(1, tree.count.bit_length()))

    def left_behind(ids: Sequence[int]) -> int:
        after = tree.copy()
        occupy(after, *ids)
        return after.fragmentation(sizes)

    best = key(tree, chosen)
    ties = [s for s in itertools.combinations(free, want) if key(tree, s) == best]
    assert left_behind(chosen) == min(left_behind(s) for s in ties)


# -- fragmentation and single cards ---------------------------------------------------------


def test_fragmentation_counts_gpus_no_block_can_use() -> None:
    tree = node("pcie8_cascade")
    assert tree.fragmentation() == 0
    occupy(tree, 0)
    # GPU1 has lost its PIX partner; GPU1-3 can no longer form a PXB four; 8 > 7 free: not counted
    assert tree.fragmentation() == 1 + 3
    assert tree.fragmentation(sizes=(2,)) == 1
    occupy(tree, 1)
    assert tree.fragmentation() == 0 + 2
    occupy(tree, 4)
    assert tree.fragmentation() == 1 + 5
    assert tree.fragmentation(sizes=(8,)) == 0  # 5 free: too full for 8, not fragmented


def test_fragmentation_on_dgx1_uses_the_nvlink_graph() -> None:
    tree = node("dgx1_v100", used=[0])
    # NV2 pairs form a ring 0-3-2-1-5-6-7-4-0: everyone keeps an NV2 partner; the quad of
    # GPU0 is broken, so GPU1-3 cannot join a fully NVLinked four
    assert tree.fragmentation() == 0 + 3


def test_single_fills_a_broken_pair_first() -> None:
    assert node("pcie8_cascade", used=[0]).allocate_single() == 1
    assert node("workstation4_dual_socket", used=[3]).allocate_single() == 2


def test_single_stays_in_a_broken_socket() -> None:
    tree = node("pcie8_cascade", used=[0, 1])
    assert tree.allocate_single() in (2, 3)


def test_single_on_dgx1_keeps_an_nvlink_pair_whole() -> None:
    # Taking GPU3 or GPU1 leaves the same fragmentation; GPU3 keeps the NV2 pair {1, 2} whole.
    assert node("dgx1_v100", used=[0]).allocate_single() == 3


def test_singles_fill_one_socket_and_keep_the_other_whole() -> None:
    tree = node("pcie8_cascade")
    taken = []
    for _ in range(4):
        gpu = tree.allocate_single()
        assert gpu is not None
        occupy(tree, gpu)
        taken.append(gpu)
    assert sorted(taken) == [0, 1, 2, 3]
    assert tree.fragmentation() == 0
    assert tree.allocate_linked(4) == (4, 5, 6, 7)


def replay(name: str, jobs: list[tuple[int, int]], *, first_fit: bool) -> tuple[int, int, int]:
    """Jobs (GPUs, lifetime in steps) arriving one per step: (placed, on the best link level
    the node offers for their size, fragmentation summed over the steps)."""
    tree = node(name)
    running: list[tuple[int, tuple[int, ...]]] = []
    placed = on_best = stranded = 0
    for now, (size, life) in enumerate(jobs):
        for job in [job for job in running if job[0] == now]:
            tree.release(whole(*job[1]))
            running.remove(job)
        if first_fit:
            lowest = tuple(tree.free_gpus()[:size])
            chosen: tuple[int, ...] | None = lowest if len(lowest) == size else None
        else:
            chosen = tree.allocate_linked(size)
        if chosen is not None:
            placed += 1
            on_best += tree.worst_link(chosen) == tree.best_possible_level(size)
            occupy(tree, *chosen)
            running.append((now + life, chosen))
        stranded += tree.fragmentation()
    return placed, on_best, stranded


@pytest.mark.parametrize("name", ["pcie8_cascade", "dgx1_v100"])
def test_policies_beat_lowest_index_first_fit_on_a_job_stream(name: str) -> None:
    rng = random.Random(1)
    jobs = [(rng.choice([1, 1, 1, 2, 2, 4]), rng.randint(1, 6)) for _ in range(200)]
    placed, on_best, stranded = replay(name, jobs, first_fit=False)
    placed_ff, on_best_ff, stranded_ff = replay(name, jobs, first_fit=True)
    assert placed == placed_ff  # the same jobs fit: only where they go differs
    assert on_best > 0.9 * placed and on_best > on_best_ff + placed // 10
    assert stranded < stranded_ff


def test_single_on_a_full_node_is_none() -> None:
    assert node("workstation4_dual_socket", used=[0, 1, 2, 3]).allocate_single() is None


# -- shared ------------------------------------------------------------------------------


def test_shares_pack_onto_a_card_already_shared() -> None:
    tree = node("pcie8_cascade")
    first = tree.allocate(GpuRequest(cores=50, memory_mib=4096))
    assert first is not None
    tree.take(first)
    second = tree.allocate(GpuRequest(cores=30, memory_mib=4096))
    assert second is not None and second.gpu_ids == first.gpu_ids
    tree.take(second)
    assert tree.gpu_state(first.gpu_ids[0]) == (20, CARD_MIB - 8192)
    assert len(tree.free_gpus()) == 7


def test_share_goes_to_the_tightest_card_that_fits() -> None:
    tree = node("workstation4_dual_socket")
    tree.take(share(0, 50, 8192))  # 50 left
    tree.take(share(1, 70, 8192))  # 30 left
    assert tree.allocate_shared(25, 4096) == 1
    assert tree.allocate_shared(40, 4096) == 0


def test_share_never_overcommits_memory() -> None:
    tree = node("workstation4_dual_socket")
    tree.take(share(0, 20, CARD_MIB - 1024))  # 80 cores but only 1 GiB left
    tree.take(share(1, 90, 1024))  # 10 cores left
    assert tree.allocate_shared(20, 2048) == 2  # neither shared card has room for both
    assert tree.allocate_shared(20, 1024) == 0


def test_share_breaks_a_whole_card_next_to_a_busy_one() -> None:
    tree = node("pcie8_cascade", used=[4])
    assert tree.allocate_shared(25, 1024) == 5


def test_share_breaks_the_smallest_card_that_fits() -> None:
    tree = node("workstation4_dual_socket", memory=[32768, 16384, 32768, 16384])
    assert tree.allocate_shared(50, 8192) == 1
    assert tree.allocate_shared(50, 20000) == 0


@pytest.mark.parametrize(("fraction", "cores"), [(0.5, 50), (0.3, 30), (0.25, 25), (0.2, 20)])
def test_share_without_memory_gets_the_same_fraction_of_the_card(
    fraction: float, cores: int
) -> None:
    tree = node("workstation4_dual_socket")
    allocation = tree.allocate(GpuRequest(cores=cores))
    assert allocation is not None
    assert allocation.cores_per_gpu == cores
    assert allocation.memory_per_gpu_mib == int(CARD_MIB * fraction)
    assert (allocation.cost, allocation.worst_link) == (0, "X")


def test_fractions_fill_a_card_exactly() -> None:
    tree = node("workstation4_dual_socket")
    for cores in (50, 30, 20):
        allocation = tree.allocate(GpuRequest(cores=cores))
        assert allocation is not None and allocation.gpu_ids == (0,)
        tree.take(allocation)
    cores, memory = tree.gpu_state(0)
    assert cores == 0 and memory < 4  # the memory shares round down
    nxt = tree.allocate(GpuRequest(cores=25))
    assert nxt is not None and nxt.gpu_ids == (1,)


def test_share_with_no_room_anywhere_is_none() -> None:
    tree = node("workstation4_dual_socket")
    for gpu in range(4):
        tree.take(share(gpu, 80, 1024))
    assert tree.allocate_shared(30, 1024) is None
    assert tree.allocate_shared(20, 1024) == 0


def test_share_arguments_are_checked() -> None:
    tree = node("workstation4_dual_socket")
    with pytest.raises(ValueError, match=r"a share is 1\.\.99 hundredths"):
        tree.allocate_shared(100, 0)
    with pytest.raises(ValueError, match="cannot be negative"):
        tree.allocate_shared(50, -1)


# -- the dispatcher, take and release -------------------------------------------------------


def test_allocate_whole_cards_reports_the_set() -> None:
    tree = node("dgx1_v100")
    allocation = tree.allocate(GpuRequest(cores=200))
    assert allocation is not None
    assert allocation.cores_per_gpu == 100 and allocation.whole_cards
    assert allocation.memory_per_gpu_mib == CARD_MIB
    assert allocation.worst_link == "NV2"
    assert allocation.cost == tree.set_cost(allocation.gpu_ids) == link_cost("NV2")
    single = tree.allocate(GpuRequest(cores=100))
    assert single is not None and single.gpu_ids == (0,) and single.worst_link == "X"


def test_whole_cards_with_a_memory_need_use_only_cards_that_big() -> None:
    memory = [16384] * 4 + [81920] * 4
    tree = node("pcie8_cascade", memory=memory)
    allocation = tree.allocate(GpuRequest(cores=200, memory_mib=40000))
    assert allocation is not None and allocation.gpu_ids == (4, 5)
    assert allocation.memory_per_gpu_mib == 81920
    assert tree.allocate(GpuRequest(cores=500, memory_mib=40000)) is None
    assert tree.allocate(GpuRequest(cores=500)) is not None


def test_allocate_decides_without_changing_the_node() -> None:
    tree = node("pcie8_cascade", used=[2])
    before = [tree.gpu_state(g) for g in range(8)]
    for request in (GpuRequest(200), GpuRequest(100), GpuRequest(30, 1024), GpuRequest(800)):
        tree.allocate(request)
    assert [tree.gpu_state(g) for g in range(8)] == before
    assert tree.allocate(GpuRequest(800)) is None


def test_copy_is_independent() -> None:
    tree = node("pcie8_cascade")
    what_if = tree.copy()
    occupy(what_if, 0, 1)
    what_if.take(share(2, 50, 1024))
    assert tree.free_gpus() == list(range(8))
    assert what_if.free_gpus() == [3, 4, 5, 6, 7]
    assert tree.fragmentation() == 0 and what_if.fragmentation() > 0


def test_release_gives_back_what_take_took() -> None:
    tree = node("pcie8_cascade")
    allocation = tree.allocate(GpuRequest(cores=400))
    assert allocation is not None
    tree.take(allocation)
    assert tree.free_gpus() == [4, 5, 6, 7]
    tree.release(allocation)
    assert tree.free_gpus() == list(range(8))
    part = share(3, 40, 2048)
    tree.take(part)
    tree.release(part)
    assert tree.gpu_state(3) == (100, CARD_MIB) and 3 in tree.free_gpus()


def test_take_refuses_what_does_not_fit_and_changes_nothing() -> None:
    tree = node("workstation4_dual_socket")
    tree.take(share(1, 60, 1024))
    with pytest.raises(ValueError, match="GPU1 is not free"):
        tree.take(whole(0, 1))
    assert tree.free_gpus() == [0, 2, 3]  # GPU0 was not taken either
    with pytest.raises(ValueError, match="GPU1 has 40 hundredths"):
        tree.take(share(1, 50, 1024))
    with pytest.raises(ValueError, match="GPU1 has 40 hundredths"):
        tree.take(share(1, 10, CARD_MIB))
    with pytest.raises(ValueError, match="GPU7 does not exist"):
        tree.take(whole(7))
    with pytest.raises(ValueError, match="names a GPU twice"):
        tree.take(whole(2, 2))
    with pytest.raises(ValueError, match=r"0\.\.100 hundredths"):
        tree.take(share(2, 101, 0))


def test_release_refuses_what_was_not_taken() -> None:
    tree = node("workstation4_dual_socket")
    with pytest.raises(ValueError, match="GPU0 is not taken as a whole card"):
        tree.release(whole(0))
    tree.take(share(1, 30, 1024))
    with pytest.raises(ValueError, match="that much was not taken"):
        tree.release(share(1, 40, 1024))
    assert tree.gpu_state(1) == (70, CARD_MIB - 1024)


def test_replaying_used_memory_without_cores_is_accepted() -> None:
    tree = node("workstation4_dual_socket")
    tree.take(share(0, 0, 2048))
    assert tree.gpu_state(0) == (100, CARD_MIB - 2048) and 0 not in tree.free_gpus()


def test_unknown_memory_still_allocates_cards_and_shares() -> None:
    tree = TopologyTree.build(topology("workstation4_dual_socket"), memory_mib=[0] * 4)
    pair = tree.allocate(GpuRequest(cores=200))
    assert pair is not None and pair.gpu_ids == (0, 1)
    part = tree.allocate(GpuRequest(cores=50))
    assert part is not None and part.memory_per_gpu_mib == 0


@pytest.mark.parametrize(
    ("cores", "memory", "message"),
    [
        (0, 0, "at least 1 hundredth"),
        (150, 0, "multiples of 100"),
        (100, -1, "cannot be negative"),
    ],
)
def test_gpu_request_is_checked(cores: int, memory: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GpuRequest(cores=cores, memory_mib=memory)


def test_build_checks_memory_per_gpu() -> None:
    with pytest.raises(ValueError, match="memory_mib has 3 entries for 4 GPUs"):
        TopologyTree.build(topology("workstation4_dual_socket"), memory_mib=[1, 2, 3])


def test_nodes_with_one_topology_share_the_work() -> None:
    # the sim provider's matrices name NVLink without a count
    links = [["X" if a == b else "NV" for b in range(4)] for a in range(4)]
    first = TopologyTree.build(topology_from_matrix(links), memory_mib=[CARD_MIB] * 4)
    second = TopologyTree.build(topology_from_matrix(links), memory_mib=[8192] * 4)
    assert first.root is second.root
    assert first.allocate_linked(2) == second.allocate_linked(2) == (0, 1)


REQUESTS = st.one_of(
    st.builds(GpuRequest, cores=st.sampled_from([100, 200, 300, 400]), memory_mib=st.just(0)),
    st.builds(
        GpuRequest,
        cores=st.sampled_from([1, 20, 25, 30, 50, 99]),
        memory_mib=st.integers(0, 20000),
    ),
)


@given(
    name=st.sampled_from(["pcie8_cascade", "dgx1_v100", "workstation4_nvlink_bridges"]),
    steps=st.lists(st.tuples(st.booleans(), REQUESTS, st.integers(0, 99)), max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_random_allocate_take_release_never_overcommits(
    name: str, steps: list[tuple[bool, GpuRequest, int]]
) -> None:
    memory = [CARD_MIB if g % 2 else 2 * CARD_MIB for g in range(topology(name).count)]
    tree = node(name, memory=memory)
    held: list[GpuAllocation] = []
    for release, request, pick in steps:
        if release and held:
            tree.release(held.pop(pick % len(held)))
        else:
            allocation = tree.allocate(request)
            if allocation is not None:
                tree.take(allocation)
                held.append(allocation)
        for gpu, total in enumerate(memory):
            mine = [a for a in held if gpu in a.gpu_ids]
            used_cores = sum(a.cores_per_gpu for a in mine)
            used_memory = sum(total if a.whole_cards else a.memory_per_gpu_mib for a in mine)
            assert used_cores <= 100 and used_memory <= total
            assert tree.gpu_state(gpu) == (100 - used_cores, total - used_memory)
            assert (gpu in tree.free_gpus()) == (not mine or (used_cores, used_memory) == (0, 0))


def test_single_gpu_node() -> None:
    tree = TopologyTree.build(topology_from_matrix([["X"]]), memory_mib=[CARD_MIB])
    assert tree.root.is_leaf and tree.root.gpus == (0,)
    assert tree.allocate_linked(1) == (0,) and tree.allocate_linked(2) is None
    assert tree.best_possible_level(1) == "X" and tree.fragmentation() == 0
    part = tree.allocate(GpuRequest(cores=20))
    assert part is not None and part.gpu_ids == (0,)
    tree.take(part)
    assert tree.allocate_single() is None
