"""Gaia's Kubernetes device plugin: shared GPUs as ``gaia.io/gpu-core`` units the kubelet counts,
whole cards as ``nvidia.com/gpu``.

The kubelet learns of the node's cards from this plugin (API v1beta1 over gRPC, stubs generated
from the kubelet's own ``api.proto`` into ``v1beta1/`` by ``scripts/gen-deviceplugin-stubs.sh``)
and asks it, per container, which units to take and what the container needs to use them.

- ``units``: every card is 100 units named after its UUID (and one ``nvidia.com/gpu`` device);
  the kubelet's own accounting is then per card, and a sick card leaves the node's allocatable.
- ``assign``: which pending container the kubelet is allocating for (the API never says), which
  cards it gets (the pod's ``gaia.io/gpu-ids`` from the Gaia scheduler, else the Gaia tree), and
  its limits.
- ``ledger``: what was granted, kept in a file across the plugin's restarts.
- ``server``: the gRPC service, its socket, registration and re-registration when the kubelet
  restarts.

The enforcement of the limits (device nodes, ``NVIDIA_VISIBLE_DEVICES``, MPS) is
``gaia.node.vgpu``'s; the node agent (``gaia.node.agent``) runs the plugin and feeds it the
cards and their health.
"""

from gaia.node.deviceplugin.ledger import Granted, Ledger
from gaia.node.deviceplugin.server import (
    KUBELET_PLUGIN_DIR,
    DevicePluginServer,
    GpuPlugin,
    PodSource,
    ResourceService,
)
from gaia.node.deviceplugin.units import CARD, CORE, RESOURCES, Inventory

__all__ = [
    "CARD",
    "CORE",
    "KUBELET_PLUGIN_DIR",
    "RESOURCES",
    "DevicePluginServer",
    "GpuPlugin",
    "Granted",
    "Inventory",
    "Ledger",
    "PodSource",
    "ResourceService",
]
