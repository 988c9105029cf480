"""The ``nvidia-smi topo -m`` parser, link costs, CPU affinity and the link-matrix rules
(``gaia.scheduler.links``; reading a real node is ``tests/node/test_topology.py``).

The fixtures under ``tests/fixtures/topology`` are written in the output format of the drivers
of their time, from the published layouts of the machines:

- ``dgx1_p100``: DGX-1 (P100), old driver: ``SOC``, hybrid cube-mesh of single NVLinks, four
  ``mlx5`` NIC columns, CPU Affinity only.
- ``dgx1_v100``: DGX-1 (V100): the same mesh with double links (NV2) on half the edges; copied
  from a web page, so separated by spaces.
- ``dgx_a100``: DGX A100: NV12 between all eight, EPYC in NPS4 (NUMA 3, 1, 7, 5 per GPU pair),
  eight NICs.
- ``dgx_h100``: DGX H100, current driver: NV18, ``NIC0``.. columns with a NIC Legend, the
  ``GPU NUMA ID`` column and its empty padding cell.
- ``dgx2``: DGX-2: sixteen GPUs, NV6 through NVSwitch.
- ``pcie8_two_switches``: 8-GPU PCIe server, two switches of two GPUs per socket (PIX, PHB, SYS).
- ``pcie8_cascade``: 8-GPU PCIe server, per socket an upper switch over two switches of two GPUs
  (PIX, PXB, SYS).
- ``pcie8_l40s_nics``: 8 x L40S, current driver: PIX pairs, NODE within a socket, SYS across,
  four NICs.
- ``workstation4_dual_socket``: 4 GPUs, two per socket (PHB, SYS), space separated.
- ``workstation4_nvlink_bridges``: 4 GPUs on one socket, two NVLink bridges (NV4), NODE between
  the pairs, NUMA Affinity ``N/A``.
"""

from __future__ import annotations

import pytest

from gaia.scheduler.links import (
    GpuTopology,
    link_cost,
    parse_nvidia_smi_topo,
    topology_from_matrix,
)
from tests.support.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "topology"


def fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def load(name: str) -> GpuTopology:
    return parse_nvidia_smi_topo(fixture_text(name))


def cores(*ranges: tuple[int, int]) -> tuple[int, ...]:
    return tuple(c for low, high in ranges for c in range(low, high + 1))


# name: (GPU count, row 0 of the matrix, GPU0's cores, NUMA node of each GPU)
EXPECTED: dict[str, tuple[int, tuple[str, ...], tuple[int, ...], tuple[int | None, ...]]] = {
    "dgx1_p100": (
        8,
        ("X", "NV1", "NV1", "NV1", "NV1", "SOC", "SOC", "SOC"),
        cores((0, 19), (40, 59)),
        (None,) * 8,
    ),
    "dgx1_v100": (
        8,
        ("X", "NV1", "NV1", "NV2", "NV2", "SYS", "SYS", "SYS"),
        cores((0, 19), (40, 59)),
        (None,) * 8,
    ),
    "dgx_a100": (8, ("X",) + ("NV12",) * 7, cores((48, 63), (176, 191)), (3, 3, 1, 1, 7, 7, 5, 5)),
    "dgx_h100": (8, ("X",) + ("NV18",) * 7, cores((0, 55), (112, 167)), (0,) * 4 + (1,) * 4),
    "dgx2": (16, ("X",) + ("NV6",) * 15, cores((0, 23), (48, 71)), (None,) * 16),
    "pcie8_two_switches": (
        8,
        ("X", "PIX", "PHB", "PHB", "SYS", "SYS", "SYS", "SYS"),
        cores((0, 13), (28, 41)),
        (None,) * 8,
    ),
    "pcie8_cascade": (
        8,
        ("X", "PIX", "PXB", "PXB", "SYS", "SYS", "SYS", "SYS"),
        cores((0, 19), (40, 59)),
        (0,) * 4 + (1,) * 4,
    ),
    "pcie8_l40s_nics": (
        8,
        ("X", "PIX", "NODE", "NODE", "SYS", "SYS", "SYS", "SYS"),
        cores((0, 31), (64, 95)),
        (0,) * 4 + (1,) * 4,
    ),
    "workstation4_dual_socket": (
        4,
        ("X", "PHB", "SYS", "SYS"),
        cores((0, 15), (32, 47)),
        (0, 0, 1, 1),
    ),
    # driver 580 underlines the header with ANSI escapes (ESC[4m ... ESC[0m)
    "driver580_one_gpu_ansi": (1, ("X",), cores((0, 31)), (0,)),
    "workstation4_nvlink_bridges": (4, ("X", "NV4", "NODE", "NODE"), cores((0, 63)), (None,) * 4),
}


def test_every_fixture_file_has_an_expectation() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_its_published_layout(name: str) -> None:
    count, first_row, gpu0_cores, numa = EXPECTED[name]
    topology = load(name)
    assert topology.count == count
    assert topology.links[0] == first_row
    assert topology.cpu_affinity[0] == gpu0_cores
    assert topology.numa_node == numa
    for i in range(count):
        assert topology.links[i][i] == "X"
        for j in range(count):
            assert topology.links[i][j] == topology.links[j][i]


def test_dgx1_v100_hybrid_cube_mesh_has_six_nvlinks_per_gpu() -> None:
    topology = load("dgx1_v100")
    for row in topology.links:
        links = sum(int(label[2:]) for label in row if label.startswith("NV"))
        assert links == 6
    # each GPU reaches exactly one GPU of the other quad over NVLink
    assert topology.links[0][4] == "NV2" and topology.links[3][7] == "NV1"


def test_cpu_affinity_follows_the_socket_of_each_gpu() -> None:
    topology = load("dgx_h100")
    assert topology.cpu_affinity[3] == cores((0, 55), (112, 167))
    assert topology.cpu_affinity[4] == cores((56, 111), (168, 223))
    assert len(topology.cpu_affinity[7]) == 112


def test_nic_columns_and_rows_are_left_out() -> None:
    topology = load("pcie8_l40s_nics")
    assert topology.count == 8
    assert all(len(row) == 8 for row in topology.links)
    assert topology.links[4] == ("SYS", "SYS", "SYS", "SYS", "X", "PIX", "NODE", "NODE")


def test_space_separated_copy_reads_like_the_tab_separated_original() -> None:
    original = fixture_text("dgx_a100")
    spaced = "\n".join("   ".join(line.split("\t")) for line in original.splitlines())
    assert "\t" not in spaced
    assert parse_nvidia_smi_topo(spaced) == parse_nvidia_smi_topo(original)


def test_lines_before_the_table_are_skipped() -> None:
    text = "$ nvidia-smi topo -m\n" + fixture_text("workstation4_dual_socket")
    assert parse_nvidia_smi_topo(text) == load("workstation4_dual_socket")


def test_single_gpu_machine() -> None:
    text = "\tGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\nGPU0\t X \t0-15\t0\t\tN/A\n"
    topology = parse_nvidia_smi_topo(text)
    assert topology.links == (("X",),)
    assert topology.cpu_affinity == (cores((0, 15)),)
    assert topology.numa_node == (0,)


def test_ansi_escapes_of_driver_580_are_stripped() -> None:
    raw = (FIXTURES / "driver580_one_gpu_ansi.txt").read_bytes()
    assert raw.startswith(b"\t\x1b[4mGPU0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n")
    coloured = "\x1b[1;32mGPU0\x1b[0m\t X \t0-7\t0\n"
    topology = parse_nvidia_smi_topo(
        "\t\x1b[4mGPU0\tCPU Affinity\tNUMA Affinity\x1b[0m\n" + coloured
    )
    assert topology.cpu_affinity == (cores((0, 7)),)


def test_missing_affinity_values_mean_unknown() -> None:
    text = "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\nGPU0\t X \tPHB\tN/A\tN/A\nGPU1\tPHB\t X \n"
    topology = parse_nvidia_smi_topo(text)
    assert topology.cpu_affinity == ((), ())
    assert topology.numa_node == (None, None)


def test_cpu_list_with_single_cores_and_ranges() -> None:
    text = "\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tSYS\t0,2,4-6\nGPU1\tSYS\t X \t8\n"
    assert parse_nvidia_smi_topo(text).cpu_affinity == ((0, 2, 4, 5, 6), (8,))


def test_link_costs_are_ordered_cheapest_first() -> None:
    ladder = ["X", "NV18", "NV12", "NV6", "NV4", "NV2", "NV1", "PIX", "PXB", "PHB", "NODE", "SYS"]
    costs = [link_cost(label) for label in ladder]
    assert costs == sorted(costs)
    assert len(set(costs)) == len(costs)
    assert link_cost("X") == 0
    assert link_cost("SOC") == link_cost("SYS")
    assert link_cost("NV") == link_cost("NV1")  # the sim provider drops the count
    assert link_cost("NV24") > 0


@pytest.mark.parametrize("label", ["NV0", "nv2", "PCIE", "", "SYS "])
def test_unknown_link_label_is_named_in_the_error(label: str) -> None:
    with pytest.raises(ValueError, match=f"unknown GPU link label {label!r}"):
        link_cost(label)


def test_topology_from_matrix_has_no_affinity() -> None:
    topology = topology_from_matrix([["X", "PIX"], ["PIX", "X"]])
    assert topology.links == (("X", "PIX"), ("PIX", "X"))
    assert topology.cpu_affinity == ((), ())
    assert topology.numa_node == (None, None)
    assert topology.count == 2


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([["X", "PIX"], ["PIX"]], "not square"),
        ([["X", "PIX", "SYS"], ["PIX", "X", "SYS"]], "not square"),
        ([["X", "PIX"], ["PXB", "X"]], "not symmetric: GPU1-GPU0 is 'PXB'"),
        ([["X", "FAST"], ["FAST", "X"]], "GPU0-GPU1: unknown GPU link label 'FAST'"),
        ([["PIX", "PIX"], ["PIX", "X"]], "GPU0-GPU0 is 'PIX'"),
        ([["X", "X"], ["X", "X"]], "GPU0-GPU1 is 'X'"),
    ],
)
def test_malformed_matrix_is_refused(matrix: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        topology_from_matrix(matrix)


def test_affinity_must_cover_every_gpu() -> None:
    with pytest.raises(ValueError, match="cpu_affinity has 1 entries for 2 GPUs"):
        GpuTopology(links=(("X", "PIX"), ("PIX", "X")), cpu_affinity=((),), numa_node=(0, 0))


HEADER = "\tGPU0\tGPU1\tCPU Affinity\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Legend:\n  X = Self\n", "no header row starting with GPU0"),
        (HEADER + "GPU0\t X \tPIX\t0-3\n", "no row for GPU1"),
        (HEADER + "GPU0\t X \n", "row GPU0 has 1 link entries, the header names 2 devices"),
        (HEADER + "GPU0\t X \tPIX\t0-3\nGPU1\tPXB\t X \t4-7\n", "not symmetric"),
        (HEADER + "GPU0\t X \tWARP\t0-3\nGPU1\tWARP\t X \t4-7\n", "unknown GPU link label"),
        (HEADER + "GPU0\t X \tPIX\t0-3\nGPU1\tPIX\t X \tfour\n", "CPU list 'four'"),
        (HEADER + "GPU0\t X \tPIX\t3-0\nGPU1\tPIX\t X \t4-7\n", "runs backwards"),
        (HEADER + "GPU0\t X \tPIX\t0-3\nGPU0\t X \tPIX\t0-3\n", "appears twice"),
        (HEADER + "GPU0\t X \tPIX\t0-3\nGPU2\tPIX\t X \t4-7\n", "row GPU2 has no column"),
        ("\tGPU0\tGPU2\n", "not GPU0..GPU1"),
        ("  GPU0  GPU1  CPU Affinity  Speed\n", "unrecognised column heading 'Speed'"),
    ],
)
def test_malformed_nvidia_smi_output_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_nvidia_smi_topo(text)
