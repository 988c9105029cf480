"""Placement: which node (and which GPUs) an instance goes to, as a pure library (no I/O).

``Scheduler`` (``port``) is the port the controllers call with a ``PlacementRequest`` and a
``ClusterView``. Two implementations: ``ResourceFitScheduler`` (``fit``: first fit from a rotating
start, no topology) and ``GaiaScheduler`` (``placement``: topology-aware GPU allocation on the
resource access cost tree of ``tree``, built from the link matrices and ``nvidia-smi`` readers of
``links``). ``cpus`` chooses the cores an instance is bound to (exactly its whole cores, next to
its GPUs); ``capacity`` answers whether one instance of a shape could ever fit a node of a
cluster (the API refuses shapes that fit none). ``extender`` serves the same port to
kube-scheduler as a scheduler extender, for pods that are not the platform's. The scheduler
imports only the domain (the link-matrix rules live there) and ``gaia.kube`` (the extender's
Kubernetes vocabulary); see ``docs/architecture.md``.
"""

from gaia.scheduler.fit import ResourceFitScheduler
from gaia.scheduler.port import (
    ClusterView,
    NodeView,
    Placement,
    PlacementRequest,
    Scheduler,
    Unschedulable,
)

__all__ = [
    "ClusterView",
    "NodeView",
    "Placement",
    "PlacementRequest",
    "ResourceFitScheduler",
    "Scheduler",
    "Unschedulable",
]
