"""The resource access cost tree of one node, and the GPU allocation policies that work on it.

What flows in is a ``GpuTopology`` (``gaia.scheduler.links``) and the memory of each card;
what flows out, per request, is a ``GpuAllocation`` that the caller applies with ``take`` (and
undoes with ``release``). ``allocate`` only decides, it never changes the tree: the cluster
scheduler asks many nodes (or a ``copy()``) "what would you give?" and takes on one.

**The tree** (Gaia Scheduler, ISPA 2018). Leaves are GPUs (id, free cores 0..100, free memory);
an inner node holds the link type between its children, its cost (``link_cost``) and the number
of whole free GPUs below it. The tree is built by complete-linkage clustering of the link-cost
matrix: the two groups whose dearest link between them is cheapest merge first, so the dearest
link sits at the root (SYS), then NODE/PHB, PXB, PIX and NVLink towards the leaves, and a set of
GPUs inside a subtree never pays more than that subtree's link. For PCIe trees and NVSwitch
boards this is the hardware exactly (every pair's link is that of its lowest common ancestor).
An NVLink mesh is no tree (DGX-1: every GPU has NVLinks to its quad and to one GPU of the other
quad); ties are then broken by which GPUs see the rest of the machine alike, which gives the
quads. Costs are always read from the matrix, so a mesh is never judged by the tree's shape.

**Cost of a set** of GPUs: its dearest link first (collectives run at the speed of the slowest
hop), then ``set_cost``, the sum of ``link_cost`` over all pairs (the traffic a set pays when
every GPU talks to every other). Sets are compared by ``(link_cost(worst_link), set_cost)``.

**Fragmentation**: for a block size k, the best level of the node is the dearest link of the
cheapest k-set on the empty node (``best_possible_level``). A free GPU is *usable* for k when
the free GPUs hold a k-set containing it whose links are all at most that level.
``fragmentation`` counts, summed over the sizes (2, 4 and 8 unless told), the free GPUs that are
not usable; sizes larger than the number of free GPUs do not count (that is a full node, not a
fragmented one). The policies' tie-break uses 2, 4, 8, ... up to the node's GPU count.

**Policies.** *Linked* (several whole cards): the cheapest set; among sets of equal cost, the one
that leaves the least fragmentation, then the one that keeps the largest free subtrees whole,
then the lowest ids. *Single* (one whole card) is the same with one card: every choice costs
nothing, so it is pure fragmentation avoidance, the talk's "fragment" policy. *Shared* (a
fraction of a card, cores in hundredths and memory in MiB): best fit on the cards already
shared (least room left, cores and memory each as a share of the card); a whole free card is
broken only when no shared card fits, and then the smallest that fits, chosen like *single*.
Nothing is ever over-committed: ``take`` refuses what does not fit.

**Speed**: the cluster scheduler asks many nodes per decision. Everything that depends on the
topology alone (tree, twin classes, best levels, the cliques behind fragmentation, and the
answers per free set) lives in one ``_TopologyPlan`` per topology, shared by all nodes built
from an equal topology. GPUs that are interchangeable (same link to every other GPU, such as the
GPUs of one PCIe switch or all GPUs of an NVSwitch board) form twin classes, and the exact
search enumerates how many GPUs to take from each class, with branch and bound; its answers are
cached per (free GPUs, eligible GPUs, count), so a repeated question is a dictionary lookup.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gaia.scheduler.links import SELF, GpuTopology, link_cost
from gaia.scheduler.port import WHOLE_CARD

DEFAULT_BLOCK_SIZES = (2, 4, 8)
# The price of a block size a node can no longer offer at all: the dearest link there is (the
# block must go to another node, and may well end up across sockets).
UNREACHABLE = link_cost("SYS")
_MEMO_LIMIT = 1 << 16  # answers kept per topology; the cache starts over when it is full
_UNKNOWN: tuple[tuple[int, ...], int, str] = ((), -1, "")  # "not asked yet", unlike None


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """GPUs for one instance: ``cores`` in hundredths of a card (100·n for n whole cards, 1..99
    for a share of one card) and ``memory_mib`` (per card for whole cards, 0 = any card; for a
    share, the memory of the share, 0 = the same fraction of the card's memory as of its cores).
    """

    cores: int
    memory_mib: int = 0

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ValueError(
                f"a GPU request needs at least 1 hundredth of a card, not {self.cores}"
            )
        if self.cores > WHOLE_CARD and self.cores % WHOLE_CARD:
            raise ValueError(
                f"{self.cores} hundredths of a card: whole cards come in multiples of "
                f"{WHOLE_CARD}, shares of one card below {WHOLE_CARD}"
            )
        if self.memory_mib < 0:
            raise ValueError(f"GPU memory cannot be negative: {self.memory_mib} MiB")

    @property
    def cards(self) -> int:
        """Whole cards asked for; 0 for a share."""
        return self.cores // WHOLE_CARD


@dataclass(frozen=True, slots=True)
class GpuAllocation:
    """What a node gives a request: the GPUs, what each gives (``cores_per_gpu`` 100 = the whole
    card, exclusively), and the set's communication cost (``set_cost``) and dearest link.
    Allocations of different nodes compare as ``(link_cost(worst_link), cost)``, as sets do."""

    gpu_ids: tuple[int, ...]
    cores_per_gpu: int
    memory_per_gpu_mib: int
    cost: int
    worst_link: str

    @property
    def whole_cards(self) -> bool:
        return self.cores_per_gpu == WHOLE_CARD


@dataclass(frozen=True, slots=True)
class TreeNode:
    """A node of the resource access cost tree; a leaf is one GPU (link "X", cost 0)."""

    link: str
    cost: int
    gpus: tuple[int, ...]
    children: tuple[TreeNode, ...] = ()
    mask: int = field(default=0, repr=False, compare=False)

    @property
    def is_leaf(self) -> bool:
        return not self.children


def _bits(mask: int) -> tuple[int, ...]:
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


def _mask(ids: Iterable[int]) -> int:
    mask = 0
    for i in ids:
        mask |= 1 << i
    return mask


def _build_tree(labels: tuple[tuple[str, ...], ...], costs: list[list[int]]) -> TreeNode:
    """Complete-linkage clustering of the cost matrix (see the module docstring)."""
    clusters = [TreeNode(link=SELF, cost=0, gpus=(i,), mask=1 << i) for i in range(len(costs))]

    def dearest(a: TreeNode, b: TreeNode) -> tuple[int, int, tuple[int, int]]:
        """(dearest cost, summed cost, the dearest pair) over the pairs between a and b."""
        worst, total, at = -1, 0, (0, 0)
        for i in a.gpus:
            for j in b.gpus:
                total += costs[i][j]
                if costs[i][j] > worst:
                    worst, at = costs[i][j], (i, j)
        return worst, total, at

    def unlike(a: TreeNode, b: TreeNode) -> int:
        """How differently a and b see the GPUs outside them (merging alike groups first)."""
        outside = [g for g in range(len(costs)) if not (a.mask | b.mask) >> g & 1]
        return sum(
            abs(max(costs[i][g] for i in a.gpus) - max(costs[j][g] for j in b.gpus))
            for g in outside
        )

    while len(clusters) > 1:
        scored = []
        for x, y in itertools.combinations(range(len(clusters)), 2):
            worst, total, at = dearest(clusters[x], clusters[y])
            size = len(clusters[x].gpus) * len(clusters[y].gpus)
            scored.append(((worst, total / size), x, y, at))
        first = min(key for key, *_ in scored)
        tied = [
            (unlike(clusters[x], clusters[y]), x, y, at) for key, x, y, at in scored if key == first
        ]
        _, x, y, at = min(tied)
        a, b = clusters[x], clusters[y]
        worst = first[0]
        # Groups that are already joined at this cost become siblings, not a chain of nodes.
        children = tuple(
            sorted(
                (
                    *(a.children if a.children and a.cost == worst else (a,)),
                    *(b.children if b.children and b.cost == worst else (b,)),
                ),
                key=lambda node: node.gpus[0],
            )
        )
        merged = TreeNode(
            link=labels[at[0]][at[1]],
            cost=worst,
            gpus=tuple(sorted(a.gpus + b.gpus)),
            children=children,
            mask=a.mask | b.mask,
        )
        clusters = [c for k, c in enumerate(clusters) if k not in (x, y)] + [merged]
        clusters.sort(key=lambda node: node.gpus[0])
    return clusters[0]


def _twin_classes(costs: list[list[int]], order: Sequence[int]) -> list[tuple[int, ...]]:
    """GPUs with the same link to every other GPU, in tree order. Being twins is an equivalence
    (i~j and j~k give i~k), so comparing with the first member of a class is enough."""
    classes: list[list[int]] = []
    for g in order:
        for members in classes:
            r = members[0]
            if all(costs[g][x] == costs[r][x] for x in range(len(costs)) if x not in (g, r)):
                members.append(g)
                break
        else:
            classes.append([g])
    return [tuple(sorted(members)) for members in classes]


def _maximal_cliques(adjacent: list[int], candidates: int) -> list[int]:
    """Bron-Kerbosch with pivot over bitmasks: every maximal clique of the graph."""
    found: list[int] = []

    def expand(clique: int, pool: int, done: int) -> None:
        if not pool and not done:
            found.append(clique)
            return
        pivot = max(_bits(pool | done), key=lambda v: (adjacent[v] & pool).bit_count())
        for v in _bits(pool & ~adjacent[pivot]):
            expand(clique | 1 << v, pool & adjacent[v], done & adjacent[v])
            pool &= ~(1 << v)
            done |= 1 << v

    if candidates:
        expand(0, candidates, 0)
    return found


class _TopologyPlan:
    """Everything that depends on the topology alone, computed once and shared by every node
    whose topology is equal; the caches only ever hold answers, never node state."""

    def __init__(self, topology: GpuTopology) -> None:
        self.count = topology.count
        self.labels = topology.links
        self.costs = [[link_cost(label) for label in row] for row in topology.links]
        self.all = (1 << self.count) - 1
        self.root = _build_tree(self.labels, self.costs)
        # Subtrees in preorder as (mask, size, index after the subtree), for "intact subtrees".
        self.subtrees: list[tuple[int, int, int]] = []
        self._flatten(self.root)
        order = self.root.gpus if self.root.is_leaf else self._leaf_order(self.root)
        self.classes = _twin_classes(self.costs, order)
        self.intra = [self.costs[m[0]][m[1]] if len(m) > 1 else 0 for m in self.classes]
        self.cross = [[self.costs[a[0]][b[0]] for b in self.classes] for a in self.classes]
        pairs = [self.costs[i][j] for i in range(self.count) for j in range(i)]
        self.cheapest_link = min(pairs, default=0)
        self.block_sizes = tuple(2**e for e in range(1, self.count.bit_length()))
        self._best: dict[int, tuple[int, int, str]] = {}
        self._pools: dict[int, list[int]] = {}
        self._linked: dict[tuple[int, int, int], tuple[tuple[int, ...], int, str] | None] = {}
        self._fragmentation: dict[tuple[int, tuple[int, ...]], int] = {}
        self._reach: dict[int, tuple[int, ...]] = {}

    def _flatten(self, node: TreeNode) -> None:
        at = len(self.subtrees)
        self.subtrees.append((node.mask, len(node.gpus), 0))
        for child in node.children:
            self._flatten(child)
        self.subtrees[at] = (node.mask, len(node.gpus), len(self.subtrees))

    @staticmethod
    def _leaf_order(node: TreeNode) -> list[int]:
        if node.is_leaf:
            return list(node.gpus)
        return [g for child in node.children for g in _TopologyPlan._leaf_order(child)]

    # -- costs ---------------------------------------------------------------------------

    def set_cost(self, ids: Sequence[int]) -> int:
        return sum(self.costs[i][j] for i, j in itertools.combinations(ids, 2))

    def worst_link(self, ids: Sequence[int]) -> str:
        worst = SELF
        dearest = 0
        for i, j in itertools.combinations(ids, 2):
            if self.costs[i][j] > dearest:
                dearest, worst = self.costs[i][j], self.labels[i][j]
        return worst

    def best(self, count: int) -> tuple[int, int, str]:
        """(dearest link cost, summed cost, dearest label) of the cheapest set on the empty node."""
        known = self._best.get(count)
        if known is None:
            worst, total, sets = self._cheapest(self.all, count)
            known = (worst, total, self.worst_link(_bits(sets[0])))
            self._best[count] = known
        return known

    # -- exact search --------------------------------------------------------------------

    def _cheapest(self, eligible: int, count: int) -> tuple[int, int, list[int]]:
        """The cheapest (dearest link, summed cost) of a ``count``-set of eligible GPUs and every
        set that achieves it, one per way of splitting ``count`` over the twin classes (taking
        the lowest ids in each class: twins are interchangeable). Needs ``count`` eligible GPUs.
        """
        avail = [[g for g in members if eligible >> g & 1] for members in self.classes]
        present = [t for t in range(len(avail)) if avail[t]]
        room_after = [sum(len(avail[t]) for t in present[p:]) for p in range(len(present) + 1)]
        taken = [0] * len(present)
        best = [math.inf, math.inf]
        found: list[list[int]] = []

        def visit(position: int, left: int, worst: int, total: int) -> None:
            if left == 0:
                if (worst, total) < (best[0], best[1]):
                    best[0], best[1] = worst, total
                    found.clear()
                found.append(taken.copy())
                return
            if room_after[position] < left:
                return
            t = present[position]
            for n in range(min(left, len(avail[t])), -1, -1):
                w, extra = worst, self.intra[t] * n * (n - 1) // 2
                if n > 1:
                    w = max(w, self.intra[t])
                if n:
                    for q in range(position):
                        if taken[q]:
                            link = self.cross[t][present[q]]
                            extra += n * taken[q] * link
                            w = max(w, link)
                # Bound: the pairs still to come cost at least the cheapest link each.
                rest, have = left - n, count - left + n
                bound = total + extra + (rest * have + rest * (rest - 1) // 2) * self.cheapest_link
                if w > best[0] or (w == best[0] and bound > best[1]):
                    continue
                taken[position] = n
                visit(position + 1, left - n, w, total + extra)
                taken[position] = 0

        visit(0, count, 0, 0)
        sets = [
            _mask(g for p, n in enumerate(split) for g in avail[present[p]][:n]) for split in found
        ]
        return int(best[0]), int(best[1]), sets

    def linked(
        self, *, free: int, eligible: int, count: int
    ) -> tuple[tuple[int, ...], int, str] | None:
        """The set for ``count`` whole cards among ``eligible`` (a subset of ``free``), with its
        summed cost and dearest link; None when there are not enough eligible GPUs."""
        key = (free, eligible, count)
        known = self._linked.get(key, _UNKNOWN)
        if known is not _UNKNOWN:
            return known
        answer: tuple[tuple[int, ...], int, str] | None = None
        if eligible.bit_count() >= count:
            _, total, sets = self._cheapest(eligible, count)
            chosen = min(sets, key=lambda s: self._leaves_behind(free & ~s, s))
            ids = _bits(chosen)
            answer = (ids, total, self.worst_link(ids))
        if len(self._linked) >= _MEMO_LIMIT:
            self._linked.clear()
        self._linked[key] = answer
        return answer

    def _leaves_behind(self, free: int, taken: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        """Tie-break among equally cheap sets: least fragmentation left, then the largest free
        subtrees kept whole (sizes, largest first, compared as a sequence), then lowest ids."""
        intact: list[int] = []
        at = 0
        while at < len(self.subtrees):
            mask, size, after = self.subtrees[at]
            if mask & free == mask:
                intact.append(size)
                at = after  # a whole free subtree: its parts are not counted again
            else:
                at += 1
        intact.sort(reverse=True)
        return self.fragmentation(free, self.block_sizes), tuple(-s for s in intact), _bits(taken)

    # -- what a free set can still offer ------------------------------------------------

    def reach(self, free: int) -> tuple[int, ...]:
        """Per block size (``block_sizes``), the dearest-link cost of the best set the free GPUs
        still hold; ``UNREACHABLE`` when fewer GPUs than the size are free."""
        known = self._reach.get(free)
        if known is None:
            costs = []
            for size in self.block_sizes:
                if free.bit_count() < size:
                    costs.append(UNREACHABLE)
                    continue
                worst, _, _ = self._cheapest(free, size)
                costs.append(worst)
            known = tuple(costs)
            if len(self._reach) >= _MEMO_LIMIT:
                self._reach.clear()
            self._reach[free] = known
        return known

    def stranded(self, free: int) -> int:
        """Free GPUs that a block of each size cannot use because too few are free, summed."""
        count = free.bit_count()
        return sum(count for size in self.block_sizes if count < size)

    # -- fragmentation -------------------------------------------------------------------

    def pools(self, size: int) -> list[int]:
        """Maximal groups of GPUs whose links are all at most the best level for ``size``: a free
        GPU is usable for ``size`` exactly when some pool holds ``size`` free GPUs with it."""
        known = self._pools.get(size)
        if known is None:
            limit = self.best(size)[0]
            adjacent = [
                _mask(j for j in range(self.count) if j != i and self.costs[i][j] <= limit)
                for i in range(self.count)
            ]
            known = [c for c in _maximal_cliques(adjacent, self.all) if c.bit_count() >= size]
            self._pools[size] = known
        return known

    def fragmentation(self, free: int, sizes: tuple[int, ...]) -> int:
        key = (free, sizes)
        known = self._fragmentation.get(key)
        if known is not None:
            return known
        free_count = free.bit_count()
        stranded = 0
        for size in sizes:
            if size < 1 or size > free_count:
                continue
            usable = 0
            for pool in self.pools(size):
                inside = pool & free
                if inside.bit_count() >= size:
                    usable |= inside
            stranded += free_count - usable.bit_count()
        if len(self._fragmentation) >= _MEMO_LIMIT:
            self._fragmentation.clear()
        self._fragmentation[key] = stranded
        return stranded


@functools.lru_cache(maxsize=256)
def _plan_for(topology: GpuTopology) -> _TopologyPlan:
    return _TopologyPlan(topology)


class TopologyTree:
    """One node's GPUs: the shared plan of its topology plus what is free on each card.

    State is three things: free cores (0..100) and free memory per GPU, and the mask of whole
    free GPUs (all cores and all memory free), which is what the linked and single policies and
    the inner nodes' free counts look at.
    """

    __slots__ = ("_cores", "_free", "_memory", "_memory_total", "_plan", "_topology")

    def __init__(
        self,
        *,
        topology: GpuTopology,
        plan: _TopologyPlan,
        memory_total: tuple[int, ...],
        cores: list[int],
        memory: list[int],
        free: int,
    ) -> None:
        self._topology = topology
        self._plan = plan
        self._memory_total = memory_total
        self._cores = cores
        self._memory = memory
        self._free = free

    @classmethod
    def build(cls, topology: GpuTopology, *, memory_mib: Sequence[int]) -> TopologyTree:
        """An empty node: every GPU free. ``memory_mib`` is each card's memory (0 = unknown)."""
        if topology.count == 0:
            raise ValueError("a topology tree needs at least one GPU")
        if len(memory_mib) != topology.count:
            raise ValueError(f"memory_mib has {len(memory_mib)} entries for {topology.count} GPUs")
        if any(m < 0 for m in memory_mib):
            raise ValueError(f"GPU memory cannot be negative: {list(memory_mib)}")
        totals = tuple(memory_mib)
        return cls(
            topology=topology,
            plan=_plan_for(topology),
            memory_total=totals,
            cores=[WHOLE_CARD] * topology.count,
            memory=list(totals),
            free=(1 << topology.count) - 1,
        )

    def copy(self) -> TopologyTree:
        """An independent tree with the same state (the plan is shared): for what-if questions."""
        return TopologyTree(
            topology=self._topology,
            plan=self._plan,
            memory_total=self._memory_total,
            cores=self._cores.copy(),
            memory=self._memory.copy(),
            free=self._free,
        )

    # -- the tree and its state ----------------------------------------------------------

    @property
    def topology(self) -> GpuTopology:
        return self._topology

    @property
    def count(self) -> int:
        return self._plan.count

    @property
    def root(self) -> TreeNode:
        return self._plan.root

    def free_below(self, node: TreeNode) -> int:
        """Whole free GPUs in ``node``'s subtree."""
        return (node.mask & self._free).bit_count()

    def free_gpus(self) -> list[int]:
        """GPUs with all cores and all memory free."""
        return list(_bits(self._free))

    def gpu_state(self, gpu: int) -> tuple[int, int]:
        """(free cores in hundredths, free memory in MiB) of one GPU."""
        self._check_ids((gpu,))
        return self._cores[gpu], self._memory[gpu]

    def take(self, allocation: GpuAllocation) -> None:
        """Apply an allocation; raises ValueError, changing nothing, when it does not fit."""
        ids, cores, memory = self._check_allocation(allocation)
        for g in ids:
            if cores == WHOLE_CARD:
                if not self._free >> g & 1:
                    raise ValueError(f"GPU{g} is not free: a whole card must be entirely unused")
            elif self._cores[g] < cores or self._memory[g] < memory:
                raise ValueError(
                    f"GPU{g} has {self._cores[g]} hundredths and {self._memory[g]} MiB free; "
                    f"the allocation needs {cores} and {memory} MiB"
                )
        for g in ids:
            if cores == WHOLE_CARD:
                self._cores[g], self._memory[g] = 0, 0
            else:
                self._cores[g] -= cores
                self._memory[g] -= memory
            self._update_free(g)

    def release(self, allocation: GpuAllocation) -> None:
        """Undo ``take``; raises ValueError, changing nothing, for what was not taken."""
        ids, cores, memory = self._check_allocation(allocation)
        for g in ids:
            if cores == WHOLE_CARD:
                if self._cores[g] or self._memory[g]:
                    raise ValueError(f"GPU{g} is not taken as a whole card")
            elif (
                self._cores[g] + cores > WHOLE_CARD
                or self._memory[g] + memory > self._memory_total[g]
            ):
                raise ValueError(
                    f"GPU{g} would have more than its {WHOLE_CARD} hundredths or "
                    f"{self._memory_total[g]} MiB free: that much was not taken"
                )
        for g in ids:
            if cores == WHOLE_CARD:
                self._cores[g], self._memory[g] = WHOLE_CARD, self._memory_total[g]
            else:
                self._cores[g] += cores
                self._memory[g] += memory
            self._update_free(g)

    def _update_free(self, g: int) -> None:
        if self._cores[g] == WHOLE_CARD and self._memory[g] == self._memory_total[g]:
            self._free |= 1 << g
        else:
            self._free &= ~(1 << g)

    def _check_allocation(self, allocation: GpuAllocation) -> tuple[tuple[int, ...], int, int]:
        ids = allocation.gpu_ids
        self._check_ids(ids)
        if len(set(ids)) != len(ids):
            raise ValueError(f"an allocation names a GPU twice: {ids}")
        if not 0 <= allocation.cores_per_gpu <= WHOLE_CARD or allocation.memory_per_gpu_mib < 0:
            raise ValueError(
                f"an allocation gives 0..{WHOLE_CARD} hundredths and some MiB per GPU, not "
                f"{allocation.cores_per_gpu} and {allocation.memory_per_gpu_mib} MiB"
            )
        return ids, allocation.cores_per_gpu, allocation.memory_per_gpu_mib

    def _check_ids(self, ids: Iterable[int]) -> None:
        for g in ids:
            if not 0 <= g < self.count:
                raise ValueError(f"GPU{g} does not exist: this node has GPU0..GPU{self.count - 1}")

    # -- policies ------------------------------------------------------------------------

    def allocate(self, request: GpuRequest) -> GpuAllocation | None:
        """The allocation for ``request`` (linked, single or shared by its size), or None when the
        node cannot hold it. Decides only: ``take`` applies the answer."""
        if request.cores < WHOLE_CARD:
            return self._shared(request.cores, request.memory_mib)
        eligible = self._free
        if request.memory_mib:
            eligible &= _mask(
                g for g in range(self.count) if self._memory_total[g] >= request.memory_mib
            )
        answer = self._plan.linked(free=self._free, eligible=eligible, count=request.cards)
        if answer is None:
            return None
        ids, total, worst = answer
        return GpuAllocation(
            gpu_ids=ids,
            cores_per_gpu=WHOLE_CARD,
            memory_per_gpu_mib=min(self._memory_total[g] for g in ids),
            cost=total,
            worst_link=worst,
        )

    def allocate_linked(self, count: int) -> tuple[int, ...] | None:
        """``count`` whole free GPUs with the cheapest links (ties: least fragmentation left,
        largest free subtrees kept, lowest ids); None when fewer are free."""
        if count < 1:
            raise ValueError(f"ask for at least one GPU, not {count}")
        answer = self._plan.linked(free=self._free, eligible=self._free, count=count)
        return None if answer is None else answer[0]

    def allocate_single(self) -> int | None:
        """One whole free GPU, chosen to leave the most 2/4/8-GPU blocks usable."""
        answer = self._plan.linked(free=self._free, eligible=self._free, count=1)
        return None if answer is None else answer[0][0]

    def allocate_shared(self, cores: int, memory_mib: int) -> int | None:
        """The GPU for a share of ``cores`` hundredths and ``memory_mib`` MiB (0: the same
        fraction of the card's memory), by best fit; None when no card has room for both."""
        if not 1 <= cores < WHOLE_CARD:
            raise ValueError(f"a share is 1..{WHOLE_CARD - 1} hundredths of a card, not {cores}")
        if memory_mib < 0:
            raise ValueError(f"GPU memory cannot be negative: {memory_mib} MiB")
        answer = self._shared(cores, memory_mib)
        return None if answer is None else answer.gpu_ids[0]

    def _share_memory(self, gpu: int, cores: int, memory_mib: int) -> int:
        if memory_mib:
            return memory_mib
        # Rounded down, so that shares adding up to a whole card fit in it (50 + 30 + 20).
        return self._memory_total[gpu] * cores // WHOLE_CARD

    def _shared(self, cores: int, memory_mib: int) -> GpuAllocation | None:
        best: tuple[float, int, int] | None = None
        whole: dict[int, int] = {}  # card memory -> mask of whole free cards that fit
        for g in range(self.count):
            need = self._share_memory(g, cores, memory_mib)
            if self._cores[g] < cores or self._memory[g] < need:
                continue
            if self._free >> g & 1:
                whole[self._memory_total[g]] = whole.get(self._memory_total[g], 0) | 1 << g
                continue
            total = self._memory_total[g]
            room = (self._cores[g] - cores) / WHOLE_CARD + (
                (self._memory[g] - need) / total if total else 0.0
            )
            key = (room, self._cores[g] - cores, g)
            if best is None or key < best:
                best = key
        if best is not None:
            gpu = best[2]
        elif whole:
            # Break the smallest whole card that fits, placed like a single whole card.
            answer = self._plan.linked(free=self._free, eligible=whole[min(whole)], count=1)
            if answer is None:  # cannot happen: the mask holds a GPU that fits
                return None
            gpu = answer[0][0]
        else:
            return None
        return GpuAllocation(
            gpu_ids=(gpu,),
            cores_per_gpu=cores,
            memory_per_gpu_mib=self._share_memory(gpu, cores, memory_mib),
            cost=0,
            worst_link=SELF,
        )

    # -- what an allocation costs the node's future ----------------------------------------

    @property
    def free_mask(self) -> int:
        """Bit i set: GPU i is a whole free card."""
        return self._free

    def free_after(self, allocation: GpuAllocation) -> int:
        """The mask of whole free GPUs once ``allocation`` is taken (a share breaks its card)."""
        return self._free & ~_mask(allocation.gpu_ids)

    def capability_loss(self, allocation: GpuAllocation, reference: Mapping[int, int]) -> int:
        """What taking ``allocation`` takes away from larger jobs that come later, in link cost.

        A node's capability for a block of k GPUs is worth ``reference[k] - reach`` when it can
        still offer k GPUs whose dearest link costs ``reach``, below ``reference[k]``, the cost a
        k-GPU job would pay on a typical node of the cluster (the caller's figure, e.g. the
        median best level over its nodes); otherwise nothing. The loss is the drop of that worth
        summed over the block sizes larger than the allocation: an NVSwitch board that gives two
        cards to a 2-GPU job loses its 8-GPU capability (worth SYS minus NV12 on a cluster of
        PCIe servers); a PCIe server that gives away a PIX pair loses nothing a job could not
        find elsewhere. Sizes up to the allocation's own are left out: such jobs fit in many
        places, and counting them would keep placements from filling a node up."""
        plan = self._plan
        before = plan.reach(self._free)
        after = plan.reach(self.free_after(allocation))
        cards = len(allocation.gpu_ids) if allocation.whole_cards else 0
        loss = 0
        for size, was, now in zip(plan.block_sizes, before, after, strict=True):
            if size <= cards:
                continue
            typical = reference.get(size, UNREACHABLE)
            loss += max(0, typical - was) - max(0, typical - now)
        return loss

    def fragmentation_delta(self, allocation: GpuAllocation) -> int:
        """Change in the node's fragmentation if ``allocation`` is taken, counting also the free
        GPUs stranded because fewer than a block's size remain (the cluster-level view: across
        nodes that count differs; within one node it does not)."""
        plan, sizes = self._plan, self._plan.block_sizes
        after = self.free_after(allocation)
        return (
            plan.fragmentation(after, sizes)
            + plan.stranded(after)
            - plan.fragmentation(self._free, sizes)
            - plan.stranded(self._free)
        )

    def core_share_used(self) -> float:
        """Share of the node's GPU cores in use (0 empty .. 1 full)."""
        return 1.0 - sum(self._cores) / (WHOLE_CARD * self.count)

    # -- metrics -------------------------------------------------------------------------

    def set_cost(self, ids: Sequence[int]) -> int:
        """Communication cost of a set: ``link_cost`` summed over its pairs (0 for one GPU)."""
        self._check_ids(ids)
        return self._plan.set_cost(ids)

    def worst_link(self, ids: Sequence[int]) -> str:
        """The dearest link label inside a set ("X" for one GPU)."""
        self._check_ids(ids)
        return self._plan.worst_link(ids)

    def best_cost(self, count: int) -> int:
        """The dearest-link cost of the cheapest ``count``-set on this node when it is empty."""
        if not 1 <= count <= self.count:
            raise ValueError(f"this node has {self.count} GPUs; cannot place {count}")
        return self._plan.best(count)[0]

    def best_possible_level(self, count: int) -> str:
        """The dearest link of the cheapest ``count``-set on this node when it is empty: the
        best link level the node can offer a ``count``-GPU job."""
        if not 1 <= count <= self.count:
            raise ValueError(f"this node has {self.count} GPUs; cannot place {count}")
        return self._plan.best(count)[2]

    def fragmentation(self, sizes: Sequence[int] = DEFAULT_BLOCK_SIZES) -> int:
        """Free whole GPUs that no ``k``-GPU request at the node's best level for ``k`` could use,
        summed over ``sizes``; sizes above the number of free GPUs are left out."""
        return self._plan.fragmentation(self._free, tuple(sizes))

    def cpu_cores_for(self, ids: Sequence[int]) -> tuple[int, ...]:
        """The CPU cores nearest to the given GPUs (union, sorted); empty when not known."""
        self._check_ids(ids)
        return tuple(sorted({core for g in ids for core in self._topology.cpu_affinity[g]}))


__all__ = [
    "DEFAULT_BLOCK_SIZES",
    "UNREACHABLE",
    "GpuAllocation",
    "GpuRequest",
    "TopologyTree",
    "TreeNode",
]
