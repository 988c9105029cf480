"""GPU link matrices as ``nvidia-smi topo -m`` prints them: the one set of rules for them, and
the presets of simulated nodes (the ``sim`` provider's and KWOK nodes added through the
``kubernetes`` provider).

A node's cards are described by a square matrix of link names (``GpuLink``):
``X`` on the diagonal, and between two cards the cheapest path the driver reports. The Gaia
scheduler reads the matrix to keep a multi-card job on well-linked cards, so the presets here
follow the shape of real machines:

- ``pcie-2socket`` (the default; the classic 8 x P40 / V100-PCIe server): the cards are split
  between two CPU sockets; pairs of cards share one PCIe switch (``PIX``); pairs of switches hang
  under one upper switch (``PXB``); further switch groups of the same socket meet at the host
  bridge (``PHB``); cards on different sockets talk across the inter-socket link (``SOC``).
- ``nvlink`` (an SXM board): every pair of cards is joined by NVLink (``NV``).

Each card's NUMA node is its socket. For an explicit matrix the NUMA nodes are the groups of
cards that reach each other without crossing sockets (``SOC``).

**One check.** Every matrix Gaia accepts passes ``check_matrix`` (square, known labels, ``X`` on
the diagonal and only there, symmetric), wherever it comes from: a sim spec or a node to add
(``normalize_matrix``), a Node's ``gaia.io/gpu-topology`` annotation (``gaia.kube.nodes``, through
``read_matrix``), ``nvidia-smi`` output or a bare matrix the scheduler builds a topology from
(``gaia.scheduler.links``); every single label passes ``check_link`` (the scheduler's link
costs, the extender's ``gaia.io/gpu-link``). It lives here, the lowest layer, so that the
providers, the API and the scheduler all reach the same rules and say the same thing when one is
broken.

Everything here is pure: matrices are tuples of tuples of strings, shared by every node built
from one spec (a 5,000-node cluster holds one matrix, not 5,000).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal, get_args

from gaia.domain.errors import InvalidRequest


class GpuLink(StrEnum):
    """Link between two GPUs as ``nvidia-smi topo -m`` prints it (cheapest first)."""

    SELF = "X"
    NVLINK = "NV"  # NVLink of unknown width; ``NV1``..``NV18`` (bonded links) are kept as given
    PIX = "PIX"  # at most one PCIe switch
    PXB = "PXB"  # several PCIe switches, no host bridge
    PHB = "PHB"  # through a PCIe host bridge (same CPU socket)
    NODE = "NODE"  # between host bridges of one NUMA node
    SOC = "SOC"  # across sockets (newer drivers print ``SYS``)


PRESETS = ("pcie-2socket", "nvlink")
MOST_NVLINKS = 18  # NV18 (H100/H200 through NVSwitch): the most bonded links between two cards
_LINKS = frozenset(link.value for link in GpuLink)
_LABELS = _LINKS | {"SYS"}
_NVLINK_COUNT = re.compile(r"NV([1-9][0-9]*)")
_EXPECTED = "X, NV<n>, NV, PIX, PXB, PHB, NODE, SYS or SOC"

LinkMatrix = tuple[tuple[str, ...], ...]

# The links a multi-GPU template may require between every pair of its cards (``gpu_link``):
# every label but ``X``, the cross-socket link under both of its names (old drivers print SOC,
# new ones SYS; the presets and the docs use SOC). The API's field type is this alias, so the
# vocabulary is decided here and nowhere else.
RequiredLink = Literal["NV", "PIX", "PXB", "PHB", "NODE", "SYS", "SOC"]
REQUIRED_LINKS: tuple[str, ...] = get_args(RequiredLink)


def pcie_two_socket(cards: int) -> LinkMatrix:
    """Two sockets, a PCIe switch per pair of cards, an upper switch per pair of switches."""
    per_socket = max(2, -(-cards // 2))

    def link(a: int, b: int) -> str:
        if a == b:
            return GpuLink.SELF.value
        if a // per_socket != b // per_socket:
            return GpuLink.SOC.value
        # switches and switch groups are counted within the socket
        sa, sb = (a % per_socket) // 2, (b % per_socket) // 2
        if sa == sb:
            return GpuLink.PIX.value
        if sa // 2 == sb // 2:
            return GpuLink.PXB.value
        return GpuLink.PHB.value

    return tuple(tuple(link(a, b) for b in range(cards)) for a in range(cards))


def nvlink(cards: int) -> LinkMatrix:
    return tuple(
        tuple(GpuLink.SELF.value if a == b else GpuLink.NVLINK.value for b in range(cards))
        for a in range(cards)
    )


def preset(name: str, cards: int) -> LinkMatrix:
    if name == "nvlink":
        return nvlink(cards)
    return pcie_two_socket(cards)


def numa_nodes(matrix: LinkMatrix) -> tuple[int, ...]:
    """The NUMA node of each card: cards joined by anything but ``SOC`` share a socket."""
    cards = len(matrix)
    parent = list(range(cards))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(cards):
        for b in range(a + 1, cards):
            if matrix[a][b] != GpuLink.SOC.value:
                parent[root(a)] = root(b)
    numbers: dict[int, int] = {}
    return tuple(numbers.setdefault(root(i), len(numbers)) for i in range(cards))


# ------------------------------------------------------------------------------- the one check


class InvalidLinkMatrix(InvalidRequest, ValueError):
    """A link label or matrix that breaks the rules below. It is an ``InvalidRequest`` (the
    caller's to fix: a sim spec, a node to add) and a ``ValueError`` (what the scheduler's
    ``GpuTopology`` has always raised), so each layer catches it by the name it knows."""


def check_link(label: str) -> None:
    """Refuse a label that ``nvidia-smi topo -m`` does not print: ``X``, ``NV<n>`` (n >= 1),
    ``NV``, ``PIX``, ``PXB``, ``PHB``, ``NODE``, ``SYS`` or ``SOC``, exactly as printed (no case
    folding, no spaces: see ``canonical_link`` for text a person typed)."""
    if label in _LABELS or _NVLINK_COUNT.fullmatch(label):
        return
    raise InvalidLinkMatrix(f"unknown GPU link label {label!r}: expected {_EXPECTED}")


def nvlink_count(label: str) -> int | None:
    """The number of bonded NVLinks ``NV<n>`` names (1 for a bare ``NV``), None for PCIe paths."""
    if label == GpuLink.NVLINK.value:
        return 1
    match = _NVLINK_COUNT.fullmatch(label)
    return int(match.group(1)) if match else None


def canonical_link(text: str) -> str:
    """A label as a person or another tool wrote it, in the one spelling Gaia keeps: spaces
    trimmed, upper case, newer drivers' ``SYS`` as ``SOC``. Not checked: see ``check_link``."""
    label = text.strip().upper()
    return GpuLink.SOC.value if label == "SYS" else label


def check_matrix(links: Sequence[Sequence[str]], *, field: str = "") -> None:
    """The rules every link matrix follows, wherever it comes from: square, every label known
    (``check_link``), ``X`` on the diagonal and only there, symmetric.

    ``field`` names a matrix that came in a document (``sim_spec.gpu_topology``), and its cells
    by index (``sim_spec.gpu_topology[0][1]``); without it the matrix is a machine's and its
    cells are named by card (``GPU0-GPU1``), as ``nvidia-smi`` does."""
    name = field or "link matrix"

    def cell(a: int, b: int) -> str:
        return f"{field}[{a}][{b}]" if field else f"GPU{a}-GPU{b}"

    count = len(links)
    for a, row in enumerate(links):
        if len(row) != count:
            row_name = f"{field}[{a}]" if field else f"GPU{a}"
            raise InvalidLinkMatrix(
                f"{name} is not square: row {row_name} has {len(row)} entries for {count} GPUs"
            )
        for b, label in enumerate(row):
            try:
                check_link(label)
            except InvalidLinkMatrix as exc:
                raise InvalidLinkMatrix(f"{cell(a, b)}: {exc}") from None
            if (a == b) != (label == GpuLink.SELF.value):
                where = "the diagonal" if a == b else "only the diagonal"
                raise InvalidLinkMatrix(
                    f"{cell(a, b)} is {label!r}: {GpuLink.SELF.value!r} belongs on {where}"
                )
            if b < a and label != links[b][a]:
                raise InvalidLinkMatrix(
                    f"{name} is not symmetric: {cell(a, b)} is {label!r} "
                    f"but {cell(b, a)} is {links[b][a]!r}"
                )


def read_matrix(raw: Any, *, field: str, cards: int | None = None) -> LinkMatrix:
    """A matrix from a document (a list of lists of labels, as JSON gives it), in canonical
    spelling (``canonical_link``) and checked (``check_matrix``); ``cards``: the size it must
    have."""
    size = len(raw) if isinstance(raw, Sequence) and not isinstance(raw, str) else -1
    if size < 0 or (cards is not None and size != cards):
        shape = f"a {cards}x{cards} matrix" if cards is not None else "a square matrix"
        raise InvalidLinkMatrix(f"{field} must be {shape} (one row per GPU)")
    rows: list[tuple[str, ...]] = []
    for a, row in enumerate(raw):
        if not isinstance(row, Sequence) or isinstance(row, str):
            raise InvalidLinkMatrix(f"{field}[{a}] must be a row of {size} link names")
        cells = []
        for b, cell in enumerate(row):
            if not isinstance(cell, str):
                raise InvalidLinkMatrix(f"{field}[{a}][{b}] must be a link name such as PIX or NV")
            cells.append(canonical_link(cell))
        rows.append(tuple(cells))
    check_matrix(rows, field=field)
    return tuple(rows)


def normalize_matrix(raw: Any, cards: int, *, field: str) -> LinkMatrix:
    """A declared matrix (a sim spec's, a simulated node's) for ``cards`` cards: ``read_matrix``,
    and no pair of cards with more than 18 bonded NVLinks.

    ``NV1``..``NV18`` keep their link count (the scheduler prices more links cheaper) and newer
    drivers' ``SYS`` becomes ``SOC``, so a matrix pasted from ``nvidia-smi topo -m`` is accepted
    as is. The NVLink bound is for declared boards only: NV18 (H100/H200 through NVSwitch) is
    the most any card has, so a typed NV19 is a typo; a matrix read from a machine is taken as
    the driver prints it."""
    matrix = read_matrix(raw, field=field, cards=cards)
    for a, row in enumerate(matrix):
        for b, label in enumerate(row):
            links = nvlink_count(label)
            if links is not None and links > MOST_NVLINKS:
                raise InvalidLinkMatrix(
                    f"{field}[{a}][{b}] is {label!r}; use one of "
                    f"{', '.join(sorted(_LINKS))} or NV1..NV{MOST_NVLINKS}"
                )
    return matrix
