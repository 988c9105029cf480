"""Placement: which node (and which GPUs) an instance goes to.

``Scheduler`` is the port the controllers call; ``ResourceFitScheduler`` is the simple
resource-fit implementation. The Gaia scheduler (GPU topology tree, placement policies) replaces
it behind the same port.
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
