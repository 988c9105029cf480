"""Which container the kubelet is allocating for, and which card units it should get.

The device plugin API never names the pod: ``GetPreferredAllocation`` and ``Allocate`` carry
only a size and device ids. The kubelet admits a node's new pods one at a time, oldest first
(``HandlePodAdditions`` sorts them by creation time), and within a pod its init containers then
its containers, in order; each container's ``gaia.io/gpu-core`` goes through
``GetPreferredAllocation`` then ``Allocate`` before the next one. So the container being
allocated is the first, in that order, of this node's pods that asks for that many units and
has not had its units yet (``pending_containers``, ``next_container``). That is how
gpu-manager and HAMi find it too; Gaia adds the check that matters when two candidates of the
same size wait: their cards. The preferred answer is remembered per unit set, so ``Allocate``
gets the container its units were chosen for.

**Which cards.** A pod the Gaia scheduler placed carries ``gaia.io/gpu-ids`` (``"1"``, or
``"0,1"`` for two whole cards): the answer is units of exactly those cards, the first free ones
of each (``choose_units``). A pod without it (placed by kube-scheduler alone) gets what the
Gaia tree (``gaia.scheduler.tree``) would give on this node as it is now: the cards' free
units are the ids the kubelet offers, their free memory what earlier allocations left. When the
named cards cannot hold the request the preference is empty, the kubelet picks by itself, and
``check_units`` refuses that pick in ``Allocate``: the pod fails admission with a message that
says why, rather than running on a card the scheduler did not choose.

**Limits** (``shares_for``): cores are the units per card; memory is the container's
``gaia.io/gpu-memory`` (MiB) on its one card, or, when it asks for none, the same fraction of
the card's memory as of its cores (a share without a memory bound would let one tenant take a
card's memory from its neighbours). Whole cards carry no limit.

**Two resources, one set of cards** (``units``): ``gaia.io/gpu-core`` units and
``nvidia.com/gpu`` whole cards. The kubelet counts them apart, so ``busy`` cards (those the
*other* resource holds, from the ledger) are never preferred and a pick that touches one is
refused. A container asks for one of the two, never both.

Pure code: pods are plain Kubernetes documents, the kubelet's ids plain strings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gaia.kube.errors import UnreadableObject
from gaia.kube.labels import GPU_IDS_ANNOTATION, parse_gpu_ids
from gaia.kube.quantities import parse_quantity
from gaia.kube.resources import GAIA_GPU_CORE, GAIA_GPU_MEMORY, NVIDIA_GPU, WHOLE_CARD
from gaia.node.deviceplugin.units import CARD, CORE, Inventory
from gaia.node.vgpu import CardShare
from gaia.scheduler.links import GpuTopology
from gaia.scheduler.tree import GpuAllocation, GpuRequest, TopologyTree

ContainerKey = tuple[str, str]  # (pod uid, container name)
# the id names a folder that holds MPS's sockets (gaia.node.vgpu): a pod uid and 16 hex digits at
# most, so /run/gaia/vgpu/<id>/pipe stays within a Unix socket path's length
MAX_ALLOCATION_ID = 36 + 1 + 16


class AllocationRefused(Exception):
    """The kubelet's request cannot be honoured; the message is what the pod's event says."""


@dataclass(frozen=True, slots=True)
class PendingContainer:
    """A container of a pod on this node that asks for GPU core units and may not have them."""

    namespace: str
    pod: str
    uid: str
    container: str
    created: str  # the pod's creationTimestamp (RFC 3339 sorts as text)
    order: int  # init containers first, then containers, as the kubelet allocates them
    cores: int  # gaia.io/gpu-core
    cards: int  # nvidia.com/gpu
    memory_mib: int  # gaia.io/gpu-memory, 0 when not asked
    gpu_ids: tuple[int, ...] | None  # the pod's gaia.io/gpu-ids; None when absent
    error: str = ""  # why Gaia cannot serve it (gaia.io/gpu-ids unreadable, both resources)

    def asks(self, resource: str) -> int:
        """How many devices of ``resource`` it asks for."""
        return self.cores if resource == CORE else self.cards

    @property
    def key(self) -> ContainerKey:
        return (self.uid, self.container)

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.pod} container {self.container}"


_DONE_PHASES = ("Succeeded", "Failed")


def _amount(resources: Mapping[str, Any], name: str) -> int:
    for part in ("limits", "requests"):  # extended resources: request == limit
        values = resources.get(part) or {}
        if name in values:
            try:
                amount = parse_quantity(values[name])
            except UnreadableObject:
                return 0
            if amount == amount.to_integral_value() and amount > Decimal(0):
                return int(amount)
            return 0
    return 0


def _started(statuses: Iterable[Mapping[str, Any]]) -> set[str]:
    """Containers that have run: the kubelet allocated their devices before they started, and
    it reuses that allocation on a restart without asking again."""
    started = set()
    for status in statuses:
        state = status.get("state") or {}
        if "running" in state or "terminated" in state or status.get("lastState"):
            started.add(str(status.get("name", "")))
    return started


def read_gpu_ids(raw: str) -> tuple[int, ...]:
    """The ``gaia.io/gpu-ids`` value (``"0,1"``) as card indexes, each named once."""
    try:
        ids = parse_gpu_ids(raw)
    except ValueError:
        raise ValueError(
            f"{GPU_IDS_ANNOTATION}={raw!r} is not a list of card indexes like '0,1'"
        ) from None
    if len(set(ids)) != len(ids):
        raise ValueError(f"{GPU_IDS_ANNOTATION}={raw!r} names a card twice")
    return ids


def pending_containers(pods: Iterable[Mapping[str, Any]]) -> list[PendingContainer]:
    """The containers of ``pods`` (this node's) that ask for GPU core units and have not run,
    in the kubelet's allocation order."""
    found: list[PendingContainer] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") in _DONE_PHASES:
            continue
        started = _started(status.get("initContainerStatuses") or []) | _started(
            status.get("containerStatuses") or []
        )
        raw_ids = (meta.get("annotations") or {}).get(GPU_IDS_ANNOTATION)
        gpu_ids: tuple[int, ...] | None = None
        ids_error = ""
        if raw_ids is not None:
            try:
                gpu_ids = read_gpu_ids(raw_ids)
            except ValueError as exc:
                ids_error = str(exc)
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        for order, container in enumerate(containers):
            name = str(container.get("name", ""))
            resources = container.get("resources") or {}
            cores = _amount(resources, GAIA_GPU_CORE)
            cards = _amount(resources, NVIDIA_GPU)
            if not (cores or cards) or name in started:
                continue
            error = ids_error
            if cores and cards:
                error = (
                    f"asks for both {GAIA_GPU_CORE} and {NVIDIA_GPU}: ask for whole cards as "
                    f"one or the other ({GAIA_GPU_CORE}: 100 per card)"
                )
            found.append(
                PendingContainer(
                    namespace=str(meta.get("namespace", "")),
                    pod=str(meta.get("name", "")),
                    uid=str(meta.get("uid", "")),
                    container=name,
                    created=str(meta.get("creationTimestamp", "")),
                    order=order,
                    cores=cores,
                    cards=cards,
                    memory_mib=_amount(resources, GAIA_GPU_MEMORY),
                    gpu_ids=gpu_ids,
                    error=error,
                )
            )
    found.sort(key=lambda c: (c.created, c.namespace, c.pod, c.order))
    return found


def next_container(
    candidates: Sequence[PendingContainer],
    *,
    resource: str = CORE,
    size: int,
    allocated: Iterable[ContainerKey],
) -> PendingContainer | None:
    """The container the kubelet is allocating ``size`` devices of ``resource`` for: the first
    candidate asking that many that has none yet."""
    done = set(allocated)
    for candidate in candidates:
        if candidate.asks(resource) == size and candidate.key not in done:
            return candidate
    return None


def per_card_size(resource: str, size: int) -> tuple[int, int]:
    """(cards, devices per card) of a request of ``size`` devices; (0, 0) when it cannot be
    served (a share over one card)."""
    if resource == CARD:
        return size, 1
    if size < WHOLE_CARD:
        return 1, size
    if size % WHOLE_CARD:
        return 0, 0
    return size // WHOLE_CARD, WHOLE_CARD


def _free_units(
    inventory: Inventory, available: Iterable[str], busy: Iterable[int]
) -> dict[int, list[str]]:
    free: dict[int, list[str]] = {card.index: [] for card in inventory.cards}
    for index, ids in inventory.per_card(available).items():
        free[index] = ids
    for index in busy:
        free[index] = []
    return free


def choose_units(
    *,
    inventory: Inventory,
    topology: GpuTopology | None,
    resource: str = CORE,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    container: PendingContainer | None,
    memory_used: Mapping[int, int],
    busy: Iterable[int] = (),
) -> list[str]:
    """The device ids of ``resource`` to prefer for a container asking ``size`` of them; [] to
    leave it to the kubelet (then ``check_units`` judges its pick). ``memory_used`` is MiB
    already granted per card, ``busy`` the cards the other resource holds."""
    if must_include:  # the kubelet reuses devices it gave before: keep them, nothing to choose
        return []
    count, per_card = per_card_size(resource, size)
    if not count:
        return []  # more than one card must be whole cards; check_units says so
    free = _free_units(inventory, available, busy)
    if container is not None and container.gpu_ids is not None:
        cards: tuple[int, ...] = container.gpu_ids
    else:
        memory = container.memory_mib if container is not None and per_card < WHOLE_CARD else 0
        cards = _tree_choice(
            inventory=inventory,
            topology=topology,
            # hundredths free per card: a unit is one, a whole card's device a hundred
            free={
                i: len(ids) if resource == CORE else WHOLE_CARD * len(ids)
                for i, ids in free.items()
            },
            request=GpuRequest(
                cores=count * per_card * (1 if resource == CORE else WHOLE_CARD), memory_mib=memory
            ),
            memory_used=memory_used,
        )
    if len(cards) != count:
        return []
    chosen: list[str] = []
    for index in cards:
        if len(free.get(index, [])) < per_card:
            return []
        chosen.extend(free[index][:per_card])
    return chosen


def _tree_choice(
    *,
    inventory: Inventory,
    topology: GpuTopology | None,
    free: Mapping[int, int],
    request: GpuRequest,
    memory_used: Mapping[int, int],
) -> tuple[int, ...]:
    """What the Gaia tree gives ``request`` on this node as it is now: ``free`` hundredths per
    card (what the kubelet offers, less busy cards) and the memory earlier grants hold."""
    cards = inventory.cards
    if not cards:
        return ()
    if topology is None or topology.count != len(cards):
        # without the real matrix every pair counts as equally linked
        count = len(cards)
        topology = GpuTopology(
            links=tuple(
                tuple("X" if i == j else "SYS" for j in range(count)) for i in range(count)
            ),
            cpu_affinity=((),) * count,
            numa_node=(None,) * count,
        )
    tree = TopologyTree.build(topology, memory_mib=[c.memory_mib for c in cards])
    for g, card in enumerate(cards):
        taken = WHOLE_CARD - min(free.get(card.index, 0), WHOLE_CARD)
        memory = min(memory_used.get(card.index, 0), card.memory_mib)
        if taken <= 0 and memory <= 0:
            continue
        taken = max(taken, 1)  # memory granted without cores still makes the card shared
        tree.take(
            GpuAllocation(
                gpu_ids=(g,),
                cores_per_gpu=taken,
                memory_per_gpu_mib=card.memory_mib if taken == WHOLE_CARD else memory,
                cost=0,
                worst_link="X",
            )
        )
    try:
        answer = tree.allocate(request)
    except ValueError:
        return ()
    if answer is None:
        return ()
    return tuple(cards[g].index for g in answer.gpu_ids)


def check_units(
    *,
    inventory: Inventory,
    resource: str = CORE,
    device_ids: Sequence[str],
    container: PendingContainer | None,
    busy: Iterable[int] = (),
) -> dict[int, int]:
    """The kubelet's pick as hundredths per card, if Gaia can honour it; ``AllocationRefused``
    says why not. ``busy``: the cards the other resource holds."""
    try:
        per_card = inventory.per_card(device_ids)
    except ValueError as exc:
        raise AllocationRefused(str(exc)) from None
    size = len(device_ids)
    what = f"{size} x {resource}"
    who = container.name if container is not None else f"a container asking {what}"
    # the scheduler's choice first: its breach is what the user must read
    if container is not None:
        if container.error:
            raise AllocationRefused(f"{container.name}: {container.error}")
        if container.gpu_ids is not None and sorted(container.gpu_ids) != sorted(per_card):
            named = ",".join(map(str, container.gpu_ids))
            held = sorted(set(container.gpu_ids) & set(busy))
            sick = sorted(set(container.gpu_ids) & set(inventory.unhealthy))
            if held:
                why = f"card(s) {held} are held through {_other(resource)}"
            elif sick:
                why = f"card(s) {sick} are unhealthy"
            else:
                why = f"which cannot hold {what} now"
            raise AllocationRefused(
                f"{container.name}: the Gaia scheduler gave this pod card(s) {named} "
                f"({GPU_IDS_ANNOTATION}), {why}; the kubelet offered card(s) "
                f"{','.join(map(str, per_card))}. Delete the pod to have it placed again."
            )
    count, per = per_card_size(resource, size)
    uneven = {i: len(ids) for i, ids in per_card.items() if len(ids) != per}
    if not count or uneven or len(per_card) != count:
        if resource == CORE and size > WHOLE_CARD:
            raise AllocationRefused(
                f"{who}: more than one card must be whole cards ({GAIA_GPU_CORE} a multiple "
                f"of {WHOLE_CARD}, all units of each card); got units per card "
                f"{uneven or size}"
            )
        raise AllocationRefused(
            f"{who}: a share of a card must lie on one card, but the kubelet picked units of "
            f"cards {sorted(per_card)}"
        )
    sick = sorted(set(per_card) & set(inventory.unhealthy))
    if sick:
        reasons = "; ".join(f"GPU{i}: {', '.join(inventory.unhealthy[i])}" for i in sick)
        raise AllocationRefused(f"{who}: unhealthy card(s) {sick} ({reasons})")
    taken = sorted(set(per_card) & set(busy))
    if taken:
        raise AllocationRefused(
            f"{who}: card(s) {taken} are held through {_other(resource)}; one card is never "
            f"granted as {resource} and {_other(resource)} at once"
        )
    hundredths = 1 if resource == CORE else WHOLE_CARD
    return {i: len(ids) * hundredths for i, ids in per_card.items()}


def _other(resource: str) -> str:
    return NVIDIA_GPU if resource == CORE else GAIA_GPU_CORE


def shares_for(
    *,
    inventory: Inventory,
    per_card: Mapping[int, int],
    container: PendingContainer | None,
    memory_used: Mapping[int, int],
) -> list[CardShare]:
    """The container's cards and limits from its hundredths per card (see the module
    docstring); ``AllocationRefused`` when its memory does not fit on its card beside what was
    granted before."""
    shares: list[CardShare] = []
    for index, cores in per_card.items():
        card = inventory.card(index)
        if card is None:  # per_card comes from the inventory: cannot happen
            raise AllocationRefused(f"GPU{index} is not on this node")
        memory = 0
        if cores < WHOLE_CARD:
            asked = container.memory_mib if container is not None else 0
            memory = asked or card.memory_mib * cores // WHOLE_CARD
            room = card.memory_mib - memory_used.get(index, 0)
            if memory > room:
                who = container.name if container is not None else "the container"
                raise AllocationRefused(
                    f"{who}: asks {memory} MiB of GPU{index}, which has {max(room, 0)} MiB "
                    f"left of {card.memory_mib}"
                )
        shares.append(
            CardShare(index=index, uuid=card.uuid, minor=card.minor, cores=cores, memory_mib=memory)
        )
    return shares


def allocation_id(container: PendingContainer | None, device_ids: Sequence[str]) -> str:
    """A name for one container's grant that is safe in paths: the pod uid and container name
    (both DNS-safe), or, for a container Gaia could not identify, a digest of its units."""
    if container is not None and container.uid:
        readable = f"{container.uid}-{container.container}"
        if len(readable) <= MAX_ALLOCATION_ID:
            return readable
        # a long container name: the enforcement's paths (a Unix socket's among them) are short
        tail = hashlib.sha256(container.container.encode()).hexdigest()[:16]
        return f"{container.uid}-{tail}"
    digest = hashlib.sha256("\n".join(sorted(device_ids)).encode()).hexdigest()[:16]
    return f"units-{digest}"
