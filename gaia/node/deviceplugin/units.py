"""The kubelet's view of Gaia's GPUs: two extended resources over the same cards.

The kubelet counts an extended resource in devices: a pod asking for ``gaia.io/gpu-core: 30``
gets 30 device ids, and the node's allocatable is the number of healthy ids. So:

- ``gaia.io/gpu-core`` (``CORE``): each card is ``WHOLE_CARD`` (100) units named
  ``<card uuid>::<unit>`` (``GPU-5e6f...::07``). The kubelet's own bookkeeping is then per card:
  the units it hands out say which card a container got, and a card cannot be promised past its
  100 hundredths; ``gaia.io/gpu-core: 200`` is two whole cards, all units of each.
- ``nvidia.com/gpu`` (``CARD``): each card is one device, its UUID, as NVIDIA's own plugin names
  it, so pods written for that plugin (and the platform's whole-card instances) run unchanged.
  Gaia's plugin replaces NVIDIA's on the node: running both would advertise every card twice.

The two resources count the same cards, and the kubelet does not know it; the allocation side
keeps them apart (``assign``): a card with units granted is never granted whole, and a card
granted whole gives no units. Ids carry the card's UUID, not its index: after a reboot that
renumbers the cards, a checkpointed allocation still names the right card.

What flows in is the node's cards and their health (``gaia.node.gpus``); what flows out is the
``Inventory``: the device list of ``ListAndWatch`` (a sick card's 100 units are ``Unhealthy``, so
the node's allocatable drops by 100 and nothing new lands there), and the mapping from unit ids
back to cards that the allocation side (``assign``) uses. Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gaia.kube.resources import GAIA_GPU_CORE, NVIDIA_GPU, WHOLE_CARD
from gaia.node.gpus import CardHealth, GpuCard

UNIT_SEPARATOR = "::"
CORE = GAIA_GPU_CORE  # the two resources, named as the kubelet knows them
CARD = NVIDIA_GPU
RESOURCES = (CORE, CARD)
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

    def units(self, resource: str = CORE) -> list[Unit]:
        """The devices of ``resource`` (``CORE`` or ``CARD``)."""
        per_card = WHOLE_CARD if resource == CORE else 1
        return [
            Unit(
                id=unit_id(card, unit) if resource == CORE else card.uuid,
                card=card.index,
                healthy=card.index not in self.unhealthy,
                numa_node=card.numa_node,
            )
            for card in self.cards
            for unit in range(per_card)
        ]

    def card(self, index: int) -> GpuCard | None:
        for card in self.cards:
            if card.index == index:
                return card
        return None

    def card_of(self, device_id: str) -> GpuCard:
        """The card a unit id (or a whole card's UUID) belongs to; ``UnknownUnit`` if none of
        this node's."""
        uuid, sep, unit = device_id.rpartition(UNIT_SEPARATOR)
        if not sep:
            uuid, unit = device_id, "0"
        if unit.isdigit() and int(unit) < WHOLE_CARD:
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
