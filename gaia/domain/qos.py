"""Bandwidth QoS on a node's uplink (issue 19): the shaping plan and the talk's algorithm.

In: the node's link capacity and the instances on it, each with a **guarantee** (its bandwidth
quota, bytes/s), a **priority class** (its business's) and its pod address. Out, two things:

1. ``plan_qos`` -> ``QosPlan``: the HTB class tree ``gaia.node.qos`` programs on the uplink. One
   root class at the link; per instance a leaf with ``rate`` = its guarantee (held under
   contention), ``ceil`` = the link (it may borrow whatever others leave idle), ``prio`` = its
   class (a lower number is offered spare capacity first) and a ``quantum`` proportional to its
   guarantee, so that within one priority class spare capacity is split in proportion to the
   guarantees (HTB's deficit round robin hands out excess in quantum-sized turns; the smallest
   is 64 KiB, a GSO super-packet, see ``GSO_MAX``). Unclassified
   traffic goes to a default leaf with whatever the guarantees leave (at least 1 % of the link)
   and the lowest priority. A sum of guarantees above the link is an error (``QosPlanError``),
   not silently scaled: a guarantee that cannot be held is a placement bug to surface.
2. ``simulate`` -> ``SimResult``: the talk's algorithm as a pure, discrete-time model (per
   instance a token bucket filling at its guarantee; a shared pool of the link's capacity; what
   an instance does not use is lent; the rest is split by priority class, then in proportion to
   guarantees by water-filling). The bench runs it on the traces it sends through real HTB and
   prints both, so the difference between the ideal and what the kernel achieves is measured.

Pure: no I/O. Rates are bytes per second throughout; ``gaia.node.qos`` converts to tc's bits.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The smallest guarantee's quantum: the largest packet HTB is handed, a pod's GSO super-packet
# (the NIC, or the kernel after the qdisc, cuts it into frames). HTB's round robin dequeues a
# packet *before* it looks at the class's deficit, so below its packets' size a quantum means
# "one packet per turn" and the split is per packet, not per byte: with one frame (1514) as the
# quantum, 4 senders on the bench split the spare 20 % off the guarantees' proportions (64 KiB:
# 1 %).
GSO_MAX = 65_536
MAX_QUANTUM = 1 << 22  # bounds one class's turn (3.4 ms of 10 Gbit/s); HTB takes any u32
DEFAULT_MINOR = 0xFFF  # the leaf for traffic no filter matches
PRIORITY_CLASSES = 8  # HTB prio 0..7


class QosPlanError(ValueError):
    """The instances cannot be shaped as asked; the message says what to change."""


@dataclass(frozen=True)
class QosInstance:
    """One instance on the node: what it is guaranteed and where its packets come from."""

    name: str
    address: str  # the pod's IPv4 address: its packets are classified by source address
    guarantee: int  # bytes/s, the instance's bandwidth quota
    priority: int = 4  # 0 (first offered spare capacity) .. 7 (last)


@dataclass(frozen=True)
class QosClass:
    """One HTB leaf: ``minor`` is both its class id (1:minor) and its u32 filter's item."""

    minor: int
    name: str
    address: str | None  # None for the default leaf
    rate: int  # bytes/s
    ceil: int  # bytes/s
    priority: int
    quantum: int  # bytes


@dataclass(frozen=True)
class QosPlan:
    link: int  # bytes/s
    classes: tuple[QosClass, ...]

    def by_name(self) -> dict[str, QosClass]:
        return {c.name: c for c in self.classes}


def _minor_for(name: str, taken: set[int]) -> int:
    """A class id that stays the same while the instance lives (a hash of its name, probed on
    a collision), so adding or removing a neighbour does not reclassify it. u32 item ids are 12
    bits, so minors live in 0x010..0xffe."""
    minor = 0x10 + zlib.crc32(name.encode()) % (DEFAULT_MINOR - 0x10)
    while minor in taken:
        minor = 0x10 + (minor - 0x10 + 1) % (DEFAULT_MINOR - 0x10)
    return minor


def plan_qos(*, link: int, instances: Sequence[QosInstance]) -> QosPlan:
    if link <= 0:
        raise QosPlanError(f"the link capacity must be positive, got {link} bytes/s")
    seen_names: set[str] = set()
    seen_addresses: set[str] = set()
    for inst in instances:
        if inst.guarantee <= 0:
            raise QosPlanError(f"{inst.name}: a guarantee must be positive, got {inst.guarantee}")
        if not 0 <= inst.priority < PRIORITY_CLASSES:
            raise QosPlanError(f"{inst.name}: priority must be 0..7, got {inst.priority}")
        try:
            ipaddress.IPv4Address(inst.address)
        except ValueError:
            raise QosPlanError(f"{inst.name}: {inst.address!r} is not an IPv4 address") from None
        if inst.name in seen_names:
            raise QosPlanError(f"two instances are named {inst.name!r}")
        if inst.address in seen_addresses:
            raise QosPlanError(f"{inst.name}: address {inst.address} is already another's")
        seen_names.add(inst.name)
        seen_addresses.add(inst.address)
    total = sum(i.guarantee for i in instances)
    if total > link:
        raise QosPlanError(
            f"the guarantees add up to {total} bytes/s, more than the link's {link}: lower a "
            "quota or move an instance to another node"
        )
    smallest = min((i.guarantee for i in instances), default=1)
    taken: set[int] = set()
    classes: list[QosClass] = []
    for inst in sorted(instances, key=lambda i: i.name):
        minor = _minor_for(inst.name, taken)
        taken.add(minor)
        quantum = min(MAX_QUANTUM, round(GSO_MAX * inst.guarantee / smallest))
        classes.append(
            QosClass(minor, inst.name, inst.address, inst.guarantee, link, inst.priority, quantum)
        )
    rest = max(link - total, link // 100)
    classes.append(
        QosClass(DEFAULT_MINOR, "default", None, rest, link, PRIORITY_CLASSES - 1, GSO_MAX)
    )
    return QosPlan(link, tuple(classes))


# --- the simulator ------------------------------------------------------------------------


@dataclass(frozen=True)
class SimResult:
    step_s: float
    rates: dict[str, list[float]]  # bytes/s sent per step, per instance


def _water_fill(
    budget: float, wants: Mapping[str, float], weights: Mapping[str, float]
) -> dict[str, float]:
    """Split ``budget`` among ``wants`` in proportion to ``weights``, never above a want."""
    given = {k: 0.0 for k in wants}
    open_ = {k for k, w in wants.items() if w > 0}
    while budget > 1e-9 and open_:
        share = budget / sum(weights[k] for k in open_)
        full = {k for k in open_ if wants[k] - given[k] <= share * weights[k]}
        if not full:
            for k in open_:
                given[k] += share * weights[k]
            return given
        for k in full:
            budget -= wants[k] - given[k]
            given[k] = wants[k]
        open_ -= full
    return given


def simulate(
    *,
    link: int,
    instances: Sequence[QosInstance],
    demand: Mapping[str, Sequence[float]],
    step_s: float = 0.1,
    burst_s: float = 0.1,
) -> SimResult:
    """Run the talk's algorithm over ``demand`` (bytes/s offered per step, per instance).

    Each step: an instance's backlog grows by what it offers; its token bucket (filling at its
    guarantee, holding ``burst_s`` of it) pays for the guaranteed part; what is left of the
    link's capacity is the shared pool, handed to the still-backlogged instances priority class
    by class, within a class in proportion to guarantees. An idle instance takes no tokens from
    the pool, which is the borrowing. Unsent backlog carries over (a TCP sender's queue)."""
    plan = plan_qos(link=link, instances=instances)
    steps = max((len(t) for t in demand.values()), default=0)
    by_name = {i.name: i for i in instances}
    for name in demand:
        if name not in by_name:
            raise QosPlanError(f"demand for {name!r}, which is not one of the instances")
    tokens = {i.name: i.guarantee * burst_s for i in instances}
    backlog = {i.name: 0.0 for i in instances}
    rates: dict[str, list[float]] = {i.name: [] for i in instances}
    capacity = plan.link * step_s
    for t in range(steps):
        for inst in instances:
            trace = demand.get(inst.name, ())
            backlog[inst.name] += (trace[t] if t < len(trace) else 0.0) * step_s
            tokens[inst.name] = min(
                tokens[inst.name] + inst.guarantee * step_s, inst.guarantee * burst_s
            )
        sent = {n: min(backlog[n], tokens[n]) for n in backlog}
        pool = capacity - sum(sent.values())
        for prio in range(PRIORITY_CLASSES):
            members = [i for i in instances if i.priority == prio]
            wants = {i.name: backlog[i.name] - sent[i.name] for i in members}
            extra = _water_fill(pool, wants, {i.name: float(i.guarantee) for i in members})
            for name, bytes_ in extra.items():
                sent[name] += bytes_
                pool -= bytes_
        for name, bytes_ in sent.items():
            backlog[name] -= bytes_
            tokens[name] = max(0.0, tokens[name] - bytes_)
            rates[name].append(bytes_ / step_s)
    return SimResult(step_s, rates)


def jain_fairness(values: Sequence[float]) -> float:
    """Jain's index of ``values`` (1.0: all equal; 1/n: one takes everything)."""
    if not values:
        raise ValueError("Jain's index of nothing")
    square_sum = sum(v * v for v in values)
    return 1.0 if square_sum == 0 else sum(values) ** 2 / (len(values) * square_sum)
