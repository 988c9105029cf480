"""What the provider's caches keep of each object: the informers' transforms, applied on receipt.

The provider caches every pod, node and event of a cluster (``informer``), not only Gaia's: a
node's allocation counts every pod bound to it. As the API server sends them, most of those bytes
are never read. Each transform here returns a smaller copy that still holds every field a reader
of that kind uses, and is listed beside the readers it serves, so that a new reader of a field
adds the field here:

- **every kind**: ``metadata.managedFields`` goes (server-side apply's field ownership; read by
  no one here: the provider writes with ``force`` and checks ownership by label). On a pod that a
  kubelet or KWOK updates it is two or three entries of nested field sets, a third of the pod.
- **Gaia's pods** (``app.kubernetes.io/managed-by: gaia``): everything else stays, since
  ``instances.instance_from_pod`` reads the status, ``pods.recreate_manifest`` copies the whole
  spec back and ``pods.image_patch`` the containers.
- **other pods** (the cluster's own, other tools'): what ``nodes.node_from_k8s`` and
  ``gaia.kube.resources.pod_requests`` read to count a node's allocation (the node, the
  containers' and init containers' ``resources`` and ``restartPolicy``, the pod's ``resources``
  and ``overhead``, the phase) and the metadata that names it (labels and annotations too: the
  annotations carry the GPU ids and the annotated resources); ``env``, ``command``, volumes,
  probes and the container statuses go. The pod ``kubectl.kubernetes.io/last-applied-configuration``
  annotation (a whole copy of the manifest) goes too.
- **nodes**: ``status.images`` (every image on the node with its size: up to 50 entries, the
  largest part of a real node) goes; ``gaia.kube.nodes`` reads capacity, allocatable, conditions,
  addresses, labels, annotations, ``spec.unschedulable`` and the daemon endpoints.
- **events**: only what ``events.event_from_k8s``, the FailedMount watch and
  ``recorder.is_batch_event`` read.
"""

from __future__ import annotations

from typing import Any

from gaia.kube.labels import MANAGED_BY, MANAGED_BY_LABEL

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_CONTAINER_KEPT = ("name", "resources", "restartPolicy")
_POD_SPEC_KEPT = ("nodeName", "resources", "overhead", "schedulerName")
_EVENT_KEPT = (
    "apiVersion",
    "kind",
    "regarding",
    "involvedObject",
    "note",
    "message",
    "reason",
    "type",
    "series",
    "eventTime",
    "lastTimestamp",
    "deprecatedLastTimestamp",
    "firstTimestamp",
    "deprecatedFirstTimestamp",
    "reportingController",
    "reportingComponent",  # core/v1's name for it
)


def _metadata(doc: dict[str, Any]) -> dict[str, Any]:
    meta = dict(doc.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return meta


def kept_pod(doc: dict[str, Any]) -> dict[str, Any]:
    meta = _metadata(doc)
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
        return {**doc, "metadata": meta}
    spec = doc.get("spec") or {}
    kept_spec = {k: spec[k] for k in _POD_SPEC_KEPT if k in spec}
    for which in ("containers", "initContainers"):
        if which in spec:
            kept_spec[which] = [
                {k: c[k] for k in _CONTAINER_KEPT if k in c} for c in spec[which] or []
            ]
    status = doc.get("status") or {}
    out: dict[str, Any] = {"metadata": meta, "spec": kept_spec}
    if "phase" in status:
        out["status"] = {"phase": status["phase"]}
    return out


def kept_node(doc: dict[str, Any]) -> dict[str, Any]:
    out = {**doc, "metadata": _metadata(doc)}
    status = doc.get("status")
    if status and "images" in status:
        out["status"] = {k: v for k, v in status.items() if k != "images"}
    return out


def kept_event(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    out = {k: doc[k] for k in _EVENT_KEPT if k in doc}
    out["metadata"] = {
        k: meta[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in meta
    }
    return out


__all__ = ["kept_event", "kept_node", "kept_pod"]
