"""GPU link matrices as ``nvidia-smi topo -m`` prints them, for simulated nodes (the ``sim``
provider's and KWOK nodes added through the ``kubernetes`` provider).

A node's cards are described by a square matrix of link names (``gaia.providers.port.GpuLink``):
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

Everything here is pure: matrices are tuples of tuples of strings, shared by every node built
from one spec (a 5,000-node cluster holds one matrix, not 5,000).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

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
_LINKS = frozenset(link.value for link in GpuLink)
_NVLINK_COUNT = re.compile(r"^NV\d+$")
_MOST_NVLINKS = 18

LinkMatrix = tuple[tuple[str, ...], ...]


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


def normalize_matrix(raw: Any, cards: int, *, field: str) -> LinkMatrix:
    """Check an explicit matrix (a list of lists of link names) and return it as tuples.

    ``NV1``..``NV18`` keep their link count (the scheduler prices more links cheaper) and newer
    drivers' ``SYS`` becomes ``SOC``, so a matrix pasted from ``nvidia-smi topo -m`` is accepted
    as is.
    """
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) != cards:
        raise InvalidRequest(f"{field} must be a {cards}x{cards} matrix (one row per GPU)")
    rows: list[tuple[str, ...]] = []
    for a, row in enumerate(raw):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != cards:
            raise InvalidRequest(f"{field}[{a}] must be a row of {cards} link names")
        cells = []
        for b, cell in enumerate(row):
            if not isinstance(cell, str):
                raise InvalidRequest(f"{field}[{a}][{b}] must be a link name such as PIX or NV")
            link = cell.strip().upper()
            if _NVLINK_COUNT.match(link) and 1 <= int(link[2:]) <= _MOST_NVLINKS:
                pass
            elif link == "SYS":
                link = GpuLink.SOC.value
            elif link not in _LINKS:
                raise InvalidRequest(
                    f"{field}[{a}][{b}] is {cell!r}; use one of "
                    f"{', '.join(sorted(_LINKS))} or NV1..NV18"
                )
            if (a == b) != (link == GpuLink.SELF.value):
                raise InvalidRequest(f"{field}: X belongs on the diagonal and only there")
            cells.append(link)
        rows.append(tuple(cells))
    for a in range(cards):
        for b in range(a):
            if rows[a][b] != rows[b][a]:
                raise InvalidRequest(
                    f"{field} must be symmetric: [{a}][{b}] is {rows[a][b]}, "
                    f"[{b}][{a}] is {rows[b][a]}"
                )
    return tuple(rows)
