"""The ``kubernetes`` provider: real clusters from a kubeconfig, behind the provider port.

``KubernetesCluster`` (``cluster``) is the adapter: lightkube clients on a per-cluster event loop,
informer caches, and the requests. What the requests carry and what the answers mean is decided by
pure functions, one module per object kind, each stating the wire contract it implements:

- ``pods``: the Pod that runs an instance (created bound to its node), the in-place image
  patch, the re-creation for a restart, and what the platform's annotations on a pod say;
- ``instances``: a pod read back as an ``Instance`` (phases, readiness, failures);
- ``nodes``: a Node and its pods as a ``Node`` (the Node itself read by ``gaia.kube.nodes``, the
  reader the scheduler extender shares), and the Node KWOK runs for an added node;
- ``services``, ``configs``, ``quotas``, ``events``: Services with their EndpointSlices,
  ConfigMaps and Secrets, a business's ResourceQuota, Events;
- ``fields``: the checks and field readers those share.

Beside them: ``informer`` (list-and-watch caches, the cluster loop), ``kept`` (what those caches
keep of each object), ``recorder`` (the ``Scheduled`` Events, one per app and batch), ``streams``
(logs and exec), ``usage`` (kubelet resource metrics), ``control_plane`` (API server and etcd
metrics). The Kubernetes vocabulary the provider shares with the extender (quantities, resource
names, label and annotation keys) is ``gaia.kube``.
"""

from gaia.providers.kubernetes.cluster import KubernetesCluster

__all__ = ["KubernetesCluster"]
