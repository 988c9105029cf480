"""The Kubernetes vocabulary Gaia shares between the ``kubernetes`` provider and the scheduler
extender: everything that knows how Kubernetes spells a thing, and nothing that talks to a
cluster.

- ``kubeconfig``: kubeconfig validation, credentials and their TLS context;
- ``quantities``: ``500m``, ``2Gi``, ``1e3`` as exact decimals (as upstream parses them), and the
  roundings into Gaia's integer units;
- ``resources``: resource names (``nvidia.com/gpu``, ``gaia.io/gpu-core``, gpu-manager's) and a
  pod's effective requests as kube-scheduler computes them, in Gaia units;
- ``labels``: every label and annotation key Gaia reads or writes (every ``gaia.io/*`` key is
  defined there once), and the value formats they share (a cpuset list, card ids);
- ``nodes``: the one reader of a Node (capacity, readiness, the GPU facts of its allocatable
  resources and of the ``gaia.io/gpu-topology`` / ``gaia.io/gpu-used`` annotations, with their
  wire forms);
- ``fields`` and ``errors``: typed readers of JSON fields and the one error they raise,
  ``UnreadableObject``, whose message says where and why.

It sits below the providers and the scheduler (``docs/architecture.md``, the layers): it imports
only ``gaia.domain`` (resource vectors; the link-matrix rules, which the sim provider and the
scheduler need as well and so live there).
"""

from gaia.kube.errors import UnreadableObject
from gaia.kube.kubeconfig import KubeCredentials, parse_kubeconfig, ssl_context
from gaia.kube.nodes import KubeNode, NodeGpus, read_node
from gaia.kube.quantities import parse_quantity

__all__ = [
    "KubeCredentials",
    "KubeNode",
    "NodeGpus",
    "UnreadableObject",
    "parse_kubeconfig",
    "parse_quantity",
    "read_node",
    "ssl_context",
]
