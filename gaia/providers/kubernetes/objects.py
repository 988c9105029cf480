"""Kubernetes objects <-> the provider port's dataclasses, as pure functions.

Plain dicts in (objects as the API server returns them, JSON-decoded) and out (manifests to send);
no I/O and no client library. The real-Kubernetes provider does the requests; this module decides
what they carry and what the answers mean. Malformed input raises ``InvalidRequest`` naming the
object and the field.

**Instances are bare pods** (no Deployment, no ReplicaSet): the platform owns the restart policy,
placement and GPU ids, so it creates one pod per instance, named ``<app>-<instance id>`` like the
instance, with ``schedulerName: gaia-scheduler`` and no ``nodeName``. No scheduler runs under that
name, so the default kube-scheduler leaves the pod alone; the provider then binds it through the
pod's ``binding`` subresource (``binding_manifest``), to the node the Gaia scheduler chose.

Labels on every pod (the platform's own win over ``InstanceSpec.labels``):

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
  container's requests they give back the exact ``ResourceVector``;
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

**Phases** (``instance_from_pod``), first match wins:

1. ``metadata.deletionTimestamp`` set: ``TERMINATING`` (never ready).
2. The node is lost: ``status.reason`` ``NodeLost``, ``status.phase`` ``Unknown``, a
   ``DisruptionTarget`` condition from the taint manager (``DeletionByTaintManager``) or a
   ``Ready`` condition with reason ``NodeLost``: ``FAILED``, cause ``NODE_LOST``.
3. ``status.phase`` ``Failed`` / ``Succeeded``: ``FAILED``. The cause is ``NODE_LOST`` when the
   node, not the app, ended the pod (``Evicted``, graceful node shutdown, a kubelet admission
   rejection such as ``OutOfcpu``): the platform then reschedules rather than blacklists; else
   the main container's termination, else ``APP_EXIT``.
4. Not bound yet (no ``spec.nodeName``), or no status for the main container yet: ``SCHEDULED``.
5. The main container's state:

   - ``running``: ``RUNNING``, except while an in-place image patch waits for the kubelet
     (``gaia.io/planned-restart`` still ahead of the container's restart count): ``PULLING``,
     not ready, since the old image still runs;
   - ``terminated``: ``FAILED``, cause ``OOM`` for ``OOMKilled``, else ``APP_EXIT`` with the exit
     code (0 included: a service that stops has failed);
   - ``waiting`` ``ErrImagePull`` / ``ImagePullBackOff`` / ``InvalidImageName`` / ...:
     ``FAILED``, ``IMAGE_PULL``; ``CreateContainerConfigError`` (an ``envFrom`` config or secret
     missing): ``FAILED``, ``CONFIG``; ``CrashLoopBackOff``: ``FAILED`` with the last
     termination's cause; ``CreateContainerError`` / ``RunContainerError`` / hook errors:
     ``FAILED``, ``APP_EXIT``;
   - ``waiting`` for anything else (``ContainerCreating``, ``PodInitializing``): ``CREATED``.
     Kubernetes does not tell pulling, mounting and creating apart in the pod; events do
     (``Pulling``, ``FailedMount``), and the provider may refine the phase from them.

``ready`` is the pod's ``Ready`` condition, and false while failed or terminating. A running
container that was restarted reports its ``lastState.terminated`` as ``last_failure`` (cause as
above). A liveness kill looks like any other exit in the pod (``Error``, 137); only the events say
``Unhealthy``. Failure times are stable across reads (the platform records each failure once by
its time): the termination's ``finishedAt``, else the latest condition transition, else the pod's
start or creation time, else the epoch.

**Nodes** (``node_from_k8s``): capacity is ``status.allocatable`` (cpu millicores, memory MiB,
disk GiB, all rounded down; cards from ``nvidia.com/gpu`` or ``gaia.io/gpu-core`` / 100, GPU memory
from ``gaia.io/gpu-memory``; bandwidth from the node annotation ``gaia.io/bandwidth`` in Mbit/s,
10,000 when absent). ``allocated`` sums the effective requests of the given pods bound to the node
and not finished, as kube-scheduler computes them; per-card use comes from their
``gaia.io/gpu-ids``.

**Services** select ``gaia.io/app``; a port without a name is named ``p<port>`` (which reads back
as no name). A service without ports is headless (``clusterIP: None``, which Kubernetes requires
for a port-less service); ``clusterIP`` cannot change in place, so ``service_needs_replace``
tells the provider when to delete and create instead of updating. Endpoints come from the
service's ``discovery.k8s.io/v1`` EndpointSlices.

**Configs** are ConfigMaps; secrets are ``Opaque`` Secrets with base64 ``data``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.providers.port import (
    ClusterEvent,
    ConfigData,
    ConfigRef,
    Endpoint,
    Failure,
    FailureCause,
    Gpu,
    Instance,
    InstancePhase,
    InstanceSpec,
    NetworkMode,
    Node,
    NodeSpec,
    PortSpec,
    ProbeKind,
    ProbeSpec,
    Service,
    ServiceSpec,
)
from gaia.scheduler.extender.decisions import (
    CPU_SET_ANNOTATION,
    GAIA_GPU_CORE,
    GAIA_GPU_MEMORY,
    GPU_IDS_ANNOTATION,
    GPU_MODEL_ANNOTATION,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCES,
    GPU_TOPOLOGY_ANNOTATION,
    NVIDIA_GPU,
    VCUDA_CORE,
    VCUDA_MEMORY,
    VCUDA_MEMORY_BLOCK_MIB,
    ZONE_LABEL,
    BadExtenderRequest,
    ceil_amount,
    clamp_amount,
    cpuset,
    floor_amount,
    parse_quantity,
    pod_requests,
    resources_of,
)
from gaia.scheduler.port import WHOLE_CARD

# ------------------------------------------------------------------------------- constants

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gaia"
APP_LABEL = "gaia.io/app"
INSTANCE_LABEL = "gaia.io/instance"
VERSION_LABEL = "gaia.io/version"
TEMPLATE_HASH_ANNOTATION = "gaia.io/template-hash"
SHAPE_HASH_ANNOTATION = "gaia.io/shape-hash"
SCHEDULER_NAME = "gaia-scheduler"

CONTAINER_NAME = "main"
DOMAIN_ANNOTATION = "gaia.io/domain"  # service
EGRESS_BANDWIDTH_ANNOTATION = "kubernetes.io/egress-bandwidth"  # pod, CNI bandwidth plugin
CLOUD_DISK_ANNOTATION = "gaia.io/cloud-disk"  # pod, GiB
SHARED_DISK_ANNOTATION = "gaia.io/shared-disk"  # pod, GiB
PLANNED_RESTART_ANNOTATION = "gaia.io/planned-restart"  # pod, written by image_patch
RESTARTS_BEFORE_ANNOTATION = "gaia.io/restarts-before"  # pod, written by recreate_manifest
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"  # node: "fake" makes KWOK run it
NODE_BANDWIDTH_ANNOTATION = "gaia.io/bandwidth"  # node, Mbit/s
DEFAULT_NODE_BANDWIDTH_MBPS = 10_000  # NodeSpec's default
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # on EndpointSlices
HASH_LENGTH = 16
CONFIG_SIZE_LIMIT = 1024 * 1024  # bytes of data in one ConfigMap or Secret (etcd's object limit)

_MIB = 2**20
_GIB = 2**30
_MBIT = 10**6
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_POD_RESOURCES = ("cpu", "memory", "ephemeral-storage", *GPU_RESOURCES)

# Waiting reasons of the main container (kubelet's, see pkg/kubelet/images and kuberuntime).
_IMAGE_PULL_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
        "SignatureValidationFailed",
        "ErrImageInspect",
    }
)
_CONFIG_REASONS = frozenset({"CreateContainerConfigError"})
_START_ERROR_REASONS = frozenset(
    {
        "CreateContainerError",
        "RunContainerError",
        "StartError",
        "PreCreateHookError",
        "PreStartHookError",
        "PostStartHookError",
    }
)
# Pod-level reasons for a Failed pod that are the node's doing, not the app's.
_NODE_POD_REASONS = frozenset(
    {
        "NodeLost",
        "Evicted",
        "Terminated",  # graceful node shutdown
        "Shutdown",
        "NodeShutdown",
        "NodeAffinity",
        "NodeName",
        "UnexpectedAdmissionError",
        "Preempting",
    }
)
_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_OBJECT_KINDS = {"Pod": "Instance", "Node": "Node", "Service": "Service"}


# ------------------------------------------------------------------------------- checks


def _check_label_value(value: str, what: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise InvalidRequest(
            f"{what} {value!r} cannot be a Kubernetes label value: use at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )


def _check_key(key: str, what: str) -> None:
    """A label or annotation key: an optional DNS-subdomain prefix, '/', a qualified name."""
    prefix, _, name = key.rpartition("/")
    ok = bool(name) and len(name) <= 63 and _QUALIFIED_NAME.match(name) is not None
    if prefix:
        ok = ok and len(prefix) <= 253 and _DNS_SUBDOMAIN.match(prefix) is not None
    if not ok:
        raise InvalidRequest(
            f"{what} key {key!r} is not a valid Kubernetes key: an optional DNS prefix and '/', "
            "then at most 63 letters, digits, '-', '_' or '.'"
        )


def _check_dns_label(value: str, what: str) -> None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise InvalidRequest(
            f"{what} {value!r} must be a DNS label: at most 63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )


def _check_dns_subdomain(value: str, what: str) -> None:
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise InvalidRequest(
            f"{what} {value!r} must be a DNS subdomain: lowercase letters, digits, '-' and '.', "
            "at most 253 characters, starting and ending with a letter or digit"
        )


def _check_port(port: PortSpec, what: str) -> None:
    if isinstance(port.port, bool) or not isinstance(port.port, int) or not 0 < port.port < 65536:
        raise InvalidRequest(f"{what}: port {port.port!r} must be between 1 and 65535")
    if port.protocol not in _PROTOCOLS:
        raise InvalidRequest(
            f"{what}: protocol {port.protocol!r} of port {port.port} must be one of "
            + ", ".join(_PROTOCOLS)
        )


def _check_port_name(name: str, what: str, *, limit: int) -> None:
    if (
        len(name) > limit
        or not _PORT_NAME.match(name)
        or "--" in name
        or not any(c.isalpha() for c in name)
    ):
        raise InvalidRequest(
            f"{what}: port name {name!r} must be at most {limit} lowercase letters, digits and "
            "single '-', with at least one letter"
        )


def _check_ids(ids: tuple[int, ...], what: str) -> None:
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise InvalidRequest(f"{what} must be non-negative integers, got {i!r}")
    if len(set(ids)) != len(ids):
        raise InvalidRequest(f"{what} {list(ids)} names an id twice")


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


# ------------------------------------------------------------------------------- pods


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
        _check_port(PortSpec(port), what)
        path = probe.path or "/"
        out = {"httpGet": {"path": path if path.startswith("/") else f"/{path}", "port": port}}
    elif probe.kind == ProbeKind.TCP:
        _check_port(PortSpec(port), what)
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
    if len(name) <= 63 and _DNS_LABEL.match(name) and name not in used:
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
        _check_dns_subdomain(ref.name, f"instance {spec.namespace}/{spec.name}: {kind} name")
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
        _check_port(port, what)
        if (port.port, port.protocol) in seen:
            raise InvalidRequest(f"{what} lists port {port.port}/{port.protocol} twice")
        seen.add((port.port, port.protocol))
        doc: dict[str, Any] = {"containerPort": port.port, "protocol": port.protocol}
        if port.name:
            _check_port_name(port.name, what, limit=15)
            if port.name in names:
                raise InvalidRequest(f"{what} names two ports {port.name!r}")
            names.add(port.name)
            doc["name"] = port.name
        out.append(doc)
    return out


def _check_instance(spec: InstanceSpec) -> None:
    _check_dns_label(spec.namespace, "namespace")
    if not spec.app:
        raise InvalidRequest("an instance needs an app name")
    _check_label_value(spec.app, "app name")
    if isinstance(spec.instance_id, bool) or not isinstance(spec.instance_id, int):
        raise InvalidRequest(f"instance id {spec.instance_id!r} must be an integer")
    if spec.instance_id < 0:
        raise InvalidRequest(f"instance id {spec.instance_id} must not be negative")
    _check_dns_subdomain(spec.name, "instance name")
    _check_label_value(spec.version, f"instance {spec.namespace}/{spec.name}: version")
    if not spec.image or spec.image != spec.image.strip() or any(c.isspace() for c in spec.image):
        raise InvalidRequest(
            f"instance {spec.namespace}/{spec.name}: image {spec.image!r} must be a non-empty "
            "image reference without spaces"
        )
    _check_ids(spec.gpu_ids, f"instance {spec.namespace}/{spec.name}: GPU ids")
    _check_ids(spec.cpu_ids, f"instance {spec.namespace}/{spec.name}: CPU ids")
    for key, value in spec.labels.items():
        _check_key(key, "label")
        _check_label_value(value, f"label {key}:")
    for key in spec.annotations:
        _check_key(key, "annotation")
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
    """The v1 Pod that runs ``spec``, unbound (``binding_manifest`` binds it)."""
    _check_instance(spec)
    resources = _resources(spec)
    volumes, mounts, env_from = _configs(spec)
    shape = shape_hash(spec)
    annotations = dict(spec.annotations)
    if spec.gpu_ids:
        annotations[GPU_IDS_ANNOTATION] = ",".join(str(i) for i in spec.gpu_ids)
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
        "schedulerName": SCHEDULER_NAME,
        "restartPolicy": "Always",
        "containers": [container],
    }
    if volumes:
        pod_spec["volumes"] = volumes
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


def binding_manifest(
    namespace: str, name: str, node: str, *, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The body of ``POST /api/v1/namespaces/{namespace}/pods/{name}/binding``; ``annotations``
    are copied onto the pod by the API server in the same write."""
    for value, what in ((namespace, "namespace"), (name, "pod name"), (node, "node name")):
        if not isinstance(value, str) or not value:
            raise InvalidRequest(f"a binding needs a {what}")
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }


def image_patch(pod: Mapping[str, Any], *, image: str, version: str) -> dict[str, Any]:
    """A strategic merge patch (``application/strategic-merge-patch+json``) that swaps the main
    container's image in place and records the new version and template hash.

    Only valid when the shapes are equal (``Instance.shape == shape_hash(new spec)``); the pod's
    name, node, IP and GPUs stay. The kubelet restarts the container for the new image; the
    restart count it reaches is written as ``gaia.io/planned-restart`` so that this termination
    is not reported as a failure."""
    meta = _obj(pod.get("metadata"), "Pod.metadata")
    where = _pod_name(meta)
    if not image or any(c.isspace() for c in image):
        raise InvalidRequest(f"pod {where}: image {image!r} must be a non-empty reference")
    _check_label_value(version, f"pod {where}: version")
    annotations = _str_map(meta.get("annotations"), f"pod {where}: metadata.annotations")
    shape = annotations.get(SHAPE_HASH_ANNOTATION, "")
    if not shape:
        raise InvalidRequest(
            f"pod {where} has no {SHAPE_HASH_ANNOTATION} annotation: it was not created by Gaia "
            "and cannot be patched in place; replace it"
        )
    status = _obj(pod.get("status"), f"pod {where}: status")
    container_name, container = _main_container(pod, where)
    main = _main_status(status, container_name, where)
    restarts = _int(main.get("restartCount"), f"pod {where}: restartCount") if main else 0
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
    unbound (the caller binds it to the same node), ``restarts`` (the instance's count so far
    plus this restart) carried in ``gaia.io/restarts-before``, since a new pod's containers
    count from zero. The old pod's planned image restart is dropped with its container."""
    meta = _obj(pod.get("metadata"), "Pod.metadata")
    where = _pod_name(meta)
    if restarts < 0:
        raise InvalidRequest(f"pod {where}: a restart count cannot be negative")
    fresh = {k: v for k, v in meta.items() if k not in _SERVER_SET}
    annotations = dict(_str_map(meta.get("annotations"), f"pod {where}: metadata.annotations"))
    annotations.pop(PLANNED_RESTART_ANNOTATION, None)
    annotations[RESTARTS_BEFORE_ANNOTATION] = str(restarts)
    fresh["annotations"] = annotations
    spec = {k: v for k, v in _obj(pod.get("spec"), f"pod {where}: spec").items()}
    spec.pop("nodeName", None)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": fresh, "spec": spec}


def kwok_node_manifest(spec: NodeSpec, links: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """A Node for KWOK to run (``kwok.x-k8s.io/node: fake``): the capacity of ``spec`` as
    allocatable, GPUs as ``nvidia.com/gpu`` (+ ``gaia.io/gpu-memory``) with ``links`` as the
    topology annotation, the model as a label, the zone as the well-known label. For clusters
    whose nodes are simulated by KWOK (demos, scale tests); a real node registers itself."""
    _check_dns_subdomain(spec.name, "node name")
    if len(spec.name) > 63:
        raise InvalidRequest(f"node name {spec.name!r} is longer than 63 characters")
    for value, what in (
        (spec.cpu_milli, "cpu_milli"),
        (spec.memory_mib, "memory_mib"),
        (spec.local_disk_gib, "local_disk_gib"),
        (spec.gpus, "gpus"),
        (spec.gpu_memory_mib, "gpu_memory_mib"),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidRequest(f"node {what} must be a non-negative integer, got {value!r}")
    if spec.cpu_milli < 1 or spec.memory_mib < 1:
        raise InvalidRequest("a node needs some cpu_milli and memory_mib")
    if len(links) != spec.gpus:
        raise InvalidRequest(f"the GPU link matrix has {len(links)} rows for {spec.gpus} GPUs")
    labels: dict[str, str] = {}
    for key, text in spec.labels.items():
        _check_key(key, "node label")
        _check_label_value(text, f"node label {key}")
        labels[key] = text
    labels.update({"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux"})
    labels["type"] = "kwok"
    if spec.zone:
        _check_label_value(spec.zone, "node zone")
        labels[ZONE_LABEL] = spec.zone
    annotations = {
        KWOK_NODE_ANNOTATION: "fake",
        NODE_BANDWIDTH_ANNOTATION: str(spec.bandwidth_mbps),
    }
    capacity = {
        "cpu": f"{spec.cpu_milli}m",
        "memory": f"{spec.memory_mib}Mi",
        "ephemeral-storage": f"{spec.local_disk_gib}Gi",
        "pods": "110",
    }
    if spec.gpus:
        capacity[NVIDIA_GPU] = str(spec.gpus)
        if spec.gpu_memory_mib:
            capacity[GAIA_GPU_MEMORY] = str(spec.gpus * spec.gpu_memory_mib)
        if spec.gpu_model:
            _check_label_value(spec.gpu_model, "node gpu_model")
            labels[GPU_MODEL_ANNOTATION] = spec.gpu_model
        annotations[GPU_TOPOLOGY_ANNOTATION] = json.dumps([list(row) for row in links])
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels, "annotations": annotations},
        "spec": {"taints": []},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


# ------------------------------------------------------------------------------- reading


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def _items(value: Any, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{what} must be a list")
    return [_obj(item, f"each of {what}") for item in value]


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    return value


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{what} must be an integer")
    return value


def _str_map(value: Any, what: str) -> dict[str, str]:
    doc = _obj(value, what)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise InvalidRequest(f"{what} must map strings to strings")
    return dict(doc)


def _time(value: Any, what: str) -> dt.datetime | None:
    """An RFC 3339 time (``Time`` or ``MicroTime``) as an aware datetime; None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be an RFC 3339 time string")
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{what} {value!r} is not an RFC 3339 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def _pod_name(meta: Mapping[str, Any]) -> str:
    name = _text(meta.get("name"), "Pod.metadata.name")
    namespace = _text(meta.get("namespace"), "Pod.metadata.namespace")
    return f"{namespace}/{name}" if namespace else name


def _condition(status: Mapping[str, Any], kind: str, where: str) -> Mapping[str, Any] | None:
    for cond in _items(status.get("conditions"), f"{where}: status.conditions"):
        if cond.get("type") == kind:
            return cond
    return None


def _main_container(pod: Mapping[str, Any], where: str) -> tuple[str, Mapping[str, Any]]:
    spec = _obj(pod.get("spec"), f"pod {where}: spec")
    containers = _items(spec.get("containers"), f"pod {where}: spec.containers")
    if not containers:
        raise InvalidRequest(f"pod {where} has no containers")
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            return CONTAINER_NAME, container
    first = containers[0]
    return _text(first.get("name"), f"pod {where}: container name"), first


def _main_status(status: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any] | None:
    for cs in _items(status.get("containerStatuses"), f"pod {where}: status.containerStatuses"):
        if cs.get("name") == name:
            return cs
    return None


def _amounts(doc: Any, what: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for name, raw in _obj(doc, what).items():
        if name not in _POD_RESOURCES:
            continue
        try:
            out[name] = parse_quantity(raw)
        except BadExtenderRequest as exc:
            raise InvalidRequest(f"{what}[{name}]: {exc}") from None
        if out[name] < 0:
            raise InvalidRequest(f"{what}[{name}] must not be negative")
    return out


def _annotation_amount(annotations: Mapping[str, str], key: str, where: str) -> int:
    raw = annotations.get(key)
    if raw is None or raw == "":
        return 0
    try:
        value = parse_quantity(raw)
    except BadExtenderRequest as exc:
        raise InvalidRequest(f"{where}: annotation {key}: {exc}") from None
    if key == EGRESS_BANDWIDTH_ANNOTATION:
        value = value / _MBIT  # bits per second -> Mbit/s
    return clamp_amount(ceil_amount(value))


def _annotation_count(annotations: Mapping[str, str], key: str, where: str) -> int:
    raw = annotations.get(key, "0").strip()
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidRequest(f"{where}: annotation {key} must be a whole number, got {raw!r}")
    return int(raw)


def _annotated_resources(annotations: Mapping[str, str], where: str) -> dict[str, int]:
    return {
        "bandwidth": _annotation_amount(annotations, EGRESS_BANDWIDTH_ANNOTATION, where),
        "cloud_disk": _annotation_amount(annotations, CLOUD_DISK_ANNOTATION, where),
        "shared_disk": _annotation_amount(annotations, SHARED_DISK_ANNOTATION, where),
    }


def _ids(raw: str | None, what: str) -> tuple[int, ...]:
    if not raw:
        return ()
    out = []
    for part in raw.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()):
            raise InvalidRequest(f"{what} {raw!r} must be card indexes separated by commas")
        out.append(int(part))
    return tuple(out)


def parse_cpuset(raw: str) -> tuple[int, ...]:
    """A Linux cpuset list as core ids: ``"0-3,8"`` -> ``(0, 1, 2, 3, 8)``."""
    out: list[int] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not (low.isascii() and low.isdigit()) or (
            dash and not (high.isascii() and high.isdigit())
        ):
            raise InvalidRequest(f"cpuset {raw!r} must be cores and ranges such as 0-3,8")
        a, b = int(low), int(high) if dash else int(low)
        if b < a or b - a > 65536:
            raise InvalidRequest(f"cpuset {raw!r} has an empty or oversized range {part!r}")
        out.extend(range(a, b + 1))
    return tuple(sorted(set(out)))


def _terminated_failure(term: Mapping[str, Any], fallback: dt.datetime, where: str) -> Failure:
    reason = _text(term.get("reason"), f"{where}: terminated.reason")
    message = _text(term.get("message"), f"{where}: terminated.message")
    code = term.get("exitCode")
    exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
    at = _time(term.get("finishedAt"), f"{where}: terminated.finishedAt") or fallback
    if reason == "OOMKilled":
        text = "killed for running out of memory (OOMKilled)"
        cause = FailureCause.OOM
    else:
        text = f"exited with code {exit_code}" if exit_code is not None else "exited"
        if reason:
            text += f" ({reason})"
        cause = FailureCause.APP_EXIT
    if message:
        text += f": {message}"
    return Failure(cause=cause, at=at, message=text, exit_code=exit_code)


def _waiting_message(waiting: Mapping[str, Any], where: str) -> str:
    reason = _text(waiting.get("reason"), f"{where}: waiting.reason")
    message = _text(waiting.get("message"), f"{where}: waiting.message")
    return f"{reason}: {message}" if reason and message else reason or message


def _stable_time(meta: Mapping[str, Any], status: Mapping[str, Any], where: str) -> dt.datetime:
    """The latest condition transition, else the start, else the creation time, else the epoch:
    a time that stays the same until the pod's state changes."""
    times = [
        t
        for cond in _items(status.get("conditions"), f"pod {where}: status.conditions")
        if (t := _time(cond.get("lastTransitionTime"), f"pod {where}: lastTransitionTime"))
    ]
    if times:
        return max(times)
    return (
        _time(status.get("startTime"), f"pod {where}: status.startTime")
        or _time(meta.get("creationTimestamp"), f"pod {where}: metadata.creationTimestamp")
        or _EPOCH
    )


def _node_lost(status: Mapping[str, Any], at: dt.datetime, where: str) -> Failure | None:
    reason = _text(status.get("reason"), f"pod {where}: status.reason")
    message = _text(status.get("message"), f"pod {where}: status.message")
    if reason == "NodeLost" or status.get("phase") == "Unknown":
        return Failure(FailureCause.NODE_LOST, at, message or "the pod's node stopped answering")
    for kind, reasons in (
        ("DisruptionTarget", {"DeletionByTaintManager"}),
        ("Ready", {"NodeLost"}),
    ):
        cond = _condition(status, kind, f"pod {where}")
        if cond is None or _text(cond.get("reason"), f"pod {where}: reason") not in reasons:
            continue
        if kind == "DisruptionTarget" and cond.get("status") != "True":
            continue
        text = _text(cond.get("message"), f"pod {where}: condition message")
        when = _time(cond.get("lastTransitionTime"), f"pod {where}: lastTransitionTime") or at
        return Failure(FailureCause.NODE_LOST, when, text or "the pod's node stopped answering")
    return None


def _container_state(
    cs: Mapping[str, Any], at: dt.datetime, where: str
) -> tuple[InstancePhase, Failure | None]:
    """The phase the main container's status says, and its current failure if it has failed."""
    state = _obj(cs.get("state"), f"{where}: state")
    last = _obj(cs.get("lastState"), f"{where}: lastState")
    last_term = _obj(last.get("terminated"), f"{where}: lastState.terminated")
    previous = _terminated_failure(last_term, at, f"{where}: lastState") if last_term else None
    if state.get("running") is not None:
        return InstancePhase.RUNNING, None
    terminated = _obj(state.get("terminated"), f"{where}: state.terminated")
    if state.get("terminated") is not None:
        return InstancePhase.FAILED, _terminated_failure(terminated, at, f"{where}: state")
    waiting = _obj(state.get("waiting"), f"{where}: state.waiting")
    reason = _text(waiting.get("reason"), f"{where}: waiting.reason")
    message = _waiting_message(waiting, where)
    if reason in _IMAGE_PULL_REASONS:
        return InstancePhase.FAILED, Failure(FailureCause.IMAGE_PULL, at, message)
    if reason in _CONFIG_REASONS:
        return InstancePhase.FAILED, Failure(FailureCause.CONFIG, at, message)
    if reason == "CrashLoopBackOff":
        return InstancePhase.FAILED, previous or Failure(FailureCause.APP_EXIT, at, message)
    if reason in _START_ERROR_REASONS:
        return InstancePhase.FAILED, Failure(FailureCause.APP_EXIT, at, message)
    return InstancePhase.CREATED, None


def _last_termination(
    cs: Mapping[str, Any] | None,
    annotations: Mapping[str, str],
    at: dt.datetime,
    where: str,
) -> Failure | None:
    """The previous container's end, unless it was the restart ``image_patch`` planned."""
    if cs is None:
        return None
    last = _obj(cs.get("lastState"), f"{where}: lastState")
    term = _obj(last.get("terminated"), f"{where}: lastState.terminated")
    if not term:
        return None
    failure = _terminated_failure(term, at, f"{where}: lastState")
    planned = annotations.get(PLANNED_RESTART_ANNOTATION, "")
    restarts = _int(cs.get("restartCount"), f"{where}: restartCount")
    if failure.cause != FailureCause.OOM and planned == str(restarts):
        return None
    return failure


def _instance_state(
    pod: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    main: Mapping[str, Any] | None,
    annotations: Mapping[str, str],
    where: str,
) -> tuple[InstancePhase, Failure | None]:
    at = _stable_time(meta, status, where)
    cwhere = f"pod {where}: container {CONTAINER_NAME}"
    previous = _last_termination(main, annotations, at, cwhere)
    current: tuple[InstancePhase, Failure | None] | None = None
    if main is not None:
        current = _container_state(main, at, cwhere)
    lost = _node_lost(status, at, where)
    if meta.get("deletionTimestamp"):
        failure = lost or (current[1] if current else None) or previous
        return InstancePhase.TERMINATING, failure
    if lost is not None:
        return InstancePhase.FAILED, lost
    pod_phase = _text(status.get("phase"), f"pod {where}: status.phase")
    if pod_phase in _FINISHED_PHASES:
        reason = _text(status.get("reason"), f"pod {where}: status.reason")
        message = _text(status.get("message"), f"pod {where}: status.message")
        text = f"{reason}: {message}" if reason and message else reason or message
        if reason in _NODE_POD_REASONS or reason.startswith("OutOf"):
            return InstancePhase.FAILED, Failure(FailureCause.NODE_LOST, at, text)
        if current is not None and current[1] is not None:
            return InstancePhase.FAILED, current[1]
        return InstancePhase.FAILED, previous or Failure(
            FailureCause.APP_EXIT, at, text or f"the pod {pod_phase.lower()}"
        )
    spec = _obj(pod.get("spec"), f"pod {where}: spec")
    if not spec.get("nodeName") or current is None:
        return InstancePhase.SCHEDULED, previous
    phase, failure = current
    return phase, failure or previous


def _upgrade_pending(
    main: Mapping[str, Any] | None, annotations: Mapping[str, str], where: str
) -> bool:
    """An in-place image patch the kubelet has not acted on yet: the restart count it reaches
    by restarting the container (``image_patch``) is still ahead of the container's."""
    planned = annotations.get(PLANNED_RESTART_ANNOTATION, "")
    if not (planned.isascii() and planned.isdigit()) or main is None:
        return False
    return _int(main.get("restartCount"), f"{where}: restartCount") < int(planned)


def instance_from_pod(pod: Mapping[str, Any]) -> Instance:
    """The instance a Gaia pod runs (see the module docstring for the phase mapping)."""
    meta = _obj(pod.get("metadata"), "Pod.metadata")
    where = _pod_name(meta)
    namespace = _text(meta.get("namespace"), f"pod {where}: metadata.namespace")
    name = _text(meta.get("name"), f"pod {where}: metadata.name")
    if not name:
        raise InvalidRequest("a pod without metadata.name")
    labels = _str_map(meta.get("labels"), f"pod {where}: metadata.labels")
    annotations = _str_map(meta.get("annotations"), f"pod {where}: metadata.annotations")
    app = labels.get(APP_LABEL, "")
    if not app:
        raise InvalidRequest(f"pod {where} has no {APP_LABEL} label: it is not a Gaia instance")
    raw_id = labels.get(INSTANCE_LABEL) or name.removeprefix(f"{app}-")
    if not (raw_id.isascii() and raw_id.isdigit()):
        raise InvalidRequest(
            f"pod {where}: the instance id ({INSTANCE_LABEL} label, or the name's suffix after "
            f"'{app}-') must be a non-negative integer, got {raw_id!r}"
        )
    spec = _obj(pod.get("spec"), f"pod {where}: spec")
    status = _obj(pod.get("status"), f"pod {where}: status")
    container_name, container = _main_container(pod, where)
    cwhere = f"pod {where}: container {container_name}"
    limits_requests = _obj(container.get("resources"), f"{cwhere}: resources")
    amounts = {
        **_amounts(limits_requests.get("limits"), f"{cwhere}: resources.limits"),
        **_amounts(limits_requests.get("requests"), f"{cwhere}: resources.requests"),
    }
    try:
        base = resources_of(amounts)
    except BadExtenderRequest as exc:
        raise InvalidRequest(f"pod {where}: {exc}") from None
    resources = dataclasses.replace(base, **_annotated_resources(annotations, f"pod {where}"))
    main = _main_status(status, container_name, where)
    phase, failure = _instance_state(pod, meta, status, main, annotations, where)
    ready_cond = _condition(status, "Ready", f"pod {where}")
    ready = ready_cond is not None and ready_cond.get("status") == "True"
    if phase == InstancePhase.RUNNING and _upgrade_pending(main, annotations, cwhere):
        # the old image still runs until the kubelet restarts the container with the new one
        phase, ready = InstancePhase.PULLING, False
    if phase in (InstancePhase.FAILED, InstancePhase.TERMINATING):
        ready = False
    started_at = None
    restarts = 0
    if main is not None:
        running = _obj(_obj(main.get("state"), f"{cwhere}: state").get("running"), cwhere)
        started_at = _time(running.get("startedAt"), f"{cwhere}: state.running.startedAt")
        restarts = _int(main.get("restartCount"), f"{cwhere}: restartCount")
    restarts += _annotation_count(annotations, RESTARTS_BEFORE_ANNOTATION, f"pod {where}")
    cpu_set = annotations.get(CPU_SET_ANNOTATION, "")
    return Instance(
        namespace=namespace,
        name=name,
        app=app,
        instance_id=int(raw_id),
        version=labels.get(VERSION_LABEL, ""),
        image=_text(container.get("image"), f"{cwhere}: image"),
        node=_text(spec.get("nodeName"), f"pod {where}: spec.nodeName"),
        phase=phase,
        ready=ready,
        resources=resources,
        gpu_ids=_ids(annotations.get(GPU_IDS_ANNOTATION), f"pod {where}: {GPU_IDS_ANNOTATION}"),
        cpu_ids=parse_cpuset(cpu_set) if cpu_set else (),
        pod_ip=_text(status.get("podIP"), f"pod {where}: status.podIP"),
        host_ip=_text(status.get("hostIP"), f"pod {where}: status.hostIP"),
        restarts=restarts,
        created_at=_time(meta.get("creationTimestamp"), f"pod {where}: creationTimestamp"),
        started_at=started_at,
        last_failure=failure,
        labels=labels,
        shape=annotations.get(SHAPE_HASH_ANNOTATION, ""),
    )


# ------------------------------------------------------------------------------- nodes


def _lenient_resources(amounts: Mapping[str, Decimal]) -> ResourceVector:
    """Requests in Gaia units without the GPU rules ``resources_of`` enforces: a pod that is
    not the platform's still holds what it asked for."""
    zero = Decimal(0)
    return ResourceVector(
        cpu=clamp_amount(ceil_amount(amounts.get("cpu", zero) * 1000)),
        memory=clamp_amount(ceil_amount(amounts.get("memory", zero) / _MIB)),
        local_disk=clamp_amount(ceil_amount(amounts.get("ephemeral-storage", zero) / _GIB)),
        gpu=clamp_amount(
            ceil_amount(amounts.get(NVIDIA_GPU, zero)) * WHOLE_CARD
            + ceil_amount(amounts.get(GAIA_GPU_CORE, zero))
            + ceil_amount(amounts.get(VCUDA_CORE, zero))
        ),
        gpu_memory=clamp_amount(
            ceil_amount(amounts.get(GAIA_GPU_MEMORY, zero))
            + ceil_amount(amounts.get(VCUDA_MEMORY, zero)) * VCUDA_MEMORY_BLOCK_MIB
        ),
    )


def _link_matrix(raw: str, cards: int) -> tuple[tuple[tuple[str, ...], ...], str]:
    """The topology annotation as a matrix, or () and why it was ignored."""
    what = f"annotation {GPU_TOPOLOGY_ANNOTATION} ignored"
    try:
        doc = json.loads(raw)
    except ValueError:
        return (), f"{what}: not JSON"
    if not isinstance(doc, list) or not all(
        isinstance(row, list) and all(isinstance(cell, str) for cell in row) for row in doc
    ):
        return (), f"{what}: not a JSON list of lists of link names"
    if len(doc) != cards or any(len(row) != cards for row in doc):
        return (), f"{what}: it describes {len(doc)} cards, the node has {cards}"
    matrix = tuple(
        tuple("SOC" if c.strip().upper() == "SYS" else c.strip().upper() for c in row)
        for row in doc
    )
    return matrix, ""


def _node_address(status: Mapping[str, Any], where: str) -> str:
    for address in _items(status.get("addresses"), f"{where}: status.addresses"):
        if address.get("type") == "InternalIP":
            return _text(address.get("address"), f"{where}: address")
    return ""


def node_from_k8s(node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Node:
    """A core/v1 Node and what the given pods hold on it (pods bound elsewhere are skipped)."""
    meta = _obj(node.get("metadata"), "Node.metadata")
    name = _text(meta.get("name"), "Node.metadata.name")
    if not name:
        raise InvalidRequest("a node without metadata.name")
    where = f"node {name}"
    spec = _obj(node.get("spec"), f"{where}: spec")
    status = _obj(node.get("status"), f"{where}: status")
    labels = _str_map(meta.get("labels"), f"{where}: metadata.labels")
    annotations = _str_map(meta.get("annotations"), f"{where}: metadata.annotations")
    raw = status.get("allocatable")
    if raw is None:
        raw = status.get("capacity")
    allocatable = _amounts(raw, f"{where}: status.allocatable")
    zero = Decimal(0)
    cards = max(
        floor_amount(allocatable.get(NVIDIA_GPU, zero)),
        floor_amount(allocatable.get(GAIA_GPU_CORE, zero)) // WHOLE_CARD,
        floor_amount(allocatable.get(VCUDA_CORE, zero)) // WHOLE_CARD,
    )
    gpu_memory = floor_amount(allocatable.get(GAIA_GPU_MEMORY, zero))
    if not gpu_memory:
        gpu_memory = floor_amount(allocatable.get(VCUDA_MEMORY, zero)) * VCUDA_MEMORY_BLOCK_MIB
    notes: list[str] = []
    bandwidth_raw = annotations.get(NODE_BANDWIDTH_ANNOTATION, "").strip()
    bandwidth = DEFAULT_NODE_BANDWIDTH_MBPS
    if bandwidth_raw:
        if bandwidth_raw.isascii() and bandwidth_raw.isdigit():
            bandwidth = int(bandwidth_raw)
        else:
            notes.append(
                f"annotation {NODE_BANDWIDTH_ANNOTATION} ignored: {bandwidth_raw!r} is not a "
                "whole number of Mbit/s"
            )
    capacity = ResourceVector(
        cpu=clamp_amount(floor_amount(allocatable.get("cpu", zero) * 1000)),
        memory=clamp_amount(floor_amount(allocatable.get("memory", zero) / _MIB)),
        local_disk=clamp_amount(floor_amount(allocatable.get("ephemeral-storage", zero) / _GIB)),
        bandwidth=clamp_amount(bandwidth),
        gpu=clamp_amount(cards * WHOLE_CARD),
        gpu_memory=clamp_amount(gpu_memory),
    )
    per_card = gpu_memory // cards if cards else 0
    model = labels.get(GPU_MODEL_ANNOTATION) or labels.get(GPU_PRODUCT_LABEL, "")
    gpus = tuple(Gpu(index=i, model=model, memory_mib=per_card) for i in range(cards))
    links: tuple[tuple[str, ...], ...] = ()
    if GPU_TOPOLOGY_ANNOTATION in annotations:
        links, note = _link_matrix(annotations[GPU_TOPOLOGY_ANNOTATION], cards)
        if note:
            notes.append(note)

    allocated = ResourceVector()
    gpu_used = dict.fromkeys(range(cards), 0)
    gpu_memory_used = dict.fromkeys(range(cards), 0)
    instance_count = 0
    unplaced = 0
    for pod in pods:
        pod_meta = _obj(pod.get("metadata"), "Pod.metadata")
        pod_where = f"pod {_pod_name(pod_meta)}"
        pod_spec = _obj(pod.get("spec"), f"{pod_where}: spec")
        if pod_spec.get("nodeName") != name:
            continue
        if _obj(pod.get("status"), f"{pod_where}: status").get("phase") in _FINISHED_PHASES:
            continue
        pod_labels = _str_map(pod_meta.get("labels"), f"{pod_where}: metadata.labels")
        pod_annotations = _str_map(
            pod_meta.get("annotations"), f"{pod_where}: metadata.annotations"
        )
        try:
            amounts = pod_requests(pod)
        except BadExtenderRequest as exc:
            raise InvalidRequest(f"{pod_where}: {exc}") from None
        try:
            held = resources_of(amounts)
        except BadExtenderRequest:
            held = _lenient_resources(amounts)
        held = dataclasses.replace(held, **_annotated_resources(pod_annotations, pod_where))
        allocated = allocated + held
        if pod_labels.get(APP_LABEL):
            instance_count += 1
        if held.gpu <= 0:
            continue
        try:
            ids = _ids(pod_annotations.get(GPU_IDS_ANNOTATION), f"{pod_where}: gpu ids")
        except InvalidRequest:
            ids = ()
        ids = tuple(i for i in ids if i < cards)
        if not ids:
            unplaced += 1
            continue
        if held.gpu >= WHOLE_CARD:
            memory = max(per_card, -(-held.gpu_memory // len(ids)))
            for card in ids:
                gpu_used[card] += WHOLE_CARD
                gpu_memory_used[card] += memory
        else:
            card = ids[0]
            gpu_used[card] += held.gpu
            gpu_memory_used[card] += held.gpu_memory
    if unplaced:
        notes.append(
            f"{unplaced} GPU pod(s) without a usable {GPU_IDS_ANNOTATION} annotation: their "
            "cards are not known"
        )
    ready_cond = _condition(status, "Ready", where)
    ready = ready_cond is not None and ready_cond.get("status") == "True"
    if not ready:
        text = ready_cond.get("message") if ready_cond is not None else None
        notes.insert(0, text if isinstance(text, str) and text else "node is not ready")
    return Node(
        name=name,
        ready=ready,
        schedulable=not spec.get("unschedulable", False),
        zone=labels.get(ZONE_LABEL, ""),
        labels=labels,
        host_ip=_node_address(status, where),
        capacity=capacity,
        allocated=allocated,
        gpus=gpus,
        gpu_links=links,
        gpu_used={card: min(used, WHOLE_CARD) for card, used in gpu_used.items()},
        gpu_memory_used=gpu_memory_used,
        instance_count=instance_count,
        message="; ".join(notes),
    )


# ------------------------------------------------------------------------------- services


def _default_port_name(port: int) -> str:
    return f"p{port}"


def service_manifest(spec: ServiceSpec) -> dict[str, Any]:
    """A v1 Service selecting the app's instances (headless when it has no ports)."""
    _check_dns_label(spec.namespace, "namespace")
    _check_dns_label(spec.name, "service name")
    if not spec.app:
        raise InvalidRequest(f"service {spec.namespace}/{spec.name} needs the app it selects")
    _check_label_value(spec.app, f"service {spec.namespace}/{spec.name}: app")
    what = f"service {spec.namespace}/{spec.name}"
    ports: list[dict[str, Any]] = []
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for port in spec.ports:
        _check_port(port, what)
        if (port.port, port.protocol) in seen:
            raise InvalidRequest(f"{what} lists port {port.port}/{port.protocol} twice")
        seen.add((port.port, port.protocol))
        name = port.name or _default_port_name(port.port)
        if not port.name and name in names:
            name = f"{name}-{port.protocol.lower()}"
        _check_port_name(name, what, limit=63)
        if name in names:
            raise InvalidRequest(f"{what} names two ports {name!r}")
        names.add(name)
        ports.append(
            {"name": name, "port": port.port, "targetPort": port.port, "protocol": port.protocol}
        )
    metadata: dict[str, Any] = {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, APP_LABEL: spec.app},
    }
    if spec.domain:
        metadata["annotations"] = {DOMAIN_ANNOTATION: spec.domain}
    body: dict[str, Any] = {"type": "ClusterIP", "selector": {APP_LABEL: spec.app}}
    if ports:
        body["ports"] = ports
    else:
        body["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": body}


def service_needs_replace(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when ``desired`` cannot be applied over ``current`` (switching between headless and
    a cluster IP): delete the service and create it again."""
    now = _obj(current.get("spec"), "Service.spec").get("clusterIP")
    wanted = _obj(desired.get("spec"), "Service.spec").get("clusterIP")
    return (now == "None") != (wanted == "None")


def _endpoint_key(endpoint: Endpoint) -> tuple[str, int, str, str]:
    head, _, tail = endpoint.instance.rpartition("-")
    if head and tail.isascii() and tail.isdigit():
        return head, int(tail), endpoint.instance, endpoint.ip
    return endpoint.instance, -1, endpoint.instance, endpoint.ip


def service_from_k8s(
    service: Mapping[str, Any], endpoint_slices: Iterable[Mapping[str, Any]]
) -> Service:
    """A v1 Service and its endpoints; slices of other services are skipped."""
    meta = _obj(service.get("metadata"), "Service.metadata")
    name = _text(meta.get("name"), "Service.metadata.name")
    namespace = _text(meta.get("namespace"), "Service.metadata.namespace")
    where = f"service {namespace}/{name}"
    spec = _obj(service.get("spec"), f"{where}: spec")
    labels = _str_map(meta.get("labels"), f"{where}: metadata.labels")
    annotations = _str_map(meta.get("annotations"), f"{where}: metadata.annotations")
    selector = _str_map(spec.get("selector"), f"{where}: spec.selector")
    ports = []
    for doc in _items(spec.get("ports"), f"{where}: spec.ports"):
        port = _int(doc.get("port"), f"{where}: port")
        protocol = _text(doc.get("protocol"), f"{where}: protocol") or "TCP"
        port_name = _text(doc.get("name"), f"{where}: port name")
        default = _default_port_name(port)
        if port_name in (default, f"{default}-{protocol.lower()}"):
            port_name = ""
        ports.append(PortSpec(port=port, name=port_name, protocol=protocol))
    cluster_ip = _text(spec.get("clusterIP"), f"{where}: spec.clusterIP")
    endpoints: dict[tuple[str, str], Endpoint] = {}
    for eps in endpoint_slices:
        eps_meta = _obj(eps.get("metadata"), "EndpointSlice.metadata")
        eps_labels = _str_map(eps_meta.get("labels"), "EndpointSlice.metadata.labels")
        if eps_labels.get(SERVICE_NAME_LABEL) != name:
            continue
        if eps_meta.get("namespace") not in (None, "", namespace):
            continue
        for ep in _items(eps.get("endpoints"), f"{where}: EndpointSlice.endpoints"):
            addresses = ep.get("addresses")
            if not isinstance(addresses, list) or not addresses:
                continue
            ip = _text(addresses[0], f"{where}: endpoint address")
            ref = _obj(ep.get("targetRef"), f"{where}: endpoint targetRef")
            instance = _text(ref.get("name"), f"{where}: targetRef.name")
            conditions = _obj(ep.get("conditions"), f"{where}: endpoint conditions")
            ready = conditions.get("ready")  # nil means ready (discovery.k8s.io/v1)
            endpoints[(instance, ip)] = Endpoint(
                instance=instance,
                ip=ip,
                node=_text(ep.get("nodeName"), f"{where}: endpoint nodeName"),
                ready=ready is None or ready is True,
            )
    return Service(
        namespace=namespace,
        name=name,
        app=selector.get(APP_LABEL) or labels.get(APP_LABEL, ""),
        cluster_ip="" if cluster_ip == "None" else cluster_ip,
        ports=tuple(ports),
        domain=annotations.get(DOMAIN_ANNOTATION, ""),
        endpoints=tuple(sorted(endpoints.values(), key=_endpoint_key)),
    )


# ------------------------------------------------------------------------------- configs


def config_manifest(config: ConfigData) -> dict[str, Any]:
    """A ConfigMap, or an ``Opaque`` Secret with base64 ``data`` when ``config.secret``."""
    kind = "Secret" if config.secret else "ConfigMap"
    _check_dns_label(config.namespace, "namespace")
    _check_dns_subdomain(config.name, f"{kind} name")
    what = f"{kind} {config.namespace}/{config.name}"
    size = 0
    for key, value in config.data.items():
        if not isinstance(key, str) or len(key) > 253 or not _CONFIG_KEY.match(key):
            raise InvalidRequest(
                f"{what}: key {key!r} must be at most 253 letters, digits, '-', '_' or '.'"
            )
        if key in (".", ".."):
            raise InvalidRequest(f"{what}: key {key!r} is not allowed")
        if not isinstance(value, str):
            raise InvalidRequest(f"{what}: the value of {key!r} must be a string")
        size += len(key) + len(value.encode())
    if size > CONFIG_SIZE_LIMIT:
        raise InvalidRequest(
            f"{what} holds {size} bytes; Kubernetes keeps at most {CONFIG_SIZE_LIMIT} bytes in one "
            "object: split it"
        )
    metadata = {
        "name": config.name,
        "namespace": config.namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
    }
    if not config.secret:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {k: config.data[k] for k in sorted(config.data)},
        }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {
            k: base64.b64encode(config.data[k].encode()).decode("ascii")
            for k in sorted(config.data)
        },
    }


def _decode(raw: Any, what: str) -> str:
    if not isinstance(raw, str):
        raise InvalidRequest(f"{what} must be base64 text")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{what} is not valid base64") from None
    return data.decode("utf-8", errors="replace")


def config_from_k8s(obj: Mapping[str, Any], *, secret: bool | None = None) -> ConfigData:
    """A ConfigMap or Secret as ``ConfigData``. Items of a list carry no ``kind``: pass
    ``secret``, or a ``type`` field (which only Secrets have) decides. Binary values are decoded
    as UTF-8 with replacement characters."""
    if secret is None:
        kind = obj.get("kind")
        secret = kind == "Secret" if kind else "type" in obj
    meta = _obj(obj.get("metadata"), "metadata")
    name = _text(meta.get("name"), "metadata.name")
    namespace = _text(meta.get("namespace"), "metadata.namespace")
    what = f"{'Secret' if secret else 'ConfigMap'} {namespace}/{name}"
    data: dict[str, str] = {}
    if secret:
        for key, raw in _obj(obj.get("data"), f"{what}: data").items():
            data[key] = _decode(raw, f"{what}: data[{key}]")
    else:
        data.update(_str_map(obj.get("data"), f"{what}: data"))
        for key, raw in _obj(obj.get("binaryData"), f"{what}: binaryData").items():
            data[key] = _decode(raw, f"{what}: binaryData[{key}]")
    return ConfigData(namespace=namespace, name=name, secret=secret, data=data)


# ------------------------------------------------------------------------------- events


def event_from_k8s(event: Mapping[str, Any], seq: int) -> ClusterEvent:
    """A core/v1 Event or an events.k8s.io/v1 Event as a ``ClusterEvent`` numbered ``seq``.

    ``at`` is the last occurrence: ``series.lastObservedTime``, ``lastTimestamp`` /
    ``deprecatedLastTimestamp``, ``eventTime``, ``firstTimestamp`` / ``deprecatedFirstTimestamp``,
    ``metadata.creationTimestamp``, the first one set (the epoch when none is). Node events
    have no namespace (``""``), as nodes have none."""
    meta = _obj(event.get("metadata"), "Event.metadata")
    regarding = event.get("regarding")
    if regarding is None:
        regarding = event.get("involvedObject")
    involved = _obj(regarding, "Event.regarding")
    kind = _text(involved.get("kind"), "Event.regarding.kind")
    message = event.get("note") if "note" in event else event.get("message")
    series = _obj(event.get("series"), "Event.series")
    at = None
    for value, what in (
        (series.get("lastObservedTime"), "series.lastObservedTime"),
        (event.get("lastTimestamp"), "lastTimestamp"),
        (event.get("deprecatedLastTimestamp"), "deprecatedLastTimestamp"),
        (event.get("eventTime"), "eventTime"),
        (event.get("firstTimestamp"), "firstTimestamp"),
        (event.get("deprecatedFirstTimestamp"), "deprecatedFirstTimestamp"),
        (meta.get("creationTimestamp"), "metadata.creationTimestamp"),
    ):
        at = _time(value, f"Event.{what}")
        if at is not None:
            break
    namespace = _text(involved.get("namespace"), "Event.regarding.namespace")
    if kind == "Node":
        namespace = ""  # cluster-scoped; its events are filed under "default"
    elif not namespace:
        namespace = _text(meta.get("namespace"), "Event.metadata.namespace")
    return ClusterEvent(
        seq=seq,
        at=at or _EPOCH,
        namespace=namespace,
        object_kind=_OBJECT_KINDS.get(kind, kind),
        object_name=_text(involved.get("name"), "Event.regarding.name"),
        reason=_text(event.get("reason"), "Event.reason"),
        message=_text(message, "Event.note"),
        type=_text(event.get("type"), "Event.type") or "Normal",
    )
