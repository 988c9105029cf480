"""Gaia: an enterprise container cloud on Kubernetes.

The package is laid out by concern (see ARCHITECTURE.md): ``api`` and ``console`` face users,
``controllers`` run the reconcile loops, ``domain`` and ``scheduler`` hold pure rules, ``store``
owns persistence and ``providers`` talk to clusters.
"""

__version__ = "0.1.0"
