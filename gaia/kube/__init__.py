"""What every part of Gaia that talks to a Kubernetes API server shares: kubeconfig validation,
credentials and their TLS context (the ``kubernetes`` provider, the scheduler extender).
Quantities are parsed by ``gaia.scheduler.extender.decisions.parse_quantity`` (exact, as
upstream)."""

from gaia.kube.kubeconfig import KubeCredentials, parse_kubeconfig, ssl_context

__all__ = ["KubeCredentials", "parse_kubeconfig", "ssl_context"]
