"""The ``kubernetes`` provider: real clusters from a kubeconfig."""

from gaia.providers.kubernetes.cluster import KubernetesCluster

__all__ = ["KubernetesCluster"]
