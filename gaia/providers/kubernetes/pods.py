"""Pods: the manifest that runs an instance, the patches that change it, and what its
annotations say, as pure functions (``instances`` reads a pod back as an ``Instance``).

Plain dicts in (objects as the API server returns them, JSON-decoded) and out (manifests to send);
no I/O and no client library. Malformed input raises ``InvalidRequest`` naming the object and the
field.

**Instances are bare pods** (no Deployment, no ReplicaSet): the platform owns the restart policy,
placement and GPU ids, so it creates one pod per instance, named ``<app>-<instance id>`` like the
instance, already bound: ``spec.nodeName`` is the node the Gaia scheduler chose, so the pod is
created and bound in one write (no ``binding`` subresource POST, no moment where it exists
unbound) and no scheduler ever sees it, the way a DaemonSet's or a static pod's is. It also names
``schedulerName: gaia-scheduler``, which no scheduler serves: a copy of the manifest without the
node would wait for Gaia rather than be placed by kube-scheduler. The kubelet still admits the pod
(a node that cannot take it fails it with ``OutOfcpu`` and the like, read as the node's doing by
``instances``).

Labels on every pod (the platform's own win over ``InstanceSpec.labels``; keys in
``gaia.kube.labels``):

- ``app.kubernetes.io/managed-by: gaia``: what the provider lists and watches;
- ``gaia.io/app``, ``gaia.io/instance`` (the id as text), ``gaia.io/version`` (the template).

Annotations (added to ``InstanceSpec.annotations``; ours win):

- ``gaia.io/gpu-ids``: the cards, ``"0,1"``; ``gaia.io/cpu-set``: the cores as a cpuset list,
  ``"0-3,8"`` (the same annotations the scheduler extender writes, read by the device plugin);
- ``gaia.io/shape-hash``: 16 hex digits of sha256 over a canonical JSON of everything that
  defines the container except its image: command, args, env, ports, resources, probes, configs,
  network mode. Equal shapes mean an in-place image patch (``image_patch``) is enough;
  ``Instance.shape`` carries it back;
- ``gaia.io/template-hash``: sha256 over the shape hash and the image, so it covers everything
  and can be recomputed from a pod and a new image without the rest of the spec;
- ``kubernetes.io/egress-bandwidth`` (``"<n>M"``, enforced by the CNI bandwidth plugin where it
  is installed) for the bandwidth dimension, and ``gaia.io/cloud-disk`` / ``gaia.io/shared-disk``
  (GiB, accounting only: cloud disks are volumes, not pod resources). Together with the
  container's requests they give back the exact ``ResourceVector`` (``annotated_resources``);
- ``gaia.io/planned-restart``: written by ``image_patch`` when the image changes; the restart
  count the kubelet reaches by restarting the container for the new image. That termination is
  the platform's own doing and is not reported as ``last_failure``;
- ``gaia.io/restarts-before``: written by ``recreate_manifest`` (a restart makes a new pod whose
  containers count from zero); the instance's restarts are this plus the container's count.

**Container** ``main``: requests equal limits (Guaranteed QoS): ``cpu`` ``<n>m``, ``memory``
``<n>Mi``, ``ephemeral-storage`` ``<n>Gi``. GPUs are extended resources (request must equal
limit): whole cards as ``nvidia.com/gpu`` (with ``gaia.io/gpu-memory`` in MiB when GPU memory is
asked for), a share of one card (1..99 hundredths) as ``gaia.io/gpu-core`` + ``gaia.io/gpu-memory``;
more than one card must be whole cards. Probes become ``httpGet`` / ``tcpSocket`` / ``exec`` with
whole seconds rounded up (a probe port of 0 means the first container port; a liveness
``successThreshold`` is always 1, the only value Kubernetes accepts for it). A config with a
``mount_path`` is a read-only ``configMap`` / ``secret`` volume named ``cfg-<name>`` (a DNS label:
cleaned, shortened and given a digest suffix when needed); without, it is ``envFrom``. The host
network mode sets ``hostNetwork`` (with ``dnsPolicy: ClusterFirstWithHostNet``, so the instance
still resolves services); the other modes are the CNI's business.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.kube.labels import (
    APP_LABEL,
    CLOUD_DISK_ANNOTATION,
    CPU_SET_ANNOTATION,
    EGRESS_BANDWIDTH_ANNOTATION,
    GPU_IDS_ANNOTATION,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PLANNED_RESTART_ANNOTATION,
    RESTARTS_BEFORE_ANNOTATION,
    SHAPE_HASH_ANNOTATION,
    SHARED_DISK_ANNOTATION,
    TEMPLATE_HASH_ANNOTATION,
    VERSION_LABEL,
    cpuset,
    gpu_ids_value,
    parse_gpu_ids,
)
from gaia.kube.labels import parse_cpuset as parse_kube_cpuset
from gaia.kube.quantities import ceil_amount, clamp_amount, parse_quantity
from gaia.kube.resources import (
    GAIA_GPU_CORE,
    GAIA_GPU_MEMORY,
    NVIDIA_GPU,
    WHOLE_CARD,
    resource_list,
)
from gaia.providers.kubernetes.fields import (
    DNS_LABEL,
    as_int,
    as_items,
    as_object,
    as_str_map,
    as_text,
    check_dns_label,
    check_dns_subdomain,
    check_ids,
    check_key,
    check_label_value,
    check_port,
    check_port_name,
    from_kube,
    pod_name,
)
from gaia.providers.port import (
    ConfigRef,
    InstanceSpec,
    NetworkMode,
    PortSpec,
    ProbeKind,
    ProbeSpec,
    PullSecret,
)

SCHEDULER_NAME = "gaia-scheduler"
# the platform registry's pull secret in each business namespace (pull_secret_manifest)
PULL_SECRET_NAME = "gaia-registry-pull"  # noqa: S105 (a name)
PULL_SECRET_LABEL = "gaia.io/registry-pull"  # noqa: S105 (a label)
CONTAINER_NAME = "main"
HASH_LENGTH = 16
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_MBIT = 10**6

# ------------------------------------------------------------------------------- hashes


def _digest(doc: Any) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def _probe_doc(probe: ProbeSpec | None) -> dict[str, Any] | None:
    return None if probe is None else dataclasses.asdict(probe)


def shape_hash(spec: InstanceSpec) -> str:
    """The digest of everything that defines the container but its image (``Instance.shape``)."""
    doc = {
        "image": "",
        "command": list(spec.command),
        "args": list(spec.args),
        "env": sorted([k, v] for k, v in spec.env.items()),
        "ports": [[p.port, p.name, p.protocol] for p in spec.ports],
        "resources": spec.resources.as_internal(),
        "liveness": _probe_doc(spec.liveness),
        "readiness": _probe_doc(spec.readiness),
        "configs": [[c.name, c.secret, c.mount_path] for c in spec.configs],
        "network_mode": str(spec.network_mode),
    }
    return _digest(doc)


def template_hash(shape: str, image: str) -> str:
    """The digest of the whole container: its shape hash and its image."""
    return _digest({"shape": shape, "image": image})


# ------------------------------------------------------------------------------- manifests


def _resources(spec: InstanceSpec) -> dict[str, str]:
    r = spec.resources
    out: dict[str, str] = {}
    if r.cpu > 0:
        out["cpu"] = f"{r.cpu}m"
    if r.memory > 0:
        out["memory"] = f"{r.memory}Mi"
    if r.local_disk > 0:
        out["ephemeral-storage"] = f"{r.local_disk}Gi"
    what = f"instance {spec.namespace}/{spec.name}"
    if r.gpu == 0:
        if r.gpu_memory:
            raise InvalidRequest(
                f"{what} asks for {r.gpu_memory} MiB of GPU memory but no GPU; ask for a share "
                "of a card (gpu) too"
            )
        if spec.gpu_ids:
            raise InvalidRequest(f"{what} lists GPU ids {list(spec.gpu_ids)} but asks for no GPU")
        return out
    if r.gpu >= WHOLE_CARD:
        if r.gpu % WHOLE_CARD:
            raise InvalidRequest(
                f"{what} asks for {r.gpu / WHOLE_CARD:g} GPUs: more than one card must be whole "
                "cards (a multiple of 100 hundredths)"
            )
        cards = r.gpu // WHOLE_CARD
        out[NVIDIA_GPU] = str(cards)
    else:
        cards = 1
        out[GAIA_GPU_CORE] = str(r.gpu)
    if r.gpu_memory > 0:
        out[GAIA_GPU_MEMORY] = str(r.gpu_memory)
    if spec.gpu_ids and len(spec.gpu_ids) != cards:
        share = f"{cards} card(s)" if r.gpu >= WHOLE_CARD else "a share of one card"
        raise InvalidRequest(
            f"{what} asks for {share} but lists GPU ids {list(spec.gpu_ids)}: list exactly {cards}"
        )
    return out


def _whole_seconds(value: float, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{what} must be a number of seconds, got {value!r}")
    if value < 0:
        raise InvalidRequest(f"{what} must not be negative, got {value}")
    return max(minimum, math.ceil(value))


def _probe(probe: ProbeSpec, spec: InstanceSpec, which: str) -> dict[str, Any]:
    what = f"the {which} probe of instance {spec.namespace}/{spec.name}"
    port = probe.port
    if probe.kind in (ProbeKind.HTTP, ProbeKind.TCP) and port == 0:
        if not spec.ports:
            raise InvalidRequest(
                f"{what} has no port and the instance exposes none: give the probe a port"
            )
        port = spec.ports[0].port
    out: dict[str, Any]
    if probe.kind == ProbeKind.HTTP:
        check_port(PortSpec(port), what)
        path = probe.path or "/"
        out = {"httpGet": {"path": path if path.startswith("/") else f"/{path}", "port": port}}
    elif probe.kind == ProbeKind.TCP:
        check_port(PortSpec(port), what)
        out = {"tcpSocket": {"port": port}}
    elif probe.kind == ProbeKind.EXEC:
        if not probe.command:
            raise InvalidRequest(f"{what} runs a command but names none")
        out = {"exec": {"command": list(probe.command)}}
    else:
        raise InvalidRequest(f"{what} has unknown kind {probe.kind!r}; use http, tcp or exec")
    for name, value in (
        ("failure_threshold", probe.failure_threshold),
        ("success_threshold", probe.success_threshold),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"{what}: {name} must be a positive integer, got {value!r}")
    out.update(
        initialDelaySeconds=_whole_seconds(
            probe.initial_delay_s, f"{what}: initial_delay_s", minimum=0
        ),
        periodSeconds=_whole_seconds(probe.period_s, f"{what}: period_s", minimum=1),
        timeoutSeconds=_whole_seconds(probe.timeout_s, f"{what}: timeout_s", minimum=1),
        failureThreshold=probe.failure_threshold,
        # Kubernetes accepts only 1 for liveness; one success resets the failure count anyway
        successThreshold=1 if which == "liveness" else probe.success_threshold,
    )
    return out


def _volume_name(ref: ConfigRef, used: set[str]) -> str:
    name = f"cfg-{ref.name}"
    if len(name) <= 63 and DNS_LABEL.match(name) and name not in used:
        return name
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    suffix = hashlib.sha256(f"{ref.secret}:{ref.name}".encode()).hexdigest()[:8]
    return f"{cleaned[: 63 - 9].rstrip('-')}-{suffix}"


def _configs(
    spec: InstanceSpec,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts, envFrom) for the instance's configs."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env_from: list[dict[str, Any]] = []
    used: set[str] = set()
    paths: set[str] = set()
    for ref in spec.configs:
        kind = "secret" if ref.secret else "config"
        check_dns_subdomain(ref.name, f"instance {spec.namespace}/{spec.name}: {kind} name")
        if not ref.mount_path:
            key = "secretRef" if ref.secret else "configMapRef"
            env_from.append({key: {"name": ref.name}})
            continue
        if ref.mount_path in paths:
            raise InvalidRequest(
                f"instance {spec.namespace}/{spec.name} mounts two configs at {ref.mount_path}; "
                "give each its own path"
            )
        paths.add(ref.mount_path)
        volume = _volume_name(ref, used)
        used.add(volume)
        source = (
            {"secret": {"secretName": ref.name}}
            if ref.secret
            else {"configMap": {"name": ref.name}}
        )
        volumes.append({"name": volume, **source})
        mounts.append({"name": volume, "mountPath": ref.mount_path, "readOnly": True})
    return volumes, mounts, env_from


def _container_ports(spec: InstanceSpec) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    names: set[str] = set()
    what = f"instance {spec.namespace}/{spec.name}"
    for port in spec.ports:
        check_port(port, what)
        if (port.port, port.protocol) in seen:
            raise InvalidRequest(f"{what} lists port {port.port}/{port.protocol} twice")
        seen.add((port.port, port.protocol))
        doc: dict[str, Any] = {"containerPort": port.port, "protocol": port.protocol}
        if port.name:
            check_port_name(port.name, what, limit=15)
            if port.name in names:
                raise InvalidRequest(f"{what} names two ports {port.name!r}")
            names.add(port.name)
            doc["name"] = port.name
        out.append(doc)
    return out


def _check_instance(spec: InstanceSpec) -> None:
    check_dns_label(spec.namespace, "namespace")
    if not spec.app:
        raise InvalidRequest("an instance needs an app name")
    check_label_value(spec.app, "app name")
    if isinstance(spec.instance_id, bool) or not isinstance(spec.instance_id, int):
        raise InvalidRequest(f"instance id {spec.instance_id!r} must be an integer")
    if spec.instance_id < 0:
        raise InvalidRequest(f"instance id {spec.instance_id} must not be negative")
    check_dns_subdomain(spec.name, "instance name")
    check_label_value(spec.version, f"instance {spec.namespace}/{spec.name}: version")
    if not spec.image or spec.image != spec.image.strip() or any(c.isspace() for c in spec.image):
        raise InvalidRequest(
            f"instance {spec.namespace}/{spec.name}: image {spec.image!r} must be a non-empty "
            "image reference without spaces"
        )
    check_ids(spec.gpu_ids, f"instance {spec.namespace}/{spec.name}: GPU ids")
    check_ids(spec.cpu_ids, f"instance {spec.namespace}/{spec.name}: CPU ids")
    for key, value in spec.labels.items():
        check_key(key, "label")
        check_label_value(value, f"label {key}:")
    for key in spec.annotations:
        check_key(key, "annotation")
    for name in spec.env:
        if not name or "=" in name:
            raise InvalidRequest(
                f"instance {spec.namespace}/{spec.name}: environment variable name {name!r} must "
                "be non-empty and contain no '='"
            )


def instance_labels(spec: InstanceSpec) -> dict[str, str]:
    """The pod's labels: ``spec.labels`` and the platform's own (which win)."""
    return {
        **spec.labels,
        MANAGED_BY_LABEL: MANAGED_BY,
        APP_LABEL: spec.app,
        INSTANCE_LABEL: str(spec.instance_id),
        VERSION_LABEL: spec.version,
    }


def pod_manifest(spec: InstanceSpec) -> dict[str, Any]:
    """The v1 Pod that runs ``spec``, bound to ``spec.node`` from its creation."""
    _check_instance(spec)
    if not spec.node:
        raise InvalidRequest(f"instance {spec.namespace}/{spec.name} names no node")
    resources = _resources(spec)
    volumes, mounts, env_from = _configs(spec)
    shape = shape_hash(spec)
    annotations = dict(spec.annotations)
    if spec.gpu_ids:
        annotations[GPU_IDS_ANNOTATION] = gpu_ids_value(spec.gpu_ids)
    if spec.cpu_ids:
        annotations[CPU_SET_ANNOTATION] = cpuset(spec.cpu_ids)
    if spec.resources.bandwidth:
        annotations[EGRESS_BANDWIDTH_ANNOTATION] = f"{spec.resources.bandwidth}M"
    if spec.resources.cloud_disk:
        annotations[CLOUD_DISK_ANNOTATION] = str(spec.resources.cloud_disk)
    if spec.resources.shared_disk:
        annotations[SHARED_DISK_ANNOTATION] = str(spec.resources.shared_disk)
    annotations[SHAPE_HASH_ANNOTATION] = shape
    annotations[TEMPLATE_HASH_ANNOTATION] = template_hash(shape, spec.image)

    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.image}
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        container["env"] = [{"name": k, "value": spec.env[k]} for k in sorted(spec.env)]
    if env_from:
        container["envFrom"] = env_from
    ports = _container_ports(spec)
    if ports:
        container["ports"] = ports
    if resources:
        container["resources"] = {"requests": dict(resources), "limits": dict(resources)}
    if spec.liveness is not None:
        container["livenessProbe"] = _probe(spec.liveness, spec, "liveness")
    if spec.readiness is not None:
        container["readinessProbe"] = _probe(spec.readiness, spec, "readiness")
    if mounts:
        container["volumeMounts"] = mounts

    pod_spec: dict[str, Any] = {
        "nodeName": spec.node,
        "schedulerName": SCHEDULER_NAME,
        "restartPolicy": "Always",
        "containers": [container],
    }
    if volumes:
        pod_spec["volumes"] = volumes
    if spec.pull_secret is not None:
        pod_spec["imagePullSecrets"] = [{"name": PULL_SECRET_NAME}]
    if spec.network_mode == NetworkMode.HOST:
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": instance_labels(spec),
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def pull_secret_manifest(namespace: str, secret: PullSecret) -> dict[str, Any]:
    """The namespace's ``kubernetes.io/dockerconfigjson`` Secret for the platform's registry.
    Not labelled as a Gaia config (so the configs API neither lists it nor lets a tenant's
    config of the same name replace it), but as the platform's pull secret."""
    auth = base64.b64encode(f"{secret.username}:{secret.password}".encode()).decode()
    config = {
        "auths": {
            secret.registry: {
                "username": secret.username,
                "password": secret.password,
                "auth": auth,
            }
        }
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": PULL_SECRET_NAME,
            "namespace": namespace,
            "labels": {PULL_SECRET_LABEL: "true"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def image_patch(pod: Mapping[str, Any], *, image: str, version: str) -> dict[str, Any]:
    """A strategic merge patch (``application/strategic-merge-patch+json``) that swaps the main
    container's image in place and records the new version and template hash.

    Only valid when the shapes are equal (``Instance.shape == shape_hash(new spec)``); the pod's
    name, node, IP and GPUs stay. The kubelet restarts the container for the new image; the
    restart count it reaches is written as ``gaia.io/planned-restart`` so that this termination
    is not reported as a failure."""
    meta = as_object(pod.get("metadata"), "Pod.metadata")
    where = pod_name(meta)
    if not image or any(c.isspace() for c in image):
        raise InvalidRequest(f"pod {where}: image {image!r} must be a non-empty reference")
    check_label_value(version, f"pod {where}: version")
    annotations = as_str_map(meta.get("annotations"), f"pod {where}: metadata.annotations")
    shape = annotations.get(SHAPE_HASH_ANNOTATION, "")
    if not shape:
        raise InvalidRequest(
            f"pod {where} has no {SHAPE_HASH_ANNOTATION} annotation: it was not created by Gaia "
            "and cannot be patched in place; replace it"
        )
    status = as_object(pod.get("status"), f"pod {where}: status")
    container_name, container = main_container(pod, where)
    main = main_status(status, container_name, where)
    restarts = as_int(main.get("restartCount"), f"pod {where}: restartCount") if main else 0
    patch_annotations = {TEMPLATE_HASH_ANNOTATION: template_hash(shape, image)}
    if container.get("image") != image:
        # the kubelet restarts the container only when the image changes
        patch_annotations[PLANNED_RESTART_ANNOTATION] = str(restarts + 1)
    return {
        "metadata": {"labels": {VERSION_LABEL: version}, "annotations": patch_annotations},
        "spec": {"containers": [{"name": CONTAINER_NAME, "image": image}]},
    }


_SERVER_SET = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "managedFields",
    "ownerReferences",
)


def recreate_manifest(pod: Mapping[str, Any], *, restarts: int) -> dict[str, Any]:
    """The pod as it was created, to create again for a restart: what the server set removed,
    still bound to the same node (``spec.nodeName`` stays: one write, as at creation),
    ``restarts`` (the instance's count so far plus this restart) carried in
    ``gaia.io/restarts-before``, since a new pod's containers count from zero. The old pod's
    planned image restart is dropped with its container."""
    meta = as_object(pod.get("metadata"), "Pod.metadata")
    where = pod_name(meta)
    if restarts < 0:
        raise InvalidRequest(f"pod {where}: a restart count cannot be negative")
    fresh = {k: v for k, v in meta.items() if k not in _SERVER_SET}
    annotations = dict(as_str_map(meta.get("annotations"), f"pod {where}: metadata.annotations"))
    annotations.pop(PLANNED_RESTART_ANNOTATION, None)
    annotations[RESTARTS_BEFORE_ANNOTATION] = str(restarts)
    fresh["annotations"] = annotations
    spec = {k: v for k, v in as_object(pod.get("spec"), f"pod {where}: spec").items()}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": fresh, "spec": spec}


def main_container(pod: Mapping[str, Any], where: str) -> tuple[str, Mapping[str, Any]]:
    spec = as_object(pod.get("spec"), f"pod {where}: spec")
    containers = as_items(spec.get("containers"), f"pod {where}: spec.containers")
    if not containers:
        raise InvalidRequest(f"pod {where} has no containers")
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            return CONTAINER_NAME, container
    first = containers[0]
    return as_text(first.get("name"), f"pod {where}: container name"), first


def main_status(status: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any] | None:
    for cs in as_items(status.get("containerStatuses"), f"pod {where}: status.containerStatuses"):
        if cs.get("name") == name:
            return cs
    return None


def amounts_of(doc: Any, what: str) -> dict[str, Decimal]:
    """The amounts of a ``ResourceList`` that Gaia counts (``gaia.kube.resources``)."""
    return from_kube(lambda: resource_list(doc, what))


def _annotation_amount(annotations: Mapping[str, str], key: str, where: str) -> int:
    raw = annotations.get(key)
    if raw is None or raw == "":
        return 0
    value = from_kube(lambda: parse_quantity(raw), f"{where}: annotation {key}")
    if key == EGRESS_BANDWIDTH_ANNOTATION:
        value = value / _MBIT  # bits per second -> Mbit/s
    return clamp_amount(ceil_amount(value))


def annotation_count(annotations: Mapping[str, str], key: str, where: str) -> int:
    raw = annotations.get(key, "0").strip()
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidRequest(f"{where}: annotation {key} must be a whole number, got {raw!r}")
    return int(raw)


def annotated_resources(annotations: Mapping[str, str], where: str) -> dict[str, int]:
    return {
        "bandwidth": _annotation_amount(annotations, EGRESS_BANDWIDTH_ANNOTATION, where),
        "cloud_disk": _annotation_amount(annotations, CLOUD_DISK_ANNOTATION, where),
        "shared_disk": _annotation_amount(annotations, SHARED_DISK_ANNOTATION, where),
    }


def card_ids(raw: str | None, what: str) -> tuple[int, ...]:
    if not raw:
        return ()
    try:
        return parse_gpu_ids(raw)
    except ValueError:
        raise InvalidRequest(f"{what} {raw!r} must be card indexes separated by commas") from None


def parse_cpuset(raw: str) -> tuple[int, ...]:
    """A Linux cpuset list as core ids (``gaia.kube.labels.parse_cpuset``), refused as a
    request error."""
    try:
        return parse_kube_cpuset(raw)
    except ValueError as exc:
        raise InvalidRequest(f"cpuset: {exc}") from None
