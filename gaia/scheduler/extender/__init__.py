"""The Gaia scheduler as a Kubernetes scheduler extender (``gaia scheduler-extender``).

kube-scheduler places the pods that are not the platform's; configured with this extender it
POSTs each GPU pod's ``filter``, ``prioritize`` and ``bind`` calls here, and the answers come from
the same scheduler port the platform places its own instances with. The rooms, in the order a
call passes them:

- ``server``: the HTTP edge (Starlette), body limits, who may call (loopback only, or mutual TLS,
  or a bearer token), the lock around the stateful scheduler, and ``KubernetesBinder``, the
  API-server side of bind;
- ``protocol``: the wire types of ``k8s.io/kube-scheduler/extender/v1``, read and written as Go
  does;
- ``decisions``: pure filter and prioritize over a pod and its candidate nodes (read with
  ``gaia.kube``, the vocabulary the ``kubernetes`` provider reads its cluster with);
- ``bind``: choosing the cards at bind, recording them on the node (compare-and-swap), binding.

Configuration (``nodeCacheCapable: false``: we keep no cache, so kube-scheduler must send full
Node objects; ``bindVerb`` set, since the bind step is where GPU ids are chosen and accounted)::

    apiVersion: kubescheduler.config.k8s.io/v1
    kind: KubeSchedulerConfiguration
    extenders:
    - urlPrefix: http://127.0.0.1:8888
      filterVerb: filter
      prioritizeVerb: prioritize
      bindVerb: bind
      weight: 1
      nodeCacheCapable: false
      httpTimeout: 30s             # bind reads and writes the API server (default 5s)
      managedResources:            # only pods asking for one of these are sent to us
      - {name: nvidia.com/gpu}
      - {name: tencent.com/vcuda-core}
      - {name: tencent.com/vcuda-memory}
      - {name: gaia.io/gpu-core}
      - {name: gaia.io/gpu-memory}

Beyond loopback (the extender in its own pod, reached over the network) callers must
authenticate, or ``gaia scheduler-extender`` refuses to start. kube-scheduler can present a client
certificate and cannot send a token, so serve mutual TLS::

    gaia scheduler-extender --host 0.0.0.0 --port 8888 \\
        --tls-cert-file /etc/gaia/extender.crt --tls-private-key-file /etc/gaia/extender.key \\
        --client-ca-file /etc/gaia/scheduler-clients-ca.crt

and give kube-scheduler its side (``urlPrefix`` with ``https://``)::

      enableHTTPS: true
      tlsConfig:
        certFile: /etc/kubernetes/extender-client.crt   # signed by the --client-ca-file CA
        keyFile: /etc/kubernetes/extender-client.key
        caFile: /etc/kubernetes/gaia-extender-ca.crt     # signed the extender's certificate

Every connection then needs the client certificate, ``/healthz`` included: probe the port with
``tcpSocket``. ``GAIA_EXTENDER_TOKEN`` (a bearer token on every call but ``/healthz``) is the other
way in, for callers that can send one; it is also enough on its own to listen beyond loopback.

A filter call that carries only node names (a cache-capable configuration) is answered with an
``Error`` that says so.
"""

from gaia.scheduler.extender.bind import Binder, BindFailed, NodeChanged, bind_pod
from gaia.scheduler.extender.decisions import PlacementScheduler, filter_nodes, prioritize_nodes
from gaia.scheduler.extender.protocol import BadExtenderRequest

__all__ = [
    "BadExtenderRequest",
    "BindFailed",
    "Binder",
    "NodeChanged",
    "PlacementScheduler",
    "bind_pod",
    "filter_nodes",
    "prioritize_nodes",
]
