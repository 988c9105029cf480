"""Which CPU cores an instance is bound to (``Placement.cpu_ids``), next to its GPUs.

The rule, as kubelet's static CPU manager policy has it, on a node whose cores are known (its
GPUs' CPU affinity is known, from ``nvidia-smi topo -m`` or the sim's node spec):

- an **exclusive** instance (a whole number of cores: ``cpu`` of 1000, 2000 ... millicores)
  gets exactly that many cores, no other exclusive instance on the node gets any of them;
- they are taken first from the cores next to its GPUs (their CPU affinity: the NUMA node of
  the GPUs it got), lowest ids first; when that NUMA node has too few free cores left, the rest
  **spill** to the node's other free cores (lowest ids first). Spilling, not refusing: the
  scheduler chose the GPUs by their links, which matter more to a GPU job than where a few of
  its cores sit, and refusing would strand those GPUs. The placement says where its cores are,
  so nothing is hidden;
- a **fractional** request (0.5 cores, 2.5 cores) or none shares the node's **shared pool**:
  every core no exclusive instance holds, at the time of the placement. A later exclusive
  instance may take a core of that pool (kubelet then shrinks the pool of running pods; a
  bound instance here keeps the set it started with until it is recreated).

A node with too few free cores for an exclusive request does not fit it, whatever its free
millicores say. The cores held exclusively live in ``NodeView.exclusive_cpus``; the controller
rebuilds them each pass from the instances the cluster reports (their ``cpu_ids``), so the
allocation survives a restart of the scheduler. A node whose cores are not known binds nothing
(``cpu_ids`` empty: the instance is not pinned).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gaia.domain.resources import ResourceVector

MILLI = 1000


def is_exclusive(resources: ResourceVector) -> bool:
    """Whole cores are held exclusively; fractions share the pool."""
    return resources.cpu > 0 and resources.cpu % MILLI == 0


def node_cores(capacity_milli: int, known: Iterable[int]) -> tuple[int, ...]:
    """Every core id of a node: 0 .. capacity-1 and any the GPUs' affinity names besides."""
    return tuple(sorted(set(range(capacity_milli // MILLI)) | set(known)))


def free_cores(cores: Sequence[int], taken: Iterable[int]) -> tuple[int, ...]:
    held = set(taken)
    return tuple(c for c in cores if c not in held)


def choose_cores(
    *,
    cores: Sequence[int],
    taken: Iterable[int],
    resources: ResourceVector,
    near: Sequence[int] = (),
) -> tuple[int, ...] | None:
    """The cores to bind an instance of ``resources`` to on a node with ``cores``, of which
    ``taken`` are held exclusively by others; ``near``: the cores next to its GPUs.

    Exclusive requests get exactly their number of cores, near ones first, then the rest
    (None when the node has too few free cores); others get the shared pool (every free core)."""
    free = free_cores(cores, taken)
    if not is_exclusive(resources):
        return free
    want = resources.cpu // MILLI
    if len(free) < want:
        return None
    close = set(near)
    ordered = [c for c in free if c in close] + [c for c in free if c not in close]
    return tuple(sorted(ordered[:want]))


__all__ = ["choose_cores", "free_cores", "is_exclusive", "node_cores"]
