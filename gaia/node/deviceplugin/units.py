"""The kubelet's view of Gaia's GPUs: every card as 100 core units, one device id each.

The kubelet counts an extended resource in devices: a pod asking for ``gaia.io/gpu-core: 30``
gets 30 device ids, and the node's allocatable is the number of healthy ids. Each card is
advertised as ``WHOLE_CARD`` (100) units named ``<card uuid>::<unit>`` (``GPU-5e6f...::07``), so
the kubelet's own bookkeeping is per card: the units it hands out say which card a container
got, a card cannot be promised past its 100 hundredths, and a whole card (``gaia.io/gpu-core:
100`` per card) takes all of one card's units, so it can never overlap a share. The id carries
the card's UUID, not its index: after a reboot that renumbers the cards, a checkpointed
allocation still names the right card.

What flows in is the node's cards and their health (``gaia.node.gpus``); what flows out is the
``Inventory``: the device list of ``ListAndWatch`` (a sick card's 100 units are ``Unhealthy``, so
the node's allocatable drops by 100 and nothing new lands there), and the mapping from unit ids
back to cards that the allocation side (``assign``) uses. Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gaia.kube.resources import WHOLE_CARD
from gaia.node.gpus import CardHealth, GpuCard

UNIT_SEPARATOR = "::"
HEALTHY = "Healthy"  # the device plugin API's two health words (v1beta1 constants.go)
UNHEALTHY = "Unhealthy"


def unit_id(card: GpuCard, unit: int) -> str:
    """The device id of one hundredth of ``card``."""
    return f"{card.uuid}{UNIT_SEPARATOR}{unit:02d}"


class UnknownUnit(ValueError):
    """A device id that names no card of this node (the kubelet's checkpoint from other cards,
    or a caller's mistake)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One advertised device: a hundredth of a card."""

    id: str
    card: int  # the card's index
    healthy: bool
    numa_node: int | None


@dataclass(frozen=True, slots=True)
class Inventory:
    """The node's cards as the kubelet sees them, with each card's health."""

    cards: tuple[GpuCard, ...] = ()
    unhealthy: Mapping[int, tuple[str, ...]] = field(default_factory=dict)  # index -> reasons

    @classmethod
    def of(cls, cards: Sequence[GpuCard], health: Iterable[CardHealth]) -> Inventory:
        sick = {h.index: h.reasons or ("unhealthy",) for h in health if not h.healthy}
        return cls(cards=tuple(sorted(cards, key=lambda c: c.index)), unhealthy=sick)

    def units(self) -> list[Unit]:
        return [
            Unit(
                id=unit_id(card, unit),
                card=card.index,
                healthy=card.index not in self.unhealthy,
                numa_node=card.numa_node,
            )
            for card in self.cards
            for unit in range(WHOLE_CARD)
        ]

    def card(self, index: int) -> GpuCard | None:
        for card in self.cards:
            if card.index == index:
                return card
        return None

    def card_of(self, device_id: str) -> GpuCard:
        """The card a unit id belongs to; ``UnknownUnit`` if none of this node's."""
        uuid, sep, unit = device_id.rpartition(UNIT_SEPARATOR)
        if sep and unit.isdigit() and int(unit) < WHOLE_CARD:
            for card in self.cards:
                if card.uuid == uuid:
                    return card
        raise UnknownUnit(f"device {device_id!r} is not a unit of any GPU of this node")

    def per_card(self, device_ids: Iterable[str]) -> dict[int, list[str]]:
        """Unit ids grouped by card index, each group in unit order."""
        grouped: dict[int, list[str]] = {}
        for device_id in device_ids:
            grouped.setdefault(self.card_of(device_id).index, []).append(device_id)
        return {index: sorted(ids) for index, ids in sorted(grouped.items())}
