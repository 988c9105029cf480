"""A Gaia pod read back as the port's ``Instance``: the phase, readiness, restarts and the cause
of the last failure, as a pure function of the pod (``instance_from_pod``).

**Phases**, first match wins:

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

Resources come back exactly: the container's requests (``gaia.kube.resources``) and the pod's
annotations (``pods.annotated_resources``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.kube.labels import (
    APP_LABEL,
    CPU_SET_ANNOTATION,
    GPU_IDS_ANNOTATION,
    INSTANCE_LABEL,
    PLANNED_RESTART_ANNOTATION,
    RESTARTS_BEFORE_ANNOTATION,
    SHAPE_HASH_ANNOTATION,
    VERSION_LABEL,
)
from gaia.kube.resources import resources_of
from gaia.providers.kubernetes.fields import (
    EPOCH,
    as_int,
    as_items,
    as_object,
    as_str_map,
    as_text,
    as_time,
    condition_of,
    from_kube,
    pod_name,
)
from gaia.providers.kubernetes.pods import (
    CONTAINER_NAME,
    FINISHED_PHASES,
    amounts_of,
    annotated_resources,
    annotation_count,
    card_ids,
    main_container,
    main_status,
    parse_cpuset,
)
from gaia.providers.port import Failure, FailureCause, Instance, InstancePhase

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


def _terminated_failure(term: Mapping[str, Any], fallback: dt.datetime, where: str) -> Failure:
    reason = as_text(term.get("reason"), f"{where}: terminated.reason")
    message = as_text(term.get("message"), f"{where}: terminated.message")
    code = term.get("exitCode")
    exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
    at = as_time(term.get("finishedAt"), f"{where}: terminated.finishedAt") or fallback
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
    reason = as_text(waiting.get("reason"), f"{where}: waiting.reason")
    message = as_text(waiting.get("message"), f"{where}: waiting.message")
    return f"{reason}: {message}" if reason and message else reason or message


def _stable_time(meta: Mapping[str, Any], status: Mapping[str, Any], where: str) -> dt.datetime:
    """The latest condition transition, else the start, else the creation time, else the epoch:
    a time that stays the same until the pod's state changes."""
    times = [
        t
        for cond in as_items(status.get("conditions"), f"pod {where}: status.conditions")
        if (t := as_time(cond.get("lastTransitionTime"), f"pod {where}: lastTransitionTime"))
    ]
    if times:
        return max(times)
    return (
        as_time(status.get("startTime"), f"pod {where}: status.startTime")
        or as_time(meta.get("creationTimestamp"), f"pod {where}: metadata.creationTimestamp")
        or EPOCH
    )


def _node_lost(status: Mapping[str, Any], at: dt.datetime, where: str) -> Failure | None:
    reason = as_text(status.get("reason"), f"pod {where}: status.reason")
    message = as_text(status.get("message"), f"pod {where}: status.message")
    if reason == "NodeLost" or status.get("phase") == "Unknown":
        return Failure(FailureCause.NODE_LOST, at, message or "the pod's node stopped answering")
    for kind, reasons in (
        ("DisruptionTarget", {"DeletionByTaintManager"}),
        ("Ready", {"NodeLost"}),
    ):
        cond = condition_of(status, kind, f"pod {where}")
        if cond is None or as_text(cond.get("reason"), f"pod {where}: reason") not in reasons:
            continue
        if kind == "DisruptionTarget" and cond.get("status") != "True":
            continue
        text = as_text(cond.get("message"), f"pod {where}: condition message")
        when = as_time(cond.get("lastTransitionTime"), f"pod {where}: lastTransitionTime") or at
        return Failure(FailureCause.NODE_LOST, when, text or "the pod's node stopped answering")
    return None


def _container_state(
    cs: Mapping[str, Any], at: dt.datetime, where: str
) -> tuple[InstancePhase, Failure | None]:
    """The phase the main container's status says, and its current failure if it has failed."""
    state = as_object(cs.get("state"), f"{where}: state")
    last = as_object(cs.get("lastState"), f"{where}: lastState")
    last_term = as_object(last.get("terminated"), f"{where}: lastState.terminated")
    previous = _terminated_failure(last_term, at, f"{where}: lastState") if last_term else None
    if state.get("running") is not None:
        return InstancePhase.RUNNING, None
    terminated = as_object(state.get("terminated"), f"{where}: state.terminated")
    if state.get("terminated") is not None:
        return InstancePhase.FAILED, _terminated_failure(terminated, at, f"{where}: state")
    waiting = as_object(state.get("waiting"), f"{where}: state.waiting")
    reason = as_text(waiting.get("reason"), f"{where}: waiting.reason")
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
    last = as_object(cs.get("lastState"), f"{where}: lastState")
    term = as_object(last.get("terminated"), f"{where}: lastState.terminated")
    if not term:
        return None
    failure = _terminated_failure(term, at, f"{where}: lastState")
    planned = annotations.get(PLANNED_RESTART_ANNOTATION, "")
    restarts = as_int(cs.get("restartCount"), f"{where}: restartCount")
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
    pod_phase = as_text(status.get("phase"), f"pod {where}: status.phase")
    if pod_phase in FINISHED_PHASES:
        reason = as_text(status.get("reason"), f"pod {where}: status.reason")
        message = as_text(status.get("message"), f"pod {where}: status.message")
        text = f"{reason}: {message}" if reason and message else reason or message
        if reason in _NODE_POD_REASONS or reason.startswith("OutOf"):
            return InstancePhase.FAILED, Failure(FailureCause.NODE_LOST, at, text)
        if current is not None and current[1] is not None:
            return InstancePhase.FAILED, current[1]
        return InstancePhase.FAILED, previous or Failure(
            FailureCause.APP_EXIT, at, text or f"the pod {pod_phase.lower()}"
        )
    spec = as_object(pod.get("spec"), f"pod {where}: spec")
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
    return as_int(main.get("restartCount"), f"{where}: restartCount") < int(planned)


def instance_id_of(pod: Mapping[str, Any]) -> int | None:
    """The instance id of a Gaia pod as ``instance_from_pod`` reads it, or None when it cannot
    be read (without reading the rest of the pod: a page of a long list asks this of every pod).
    """
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    app = str(labels.get(APP_LABEL, ""))
    raw = str(labels.get(INSTANCE_LABEL) or str(meta.get("name", "")).removeprefix(f"{app}-"))
    return int(raw) if raw.isascii() and raw.isdigit() else None


def instance_from_pod(pod: Mapping[str, Any]) -> Instance:
    """The instance a Gaia pod runs (see the module docstring for the phase mapping)."""
    meta = as_object(pod.get("metadata"), "Pod.metadata")
    where = pod_name(meta)
    namespace = as_text(meta.get("namespace"), f"pod {where}: metadata.namespace")
    name = as_text(meta.get("name"), f"pod {where}: metadata.name")
    if not name:
        raise InvalidRequest("a pod without metadata.name")
    labels = as_str_map(meta.get("labels"), f"pod {where}: metadata.labels")
    annotations = as_str_map(meta.get("annotations"), f"pod {where}: metadata.annotations")
    app = labels.get(APP_LABEL, "")
    if not app:
        raise InvalidRequest(f"pod {where} has no {APP_LABEL} label: it is not a Gaia instance")
    raw_id = labels.get(INSTANCE_LABEL) or name.removeprefix(f"{app}-")
    if not (raw_id.isascii() and raw_id.isdigit()):
        raise InvalidRequest(
            f"pod {where}: the instance id ({INSTANCE_LABEL} label, or the name's suffix after "
            f"'{app}-') must be a non-negative integer, got {raw_id!r}"
        )
    spec = as_object(pod.get("spec"), f"pod {where}: spec")
    status = as_object(pod.get("status"), f"pod {where}: status")
    container_name, container = main_container(pod, where)
    cwhere = f"pod {where}: container {container_name}"
    limits_requests = as_object(container.get("resources"), f"{cwhere}: resources")
    amounts = {
        **amounts_of(limits_requests.get("limits"), f"{cwhere}: resources.limits"),
        **amounts_of(limits_requests.get("requests"), f"{cwhere}: resources.requests"),
    }
    base = from_kube(lambda: resources_of(amounts), f"pod {where}")
    resources = dataclasses.replace(base, **annotated_resources(annotations, f"pod {where}"))
    main = main_status(status, container_name, where)
    phase, failure = _instance_state(pod, meta, status, main, annotations, where)
    ready_cond = condition_of(status, "Ready", f"pod {where}")
    ready = ready_cond is not None and ready_cond.get("status") == "True"
    if phase == InstancePhase.RUNNING and _upgrade_pending(main, annotations, cwhere):
        # the old image still runs until the kubelet restarts the container with the new one
        phase, ready = InstancePhase.PULLING, False
    if phase in (InstancePhase.FAILED, InstancePhase.TERMINATING):
        ready = False
    started_at = None
    restarts = 0
    if main is not None:
        running = as_object(as_object(main.get("state"), f"{cwhere}: state").get("running"), cwhere)
        started_at = as_time(running.get("startedAt"), f"{cwhere}: state.running.startedAt")
        restarts = as_int(main.get("restartCount"), f"{cwhere}: restartCount")
    restarts += annotation_count(annotations, RESTARTS_BEFORE_ANNOTATION, f"pod {where}")
    cpu_set = annotations.get(CPU_SET_ANNOTATION, "")
    return Instance(
        namespace=namespace,
        name=name,
        app=app,
        instance_id=int(raw_id),
        version=labels.get(VERSION_LABEL, ""),
        image=as_text(container.get("image"), f"{cwhere}: image"),
        node=as_text(spec.get("nodeName"), f"pod {where}: spec.nodeName"),
        phase=phase,
        ready=ready,
        resources=resources,
        gpu_ids=card_ids(annotations.get(GPU_IDS_ANNOTATION), f"pod {where}: {GPU_IDS_ANNOTATION}"),
        cpu_ids=parse_cpuset(cpu_set) if cpu_set else (),
        pod_ip=as_text(status.get("podIP"), f"pod {where}: status.podIP"),
        host_ip=as_text(status.get("hostIP"), f"pod {where}: status.hostIP"),
        restarts=restarts,
        created_at=as_time(meta.get("creationTimestamp"), f"pod {where}: creationTimestamp"),
        started_at=started_at,
        last_failure=failure,
        labels=labels,
        shape=annotations.get(SHAPE_HASH_ANNOTATION, ""),
    )
