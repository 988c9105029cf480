"""The node agent's bandwidth pass: keeps the uplink's HTB tree in line with the pods on the node.

In: the node's uplink device and its capacity (``gaia node-agent --qos-device eth0
--qos-link-mbit 10000``) and, each pass, the pods the API server says are on this node (the
agent's ``KubePods``). Out: ``plan_qos`` + ``reconcile_qos`` (``gaia.domain.qos``,
``gaia.node.qos``) on that device, which sends ``tc`` only what differs; a pass that finds the
same pods sends nothing.

What a pod contributes (``instances_from_pods``):

- its **guarantee**: ``kubernetes.io/egress-bandwidth`` (a quantity in bits/s, ``"10M"``), the
  annotation the platform writes for an instance's bandwidth quota (``gaia.providers.kubernetes
  .pods``). A pod without it (or with 0) is not an instance with a quota: its traffic falls into
  the default leaf;
- its **address**: ``status.podIP`` (the IPv4 one of ``status.podIPs``): the filter matches the
  source address. A pod without one yet (still being set up) waits for a later pass; a
  ``hostNetwork`` pod shares the node's address and cannot be told apart, so it is skipped;
- its **priority class**: ``gaia.io/bandwidth-priority`` (0..7, lower is offered spare first;
  4 when absent), the business's class.

Pods that are done (``Succeeded``/``Failed``) or gone simply stop appearing, and the reconcile
removes their leaves. Guarantees that add up to more than the link (the scheduler should not
place so, but the node must not stop shaping when it does) are admitted oldest pod first until
the link is full; the rest are reported and go unshaped (default leaf) until room is made,
rather than scaled down, which would break the promise to every pod at once.

Level-triggered and owned by one task: a pass that fails (API server away, ``tc`` refusing) is
logged once per kind and changes nothing; the next pass starts again from what it reads. The
shaping is left in place when the agent stops: the pods keep running, and the next agent adopts
the tree (``reconcile_qos`` reads what is there).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gaia.domain.qos import PRIORITY_CLASSES, QosInstance, QosPlan, plan_qos
from gaia.kube.labels import EGRESS_BANDWIDTH_ANNOTATION
from gaia.kube.quantities import parse_quantity
from gaia.node.qos import reconcile_qos

log = logging.getLogger(__name__)

BANDWIDTH_PRIORITY_ANNOTATION = "gaia.io/bandwidth-priority"
DEFAULT_PRIORITY = 4
MBIT = 125_000  # bytes/s in one Mbit/s


class PodLister(Protocol):
    """Where the pods on this node come from (the agent's ``KubePods``; a list in tests)."""

    async def pods_on_node(self) -> list[Mapping[str, Any]]: ...


Apply = Callable[[str, QosPlan], list[str]]


@dataclass(frozen=True)
class PodsRead:
    """The instances to shape, and why the other pods with a quota are not shaped."""

    instances: tuple[QosInstance, ...]
    skipped: tuple[str, ...]  # "<namespace>/<name>: why"


@dataclass(frozen=True)
class QosPass:
    plan: QosPlan
    skipped: tuple[str, ...]
    sent: tuple[str, ...]  # the tc commands this pass sent (none when nothing differed)


def _ipv4(pod_status: Mapping[str, Any]) -> str | None:
    candidates = [pod_status.get("podIP")]
    candidates += [entry.get("ip") for entry in pod_status.get("podIPs") or ()]
    for raw in candidates:
        if not raw:
            continue
        with contextlib.suppress(ValueError):
            return str(ipaddress.IPv4Address(str(raw)))
    return None


def instances_from_pods(*, link: int, pods: Sequence[Mapping[str, Any]]) -> PodsRead:
    """The ``QosInstance`` of each pod with a bandwidth quota and an address, oldest first
    while the guarantees fit in ``link`` (bytes/s); see the module's docstring."""
    skipped: list[str] = []
    found: list[tuple[str, QosInstance]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        annotations = meta.get("annotations") or {}
        raw = annotations.get(EGRESS_BANDWIDTH_ANNOTATION)
        if not raw or status.get("phase") in ("Succeeded", "Failed"):
            continue
        try:
            guarantee = int(parse_quantity(raw) / 8)  # bits/s -> bytes/s
        except ValueError as exc:
            skipped.append(f"{name}: {EGRESS_BANDWIDTH_ANNOTATION} {exc}")
            continue
        if guarantee <= 0:
            continue
        if spec.get("hostNetwork"):
            skipped.append(f"{name}: host network (its packets carry the node's address)")
            continue
        address = _ipv4(status)
        if address is None:
            skipped.append(f"{name}: no IPv4 pod address yet")
            continue
        priority = DEFAULT_PRIORITY
        raw_priority = str(annotations.get(BANDWIDTH_PRIORITY_ANNOTATION, DEFAULT_PRIORITY))
        if raw_priority.strip().isdigit() and int(raw_priority) < PRIORITY_CLASSES:
            priority = int(raw_priority)
        else:
            skipped.append(
                f"{name}: {BANDWIDTH_PRIORITY_ANNOTATION} must be 0..7, got {raw_priority!r} "
                f"(shaped at {DEFAULT_PRIORITY})"
            )
        created = str(meta.get("creationTimestamp") or "")
        found.append((created, QosInstance(name, address, guarantee, priority)))
    instances: list[QosInstance] = []
    seen: set[str] = set()
    room = link
    for _, inst in sorted(found, key=lambda pair: (pair[0], pair[1].name)):
        if inst.address in seen:  # a pod's address reused before the old pod's record went
            skipped.append(f"{inst.name}: address {inst.address} is another pod's")
        elif inst.guarantee > room:
            skipped.append(
                f"{inst.name}: its {inst.guarantee / MBIT:g} Mbit/s do not fit: the older pods' "
                f"guarantees leave {room / MBIT:g} of the link's {link / MBIT:g}"
            )
        else:
            instances.append(inst)
            seen.add(inst.address)
            room -= inst.guarantee
    return PodsRead(tuple(instances), tuple(skipped))


@dataclass
class NodeQos:
    """The bandwidth pass of one node's uplink; ``run_once`` is one pass, ``run`` the loop."""

    device: str
    link: int  # bytes/s
    pods: PodLister
    interval_s: float = 5.0
    apply: Apply = reconcile_qos
    passes: int = 0
    _failing: set[str] = field(default_factory=set)
    _skipped: tuple[str, ...] = ()

    async def run_once(self) -> QosPass:
        read = instances_from_pods(link=self.link, pods=await self.pods.pods_on_node())
        plan = plan_qos(link=self.link, instances=read.instances)
        # tc is a subprocess: off the event loop, which also serves the kubelet
        sent = tuple(await asyncio.to_thread(self.apply, self.device, plan))
        if sent:
            log.info(
                "%s: %d instance(s) shaped, %d tc command(s) sent",
                self.device,
                len(read.instances),
                len(sent),
            )
        for why in set(read.skipped) - set(self._skipped):  # once each, not every pass
            log.warning("%s: not shaped: %s", self.device, why)
        self._skipped = read.skipped
        self.passes += 1
        return QosPass(plan, read.skipped, sent)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:
                kind = type(exc).__name__
                if kind not in self._failing:  # one line per outage, not one per pass
                    log.warning("%s: could not shape the uplink: %s", self.device, exc)
                    self._failing.add(kind)
            else:
                if self._failing:
                    log.info("%s: shaping the uplink works again", self.device)
                    self._failing.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
