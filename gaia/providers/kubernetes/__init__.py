"""The ``kubernetes`` provider: real clusters from a kubeconfig."""

from gaia.providers.kubernetes.cluster import KubernetesCluster
from gaia.providers.kubernetes.kubeconfig import (
    KubeCredentials,
    parse_kubeconfig,
    parse_quantity,
    ssl_context,
)

__all__ = [
    "KubeCredentials",
    "KubernetesCluster",
    "parse_kubeconfig",
    "parse_quantity",
    "ssl_context",
]
