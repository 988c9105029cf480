"""GPU topology of one node: the link matrix between its GPUs and the CPU cores next to each.

What flows in is the text of ``nvidia-smi topo -m`` (so tests and the scheduler need no GPU) or a
bare link matrix (what a node reports through the provider); what flows out is a ``GpuTopology``:
a square, symmetric matrix of link labels plus, per GPU, the CPU cores and NUMA node nearest to
it. ``gaia.scheduler.tree`` turns a topology into the resource access cost tree the allocation
policies work on; nothing here knows about free or used GPUs.

Link labels, cheapest first, and the numeric cost ``link_cost`` gives them:

======== ====== =====================================================================
label    cost   path between the two GPUs
======== ====== =====================================================================
X        0      the GPU itself
NV<n>    20-n   ``n`` bonded NVLinks (NV18 costs 2, NV12 8, NV1 19); n > 18 costs 1
NV       19     NVLink whose count the source dropped (the sim provider): priced as one link
PIX      20     at most one PCIe switch
PXB      40     several PCIe switches, no host bridge
PHB      80     a PCIe host bridge (the CPU)
NODE     160    between host bridges of one NUMA node
SYS/SOC  320    across the inter-socket link (QPI/UPI/Infinity Fabric); SOC is its old name
======== ====== =====================================================================

Every NVLink count is cheaper than any PCIe path, and more links are cheaper. Each step of the
PCIe hierarchy doubles the cost: hops add latency and each shared hop halves what a pair can
count on. The numbers are ranks with room between them, not measurements; what matters to the
policies is their order and that a few cheap links do not outweigh one dear one.

The parser reads real output of old and new drivers alike: tab- or space-separated, NIC columns
(``mlx5_0`` in old drivers, ``NIC0`` plus a "NIC Legend" in new ones) and NIC rows are skipped,
``CPU Affinity`` becomes core ids, ``NUMA Affinity`` (absent in old drivers, ``N/A`` on single
socket machines) the NUMA node, ``GPU NUMA ID`` (new drivers) is read past, and the legend ends
the table. Malformed input raises ``ValueError`` saying what is wrong and where; the rules a
matrix follows (and their messages) are the domain's one check,
``gaia.domain.gpu_links.check_matrix``, which the providers and the scheduler extender use too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gaia.domain.gpu_links import MOST_NVLINKS, GpuLink, check_link, check_matrix, nvlink_count

log = logging.getLogger(__name__)

SELF = GpuLink.SELF.value
_PCIE_COSTS = {"X": 0, "PIX": 20, "PXB": 40, "PHB": 80, "NODE": 160, "SYS": 320, "SOC": 320}
_GPU_NAME = re.compile(r"GPU([0-9]+)")
_CPU_LIST = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")
_NOT_AVAILABLE = ("", "N/A")

# Columns after the device columns, as drivers print them (multi-word, hence spelt out so that
# space-separated copies can be put back together).
CPU_AFFINITY = "CPU Affinity"
NUMA_AFFINITY = "NUMA Affinity"
GPU_NUMA_ID = "GPU NUMA ID"
_TRAILING_COLUMNS = (CPU_AFFINITY, NUMA_AFFINITY, GPU_NUMA_ID)


def link_cost(label: str) -> int:
    """The communication cost of one link label (see the module table); unknown labels raise
    (``gaia.domain.gpu_links.check_link``: the one list of labels)."""
    cost = _PCIE_COSTS.get(label)
    if cost is not None:
        return cost
    check_link(label)
    return max(1, MOST_NVLINKS + 2 - (nvlink_count(label) or 1))


@dataclass(frozen=True, slots=True)
class GpuTopology:
    """The links between a node's GPUs and the CPU side of each GPU; validated on creation.

    ``links[i][j]`` is the label of the path between GPU i and GPU j ("X" on the diagonal);
    ``cpu_affinity[i]`` the ids of the CPU cores nearest GPU i (empty when unknown);
    ``numa_node[i]`` its NUMA node (None when unknown).
    """

    links: tuple[tuple[str, ...], ...]
    cpu_affinity: tuple[tuple[int, ...], ...]
    numa_node: tuple[int | None, ...]

    def __post_init__(self) -> None:
        check_matrix(self.links)
        count = len(self.links)
        if len(self.cpu_affinity) != count:
            raise ValueError(f"cpu_affinity has {len(self.cpu_affinity)} entries for {count} GPUs")
        if len(self.numa_node) != count:
            raise ValueError(f"numa_node has {len(self.numa_node)} entries for {count} GPUs")

    @property
    def count(self) -> int:
        return len(self.links)


def topology_from_matrix(links: Sequence[Sequence[str]]) -> GpuTopology:
    """A topology from a bare link matrix (no CPU affinity known); validates it."""
    matrix = tuple(tuple(label.strip() for label in row) for row in links)
    count = len(matrix)
    return GpuTopology(links=matrix, cpu_affinity=((),) * count, numa_node=(None,) * count)


def parse_nvidia_smi_topo(text: str) -> GpuTopology:
    """Parse the output of ``nvidia-smi topo -m`` (any driver since the SOC days)."""
    lines = _ANSI_ESCAPE.sub("", text).splitlines()
    header_at = _find_header(lines)
    tabbed = "\t" in lines[header_at]
    devices, trailing = _header_columns(lines[header_at], tabbed=tabbed)
    gpu_columns = _gpu_columns(devices)
    count = len(gpu_columns)

    rows: dict[int, tuple[tuple[str, ...], tuple[int, ...], int | None]] = {}
    for number, line in enumerate(lines[header_at + 1 :], start=header_at + 2):
        if not line.strip():
            continue
        if line.strip().startswith(("Legend", "NIC Legend")):
            break
        cells = _cells(line, tabbed=tabbed)
        match = _GPU_NAME.fullmatch(cells[0])
        if match is None:
            continue  # a NIC row: NICs are not scheduled here
        index = int(match.group(1))
        if index >= count:
            raise ValueError(f"line {number}: row {cells[0]} has no column in the header")
        if index in rows:
            raise ValueError(f"line {number}: row {cells[0]} appears twice")
        if len(cells) < 1 + len(devices):
            raise ValueError(
                f"line {number}: row {cells[0]} has {len(cells) - 1} link entries, "
                f"the header names {len(devices)} devices"
            )
        links = tuple(cells[1 + position] for position in gpu_columns)
        values = _trailing_values(cells[1 + len(devices) :], trailing, tabbed=tabbed)
        where = f"line {number}, {cells[0]}"
        rows[index] = (
            links,
            _cpu_list(values.get(CPU_AFFINITY, ""), where),
            _numa_node(values.get(NUMA_AFFINITY, ""), where),
        )

    missing = [f"GPU{i}" for i in range(count) if i not in rows]
    if missing:
        raise ValueError(f"no row for {', '.join(missing)} in the nvidia-smi topology")
    ordered = [rows[i] for i in range(count)]
    return GpuTopology(
        links=tuple(row[0] for row in ordered),
        cpu_affinity=tuple(row[1] for row in ordered),
        numa_node=tuple(row[2] for row in ordered),
    )


# ANSI CSI sequences (SGR colours/underline and friends, ``ESC [ params final``) and the bare
# two-byte escapes: driver 580 underlines the header, a coloured terminal may colour anything.
# They are presentation, never data, so they go before any parsing.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def _find_header(lines: list[str]) -> int:
    # The header starts with GPU0 as a column name; the GPU0 row has "X" right after its name.
    for at, line in enumerate(lines):
        tokens = line.split()
        if tokens and tokens[0] == "GPU0" and (len(tokens) == 1 or tokens[1] != SELF):
            return at
    raise ValueError("no header row starting with GPU0: is this `nvidia-smi topo -m` output?")


def _header_columns(line: str, *, tabbed: bool) -> tuple[list[str], list[str]]:
    """The device column names and the trailing column names of the header row."""
    if tabbed:
        cells = [cell.strip() for cell in line.split("\t") if cell.strip()]
        for at, cell in enumerate(cells):
            if cell in _TRAILING_COLUMNS:
                return cells[:at], cells[at:]
        return cells, []
    tokens = line.split()
    devices: list[str] = []
    trailing: list[str] = []
    at = 0
    while at < len(tokens):
        phrase = next(
            (p for p in _TRAILING_COLUMNS if tokens[at : at + len(p.split())] == p.split()), None
        )
        if phrase is not None:
            trailing.append(phrase)
            at += len(phrase.split())
        elif trailing:
            raise ValueError(
                f"unrecognised column heading {tokens[at]!r} after {trailing[-1]!r}; "
                "pass the tab-separated output of nvidia-smi"
            )
        else:
            devices.append(tokens[at])
            at += 1
    return devices, trailing


def _gpu_columns(devices: list[str]) -> list[int]:
    """Positions of GPU0..GPUn-1 among the device columns (NIC columns are skipped)."""
    positions: dict[int, int] = {}
    for position, name in enumerate(devices):
        match = _GPU_NAME.fullmatch(name)
        if match is not None:
            positions[int(match.group(1))] = position
    count = len(positions)
    if sorted(positions) != list(range(count)):
        raise ValueError(f"GPU columns are not GPU0..GPU{count - 1}: {sorted(positions)}")
    return [positions[i] for i in range(count)]


def _cells(line: str, *, tabbed: bool) -> list[str]:
    if tabbed:
        cells = [cell.strip() for cell in line.split("\t")]
        while cells and not cells[-1]:
            cells.pop()
        return cells
    return line.split()


def _trailing_values(cells: list[str], columns: list[str], *, tabbed: bool) -> dict[str, str]:
    # New drivers print an empty cell between "NUMA Affinity" and "GPU NUMA ID"; with more cells
    # than columns the empty ones are that padding. Fewer cells: the last columns are empty.
    if tabbed and len(cells) > len(columns):
        cells = [cell for cell in cells if cell]
    if len(cells) > len(columns):
        raise ValueError(f"more values than columns after the links: {cells!r} for {columns!r}")
    return dict(zip(columns, cells, strict=False))


def parse_cpu_list(text: str, *, where: str = "CPU list") -> tuple[int, ...]:
    """``0-19,40-59`` (as ``nvidia-smi`` and Linux print CPU lists) → the core ids; empty or
    ``N/A`` → (); anything else raises ``ValueError`` naming ``where``."""
    return _cpu_list(text.strip(), where)


def _cpu_list(text: str, where: str) -> tuple[int, ...]:
    """``0-19,40-59`` → the core ids; empty or ``N/A`` → ()."""
    if text in _NOT_AVAILABLE:
        return ()
    if _CPU_LIST.fullmatch(text) is None:
        raise ValueError(f"{where}: CPU list {text!r} is not like 0-19,40-59")
    cores: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"{where}: CPU range {part!r} runs backwards")
        cores.update(range(first, last + 1))
    return tuple(sorted(cores))


def _numa_node(text: str, where: str) -> int | None:
    # A GPU attached to several NUMA nodes (rare) is bound to the lowest: any one of them is as
    # near as the others, and a fixed choice keeps placements reproducible.
    nodes = _cpu_list(text, where)
    return nodes[0] if nodes else None


__all__ = [
    "CPU_AFFINITY",
    "GPU_NUMA_ID",
    "NUMA_AFFINITY",
    "GpuTopology",
    "link_cost",
    "parse_cpu_list",
    "parse_nvidia_smi_topo",
    "topology_from_matrix",
]
