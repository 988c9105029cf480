"""Every label and annotation key Gaia reads or writes on Kubernetes objects, defined once.

The ``kubernetes`` provider, the scheduler extender, the ``sim`` provider (which labels its
virtual nodes and instances the same way) and the app controller (which names an instance's
labels) all take their keys from here, so that a key is spelt in one place and a grep for
``"gaia.io/`` finds them all. Extended resource names (``gaia.io/gpu-core``) are resources, not
keys: ``gaia.kube.resources``.

Who writes what (the wire contract; the modules that write them say more):

========================== ======== ==============================================================
key                        on       meaning
========================== ======== ==============================================================
app.kubernetes.io/         pods,    ``gaia``: the platform manages it (what the provider lists and
managed-by                 more     watches)
gaia.io/app                pods,    the app; a service selects its instances by it
                           services
gaia.io/instance           pods     the instance id, as text
gaia.io/version            pods     the template (version) the instance runs
gaia.io/shape-hash         pods     digest of the container but its image (in-place upgrades)
gaia.io/template-hash      pods     digest of the shape hash and the image
gaia.io/gpu-ids            pods     the cards, ``"0,1"`` (written at bind; the device plugin reads)
gaia.io/cpu-set            pods     the cores, a cpuset list ``"0-3,8"`` (written at bind)
gaia.io/gpu-model          pods,    the GPU model a pod asks for (annotation); a node's model
                           nodes    (label, written by the node agent as GPU feature discovery
                                    writes its own: ``NVIDIA-H100-80GB-HBM3``; else
                                    ``nvidia.com/gpu.product``)
gaia.io/gpu-link           pods     the loosest link allowed between a pod's cards
gaia.io/gpu-count          nodes    the number of cards (a label of the sim's virtual nodes)
gaia.io/gpu-topology       nodes    the ``nvidia-smi topo -m`` matrix as JSON (``gaia.kube.nodes``)
gaia.io/gpu-used           nodes    per card, what extender-bound pods hold (``gaia.kube.nodes``)
gaia.io/gpu-health         nodes    the unhealthy cards and why, JSON (the node agent writes,
                                    ``gaia.kube.nodes`` reads: nothing new goes on them)
gaia.io/gpu-numa           nodes    per card its NUMA node and nearest cores, JSON (the node
                                    agent writes; pinned instances get those cores)
gaia.io/gpu-memory-used    nodes    per card, MiB its processes hold as NVML sees them (the node
                                    agent writes, with hysteresis; for people and alerts)
gaia.io/bandwidth          nodes    the node's bandwidth in Mbit/s
gaia.io/cloud-disk,        pods     GiB of cloud and shared disk (accounting only)
gaia.io/shared-disk
gaia.io/planned-restart    pods     the restart an in-place image patch causes (not a failure)
gaia.io/restarts-before    pods     restarts of the instance's earlier pods
gaia.io/domain             services the service's domain name
kubernetes.io/             pods     egress bandwidth for the CNI bandwidth plugin, ``"<n>M"``
egress-bandwidth
sim.gaia.io/profile        pods     the workload profile the sim provider plays
========================== ======== ==============================================================
"""

from __future__ import annotations

from collections.abc import Iterable

# The platform's own labels, on everything it creates.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gaia"
APP_LABEL = "gaia.io/app"
INSTANCE_LABEL = "gaia.io/instance"
VERSION_LABEL = "gaia.io/version"
# node label: the underlay subnet of the node (CIDR, "/" written as "_": label values allow no
# "/"), which floating-IP pools are matched against (docs/network.md)
SUBNET_LABEL = "gaia.io/subnet"

# Pods: the container's digests, and what the provider needs to read an instance back.
SHAPE_HASH_ANNOTATION = "gaia.io/shape-hash"
TEMPLATE_HASH_ANNOTATION = "gaia.io/template-hash"
CLOUD_DISK_ANNOTATION = "gaia.io/cloud-disk"  # GiB
SHARED_DISK_ANNOTATION = "gaia.io/shared-disk"  # GiB
PLANNED_RESTART_ANNOTATION = "gaia.io/planned-restart"  # written by an in-place image patch
RESTARTS_BEFORE_ANNOTATION = "gaia.io/restarts-before"  # written when a pod is made again
EGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/egress-bandwidth"  # the CNI bandwidth plugin's

# Pods: GPUs and cores (written at bind, read by the node side), and what a pod asks for.
GPU_IDS_ANNOTATION = "gaia.io/gpu-ids"
CPU_SET_ANNOTATION = "gaia.io/cpu-set"
GPU_MODEL_ANNOTATION = "gaia.io/gpu-model"  # pod annotation; node label of the same name
GPU_LINK_ANNOTATION = "gaia.io/gpu-link"

# Nodes.
GPU_MODEL_LABEL = GPU_MODEL_ANNOTATION
GPU_COUNT_LABEL = "gaia.io/gpu-count"
GPU_TOPOLOGY_ANNOTATION = "gaia.io/gpu-topology"
GPU_USED_ANNOTATION = "gaia.io/gpu-used"
GPU_HEALTH_ANNOTATION = "gaia.io/gpu-health"  # written by the node agent
GPU_NUMA_ANNOTATION = "gaia.io/gpu-numa"  # written by the node agent
GPU_MEMORY_USED_ANNOTATION = "gaia.io/gpu-memory-used"  # written by the node agent
NODE_BANDWIDTH_ANNOTATION = "gaia.io/bandwidth"  # Mbit/s
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set by NVIDIA GPU feature discovery
ZONE_LABEL = "topology.kubernetes.io/zone"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"  # "fake" makes KWOK run the node

# Services and their EndpointSlices.
DOMAIN_ANNOTATION = "gaia.io/domain"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"

# The workload profile of an instance: the sim provider plays it (metrics, logs); Kubernetes
# ignores it.
PROFILE_ANNOTATION = "sim.gaia.io/profile"

# Events the platform files (``reportingController``).
EVENT_REPORTER = "gaia.io/scheduler"


def cpuset(cpus: Iterable[int]) -> str:
    """Cores as a Linux cpuset list (the ``gaia.io/cpu-set`` value): ``[0, 1, 2, 3, 8]`` ->
    ``"0-3,8"``."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        a, b = ordered[start], ordered[end]
        ranges.append(f"{a}-{b}" if b > a else str(a))
        start = end + 1
    return ",".join(ranges)


MAX_CORES = 65536  # no machine has more; a bigger id is a typo or an attack on memory


def parse_cpuset(raw: str) -> tuple[int, ...]:
    """A Linux cpuset list as core ids, the inverse of ``cpuset``: ``"0-3,8"`` ->
    ``(0, 1, 2, 3, 8)``; empty parts are skipped. ``ValueError`` when it is not one, or names a
    core past ``MAX_CORES``."""
    cores: set[int] = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not (low.isascii() and low.isdigit()) or (
            dash and not (high.isascii() and high.isdigit())
        ):
            raise ValueError(f"{raw!r} is not a cpuset such as 0-3,8")
        a, b = int(low), int(high) if dash else int(low)
        if b < a or b >= MAX_CORES:
            raise ValueError(f"{raw!r} has an empty or oversized range {part!r}")
        cores.update(range(a, b + 1))
    return tuple(sorted(cores))


def gpu_ids_value(ids: Iterable[int]) -> str:
    """Card indexes as the ``gaia.io/gpu-ids`` value: ``(0, 1)`` -> ``"0,1"``."""
    return ",".join(str(i) for i in ids)


def parse_gpu_ids(raw: str) -> tuple[int, ...]:
    """The ``gaia.io/gpu-ids`` value as card indexes, the inverse of ``gpu_ids_value``:
    ``"0,1"`` -> ``(0, 1)``; ``ValueError`` when a part is not a card index."""
    ids = []
    for part in raw.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()):
            raise ValueError(f"{raw!r} is not card indexes separated by commas")
        ids.append(int(part))
    return tuple(ids)
