"""Gaia: an enterprise container cloud on Kubernetes.

The package is laid out by concern, and imports run one way (docs/architecture.md): ``app`` (the
server) over ``console`` and ``api`` (facing users), over ``platform`` (the wiring), over
``controllers`` and ``monitor`` (the loops), over ``providers``, ``node`` and ``scheduler``, over
``store`` (persistence) and ``kube`` (the Kubernetes vocabulary), over ``domain`` (pure rules).
"""

__version__ = "0.1.0"
