"""Cluster providers: the ``ClusterProvider`` port and its adapters (``sim``, ``kubernetes``)."""

from gaia.providers.port import ClusterHealth, ClusterProvider, HealthState, NodeSummary

__all__ = ["ClusterHealth", "ClusterProvider", "HealthState", "NodeSummary"]
