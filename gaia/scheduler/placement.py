"""``GaiaScheduler``: cluster-level placement with topology-aware GPU allocation.

One decision::

    request ──► candidates (index by free whole GPUs, rotating start) ──► filter each node
            ──► allocate on the node's topology tree (linked / fragment-aware / shared)
            ──► score: link cost, fragmentation left behind, binpack or spread
            ──► best of the first ``sample`` feasible nodes

**Filter**: ready, schedulable, not avoided (blacklist), node selector, zone, zone spread (no
zone more than the app's max skew above the emptiest eligible zone, ``eligible_zones``), the
subnet of a floating IP (the node's ``gaia.io/subnet`` label), GPU model, every
quota dimension that is node capacity (cloud disks are attached volumes, not node capacity),
then the GPU tree must be able to hold the request (whole cards with the required link level,
or a share of one card's cores *and* memory).

**Score**, smaller is better. A share that would break a whole card loses to any node with a
card already shared that can take it. Then the *price* of the placement, in link-cost units
(``gaia.scheduler.links.link_cost``):

- the cost of the dearest link between the chosen cards (the talk's "singular and link"; 0 for
  one card or a share);
- plus the *capability loss* (``TopologyTree.capability_loss``): how much of its worth for larger
  jobs the node gives up. A node's capability for k GPUs is worth what a k-GPU job saves there
  against a typical node of the cluster (the median best level for k over its nodes). Two cards
  of an empty NVSwitch board cost a 2-GPU job the board's whole 8-GPU capability, so a PIX pair
  on a PCIe server, or two cards of a board already in use, is the better buy, and the 8-GPU
  job that comes later still finds the board. Greedy "cheapest link now" does worse over a whole
  trace than this (``bench/gpu_placement.py`` measures both);
- plus, for binpack, ``STRANDED_GPU_PRICE`` for every free GPU the placement strands
  (fragmentation left behind, as ``TopologyTree.fragmentation_delta`` counts it: by topology,
  and by count: a GPU on a node with fewer free than a block needs is lost to that block).

Ties go to the cheaper dearest link, the cheaper set, then binpack (the fullest node) or spread
(the emptiest: fault tolerance for services; spread strands GPUs by design and drops the third
term). The
default is binpack for GPU requests and spread otherwise; an app may choose.

**Speed**: like kube-scheduler's ``percentageOfNodesToScore``, a decision scores at most
``sample`` feasible nodes. Whole-card requests look only at nodes with enough free whole cards
(an index by free-card count, kept up to date by ``bind``), in binpack order (fewest sufficient
free cards first) or spread order; shares look first at nodes with a card already shared, then
as whole-card requests of one card; other requests scan from a rotating start. That keeps a
decision cheap on a 5,000-node cluster while the choice stays the best among many candidates.

**Gang**: ``place_gang`` places several requests (a multi-node job) on a scratch copy and
returns all placements or raises ``Unschedulable`` for the first that cannot fit: all or none.

**Explain**: ``explain`` gives, for a request that fits nowhere, the reason per node aggregated
("3 nodes: 2 free GPUs but no PIX set of 2; 40 nodes: Insufficient memory").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gaia.domain.resources import ResourceVector
from gaia.kube.labels import SUBNET_LABEL
from gaia.scheduler.cpus import MILLI, choose_cores, free_cores, is_exclusive, node_cores
from gaia.scheduler.links import GpuTopology, link_cost, topology_from_matrix
from gaia.scheduler.port import (
    WHOLE_CARD,
    ClusterView,
    NodeView,
    Placement,
    PlacementRequest,
    Unschedulable,
    why_not,
)
from gaia.scheduler.tree import GpuAllocation, GpuRequest, TopologyTree

# What one free GPU left stranded costs, in link-cost units: a little more than one PCIe switch
# hop (PIX, 20). Chosen on bench/gpu_placement.py's traces (seeds 1-6, load 0.9 and 1.0): 20
# lets fragmentation grow past binpack's, 30-40 give link quality away for no less of it.
STRANDED_GPU_PRICE = 25
BINPACK = "binpack"
_DEAREST = float(link_cost("SYS"))
SPREAD = "spread"


@dataclass(frozen=True, slots=True)
class Candidate:
    node: NodeView
    allocation: GpuAllocation | None
    key: tuple[float, ...]


def _gpu_request(request: PlacementRequest) -> GpuRequest | None:
    cores = request.resources.gpu
    if cores <= 0:
        return None
    cards = max(1, cores // WHOLE_CARD)
    per_card_memory = (
        request.resources.gpu_memory // cards
        if cores >= WHOLE_CARD
        else (request.resources.gpu_memory)
    )
    return GpuRequest(cores=cores, memory_mib=per_card_memory)


class GaiaScheduler:
    """Topology-aware placement behind the ``Scheduler`` port."""

    def __init__(self, *, sample: int = 32) -> None:
        self.sample = sample
        self._cursor = 0

    # ------------------------------------------------------------ the port

    def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
        best: Candidate | None = None
        seen = 0
        for node in self._candidates(request, cluster):
            candidate = self._evaluate(request, node, cluster)
            if candidate is None:
                continue
            seen += 1
            if best is None or candidate.key < best.key:
                best = candidate
            if seen >= self.sample:
                break
        if best is None:
            raise Unschedulable(request, self.explain(request, cluster), len(cluster.nodes))
        alloc = best.allocation
        gpu_ids = alloc.gpu_ids if alloc is not None else ()
        return Placement(
            node=best.node.name,
            gpu_ids=gpu_ids,
            cpu_ids=_cpu_ids(cluster, best.node, request.resources, gpu_ids),
        )

    def place_gang(
        self, requests: Sequence[PlacementRequest], cluster: ClusterView
    ) -> list[Placement]:
        """All requests placed, or ``Unschedulable`` and the cluster view untouched."""
        scratch = cluster.copy()
        placements = []
        for request in requests:
            placement = self.place(request, scratch)
            scratch.bind(placement, request.resources)
            placements.append(placement)
        return placements

    def score(
        self, request: PlacementRequest, node: NodeView, cluster: ClusterView | None = None
    ) -> float:
        """How good ``node`` is for ``request`` among the nodes of ``cluster`` (default: alone),
        0 (worst or does not fit) .. 1 (best): the ranking ``place`` uses folded into one number
        for kube-scheduler's prioritize step. The price weighs most (0.75; prices from 0 to twice
        the dearest link), then the dearest link alone (0.05), not breaking a whole card for a
        share (0.1), and binpack or spread (0.1)."""
        candidate = self._evaluate(request, node, cluster or ClusterView([node]))
        if candidate is None:
            return 0.0
        breaks, price, worst, _, fill = candidate.key
        ceiling = 2 * _DEAREST
        price_term = 1.0 - min(max(price, 0.0), ceiling) / ceiling
        link_term = 1.0 - worst / _DEAREST
        fill_term = (1.0 - max(-1.0, min(1.0, fill))) / 2
        return 0.75 * price_term + 0.05 * link_term + 0.1 * (1.0 - breaks) + 0.1 * fill_term

    def why_not(
        self, request: PlacementRequest, node: NodeView, cluster: ClusterView
    ) -> str | None:
        """Why ``node`` of ``cluster`` cannot take ``request`` now, or None when it can: the
        filter of ``place`` for one node (``explain`` counts it over the nodes)."""
        return self._why_not(request, node, cluster)

    def explain(self, request: PlacementRequest, cluster: ClusterView) -> dict[str, int]:
        reasons: Counter[str] = Counter()
        for node in cluster.nodes:
            reasons[self._why_not(request, node, cluster) or "fits"] += 1
        reasons.pop("fits", None)
        return dict(reasons)

    # ------------------------------------------------------------ internals

    def _candidates(self, request: PlacementRequest, cluster: ClusterView) -> Iterator[NodeView]:
        gpu = request.resources.gpu
        policy = request.policy or (BINPACK if gpu else SPREAD)
        if gpu:
            if gpu < WHOLE_CARD:
                yield from list(cluster.shared.values())
            need = max(1, gpu // WHOLE_CARD)
            counts = sorted(c for c in cluster.by_free_cards if c >= need)
            if policy == SPREAD:
                counts.reverse()
            for count in counts:
                yield from list(cluster.by_free_cards[count].values())
            return
        nodes = cluster.nodes
        if not nodes:
            return
        start = self._cursor % len(nodes)
        self._cursor = start + 1
        for step in range(len(nodes)):
            yield nodes[(start + step) % len(nodes)]

    def _why_not(
        self, request: PlacementRequest, node: NodeView, cluster: ClusterView
    ) -> str | None:
        reason = why_not(node, request)
        if reason is not None:
            return reason
        if request.zone and node.zone != request.zone:
            return "node(s) in another zone"
        subnet_refusal = _subnet_refusal(request, node)
        if subnet_refusal is not None:
            return subnet_refusal
        if not _enough_cores(cluster, node, request.resources):
            return "Insufficient free whole CPU cores"
        gpu_request = _gpu_request(request)
        if gpu_request is None:
            return None
        if request.gpu_model and node.gpu_model != request.gpu_model:
            return f"node(s) without {request.gpu_model} GPUs"
        budget = request.gpu_model_budget.get(node.gpu_model)
        if budget is not None and budget < request.resources.gpu:
            return f"node(s) with {node.gpu_model} GPUs, of which the business may take no more"
        tree = _tree(cluster, node)
        if tree is None:
            return "node(s) without GPUs"
        alloc = tree.allocate(gpu_request)
        if alloc is None:
            if gpu_request.cores < WHOLE_CARD:
                return "no GPU with enough free cores and memory for the share"
            free = len(tree.free_gpus())
            need = gpu_request.cores // WHOLE_CARD
            if free >= need:
                return f"{free} free GPUs but not {need} with enough memory"
            return "Insufficient free GPU cards"
        if not _within(alloc.worst_link, request.max_link):
            free = len(tree.free_gpus())
            need = gpu_request.cores // WHOLE_CARD
            return f"{free} free GPUs but no {request.max_link} set of {need}"
        return None

    def _evaluate(
        self, request: PlacementRequest, node: NodeView, cluster: ClusterView
    ) -> Candidate | None:
        if why_not(node, request) is not None:
            return None
        if request.zone and node.zone != request.zone:
            return None
        if _subnet_refusal(request, node) is not None:
            return None
        if not _enough_cores(cluster, node, request.resources):
            return None
        gpu_request = _gpu_request(request)
        gpu = request.resources.gpu
        policy = request.policy or (BINPACK if gpu else SPREAD)
        if gpu_request is None:
            share = _used_share(node, request)
            return Candidate(
                node, None, (0.0, 0.0, 0.0, 0.0, -share if policy == BINPACK else share)
            )
        if request.gpu_model and node.gpu_model != request.gpu_model:
            return None
        budget = request.gpu_model_budget.get(node.gpu_model)
        if budget is not None and budget < gpu:
            return None
        tree = _tree(cluster, node)
        if tree is None:
            return None
        alloc = tree.allocate(gpu_request)
        if alloc is None or not _within(alloc.worst_link, request.max_link):
            return None
        worst = float(link_cost(alloc.worst_link))
        price = worst + tree.capability_loss(alloc, _typical_reach(cluster))
        stranded = tree.fragmentation_delta(alloc)
        after = tree.free_after(alloc)
        # a share that breaks a whole card when a shared card elsewhere could take it
        breaks = float(not alloc.whole_cards and after != tree.free_mask)
        fill = tree.core_share_used() + gpu / (WHOLE_CARD * tree.count)
        if policy == BINPACK:
            key = (breaks, price + STRANDED_GPU_PRICE * stranded, worst, float(alloc.cost), -fill)
        else:  # spreading strands GPUs by design: only the link and the capability count
            key = (breaks, price, worst, float(alloc.cost), fill)
        return Candidate(node=node, allocation=alloc, key=key)


def node_subnet(node: NodeView) -> str:
    """The node's underlay subnet in CIDR form, from its ``gaia.io/subnet`` label ("" if none)."""
    return node.labels.get(SUBNET_LABEL, "").replace("_", "/")


def _subnet_refusal(request: PlacementRequest, node: NodeView) -> str | None:
    """Why a floating-IP instance cannot run on ``node``: its subnet cannot hold the address."""
    if request.subnets is None:
        return None
    subnet = node_subnet(node)
    if subnet in request.subnets:
        return None
    if not subnet:
        return f"node(s) without a {SUBNET_LABEL} label for floating IPs"
    if not request.subnets:
        return "node(s) in subnets with no free floating IP (no pool, or its pool is full)"
    wanted = ", ".join(sorted(request.subnets))
    return f"node(s) outside the floating IP's subnet(s) {wanted}"


def _within(worst: str, limit: str) -> bool:
    """Is a set whose dearest link is ``worst`` allowed under ``limit`` ("NV": any NVLink)?"""
    if not limit or worst == "X":
        return True
    if limit == "NV":
        return worst.startswith("NV")
    return link_cost(worst) <= link_cost(limit)


def _used_share(node: NodeView, request: PlacementRequest) -> float:
    """How full the node is after the placement (the largest share over CPU and memory)."""
    cap_cpu = node.free.cpu + node.used_cpu
    cap_mem = node.free.memory + node.used_memory
    cpu = (node.used_cpu + request.resources.cpu) / cap_cpu if cap_cpu else 0.0
    mem = (node.used_memory + request.resources.memory) / cap_mem if cap_mem else 0.0
    return max(cpu, mem)


def _known_cores(cluster: ClusterView, node: NodeView) -> tuple[int, ...]:
    """Every core id of ``node`` when its cores are known (its GPUs' CPU affinity is: from the
    node, or from the topology the view holds for its link matrix), else (): then nothing is
    bound there. Cached per view: it depends on the node's capacity and topology only."""
    cache: dict[str, tuple[int, ...]] = cluster.notes.setdefault("cores", {})
    cores = cache.get(node.name)
    if cores is None:
        known: set[int] = {c for ids in node.gpu_cpus.values() for c in ids}
        if not known and node.gpu_free:
            tree = _tree(cluster, node)
            if tree is not None:
                known.update(tree.cpu_cores_for(range(tree.count)))
        cores = node_cores(node.free.cpu + node.used_cpu, known) if known else ()
        cache[node.name] = cores
    return cores


def _enough_cores(cluster: ClusterView, node: NodeView, resources: ResourceVector) -> bool:
    """An exclusive request needs that many cores no other exclusive instance holds."""
    if not is_exclusive(resources):
        return True
    cores = _known_cores(cluster, node)
    if not cores:
        return True
    return len(free_cores(cores, node.exclusive_cpus)) >= resources.cpu // MILLI


def _cpu_ids(
    cluster: ClusterView, node: NodeView, resources: ResourceVector, gpu_ids: tuple[int, ...]
) -> tuple[int, ...]:
    """The cores to bind the placed instance to (``gaia.scheduler.cpus``): next to its GPUs."""
    cores = _known_cores(cluster, node)
    if not cores:
        return ()
    tree = _tree(cluster, node) if gpu_ids else None
    near = tree.cpu_cores_for(gpu_ids) if tree is not None else ()
    chosen = choose_cores(cores=cores, taken=node.exclusive_cpus, resources=resources, near=near)
    return chosen or ()


def _tree(cluster: ClusterView, node: NodeView) -> TopologyTree | None:
    """The node's topology tree with its current GPU use, built once per cluster view."""
    tree = cluster.trees.get(node.name)
    if tree is not None or not node.gpu_free:
        return tree
    count = len(node.gpu_free)
    links = node.gpu_links or _flat_links(count)
    cpus = tuple(node.gpu_cpus.get(i, ()) for i in range(count))
    key = (links, cpus) if node.gpu_cpus else links
    topology = cluster.topologies.get(key)
    if topology is None:
        topology = topology_from_matrix(links)
        if node.gpu_cpus:
            topology = GpuTopology(
                links=topology.links, cpu_affinity=cpus, numa_node=topology.numa_node
            )
        cluster.topologies[key] = topology
    memory = [node.gpu_memory_total.get(i, 0) for i in range(count)]
    tree = TopologyTree.build(topology, memory_mib=memory)
    for index in range(count):
        used_cores = WHOLE_CARD - node.gpu_free.get(index, WHOLE_CARD)
        used_memory = memory[index] - node.gpu_memory_free.get(index, memory[index])
        if used_cores or used_memory:
            tree.take(
                GpuAllocation(
                    gpu_ids=(index,),
                    cores_per_gpu=used_cores,
                    memory_per_gpu_mib=used_memory,
                    cost=0,
                    worst_link="X",
                )
            )
    cluster.trees[node.name] = tree
    return tree


def _typical_reach(cluster: ClusterView) -> dict[int, int]:
    """Per block size, the median over the cluster's GPU nodes of the best dearest-link cost an
    empty node offers for that many GPUs: what a job of that size pays on a typical node."""
    known = cluster.notes.get("typical_reach")
    if known is None:
        offers: dict[int, list[int]] = {}
        for node in cluster.nodes:
            tree = _tree(cluster, node) if node.gpu_free else None
            if tree is None:
                continue
            size = 2
            while size <= tree.count:
                offers.setdefault(size, []).append(tree.best_cost(size))
                size *= 2
        known = {size: sorted(costs)[len(costs) // 2] for size, costs in offers.items()}
        cluster.notes["typical_reach"] = known
    result: dict[int, int] = known
    return result


def _flat_links(count: int) -> tuple[tuple[str, ...], ...]:
    """A node that reports no topology: treat every pair as the dearest link."""
    return tuple(tuple("X" if i == j else "SYS" for j in range(count)) for i in range(count))


__all__ = ["BINPACK", "SPREAD", "GaiaScheduler"]
