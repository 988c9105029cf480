"""Kubernetes objects <-> port dataclasses (``gaia.providers.kubernetes``: ``pods``, ``instances``,
``nodes``, ``services``, ``configs``, ``events``).

The status JSON here is written the way the API server and the kubelet report it (field names,
reasons, timestamps); ``served`` plays the API server: it binds the pod, canonicalizes quantities
and fills metadata and status, so that reading back sees what a real list would return.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import json
import re
from typing import Any

import pytest

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.kube.labels import (
    APP_LABEL,
    CPU_SET_ANNOTATION,
    GPU_IDS_ANNOTATION,
    GPU_TOPOLOGY_ANNOTATION,
    INSTANCE_LABEL,
    KWOK_NODE_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PLANNED_RESTART_ANNOTATION,
    RESTARTS_BEFORE_ANNOTATION,
    SHAPE_HASH_ANNOTATION,
    TEMPLATE_HASH_ANNOTATION,
    VERSION_LABEL,
)
from gaia.kube.resources import GAIA_GPU_CORE, GAIA_GPU_MEMORY, NVIDIA_GPU
from gaia.providers.kubernetes.configs import config_from_k8s, config_manifest
from gaia.providers.kubernetes.events import event_from_k8s
from gaia.providers.kubernetes.instances import instance_from_pod
from gaia.providers.kubernetes.kept import kept_event, kept_node, kept_pod
from gaia.providers.kubernetes.nodes import kwok_node_manifest, node_from_k8s
from gaia.providers.kubernetes.pods import (
    CONTAINER_NAME,
    SCHEDULER_NAME,
    image_patch,
    parse_cpuset,
    pod_manifest,
    recreate_manifest,
    shape_hash,
    template_hash,
)
from gaia.providers.kubernetes.recorder import (
    NOTE_LIMIT,
    ScheduledRecorder,
    is_batch_event,
    scheduled_event,
)
from gaia.providers.kubernetes.services import (
    service_from_k8s,
    service_manifest,
    service_needs_replace,
)
from gaia.providers.port import (
    ConfigData,
    ConfigRef,
    FailureCause,
    InstancePhase,
    InstanceSpec,
    NetworkMode,
    NodeSpec,
    PortSpec,
    ProbeKind,
    ProbeSpec,
    ServiceSpec,
)

UTC = dt.UTC
CREATED = "2024-05-01T10:00:00Z"
STARTED = "2024-05-01T10:00:07Z"
NODE = "gpu-1"


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def spec_for(**overrides: Any) -> InstanceSpec:
    base: dict[str, Any] = {
        "namespace": "biz-1",
        "app": "web",
        "instance_id": 3,
        "version": "v1",
        "image": "registry.local/web:1.0",
        "node": NODE,
        "resources": ResourceVector(cpu=1500, memory=2048, local_disk=10),
        "command": ("/bin/web",),
        "args": ("--port", "8080"),
        "env": {"ZED": "last", "ALPHA": "first"},
        "ports": (PortSpec(8080, "http"),),
    }
    base.update(overrides)
    return InstanceSpec(**base)


def _canonical_quantity(raw: str) -> str:
    # The API server writes quantities in canonical form: 2000m cpu becomes "2".
    match = re.fullmatch(r"(\d+)m", raw)
    if match and int(match[1]) % 1000 == 0:
        return str(int(match[1]) // 1000)
    return raw


def served(
    manifest: dict[str, Any],
    *,
    node: str | None = NODE,
    phase: str = "Running",
    state: dict[str, Any] | None = None,
    last_state: dict[str, Any] | None = None,
    restarts: int = 0,
    ready: bool = True,
    deleting: bool = False,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``manifest`` as the API server returns it after create, bind and kubelet updates; no
    container status at all when ``state`` is None."""
    pod = copy.deepcopy(manifest)
    pod["metadata"].update(
        uid="0b7c1f5e-1111-4c2a-9d0e-5d7d6c1f2a3b",
        resourceVersion="4711",
        creationTimestamp=CREATED,
    )
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2024-05-01T11:00:00Z"
        pod["metadata"]["deletionGracePeriodSeconds"] = 30
    container = pod["spec"]["containers"][0]
    for key in ("requests", "limits"):
        amounts = container.get("resources", {}).get(key, {})
        for name, raw in amounts.items():
            amounts[name] = _canonical_quantity(raw)
    pod["spec"].setdefault("dnsPolicy", "ClusterFirst")
    pod["spec"]["terminationGracePeriodSeconds"] = 30
    body: dict[str, Any] = {"phase": "Pending", "qosClass": "Guaranteed"}
    if node is None:
        pod["spec"].pop("nodeName", None)  # as an older release left a pod it had not bound
    else:
        pod["spec"]["nodeName"] = node
        body.update(
            phase=phase,
            hostIP="192.168.10.21",
            hostIPs=[{"ip": "192.168.10.21"}],
            startTime="2024-05-01T10:00:01Z",
            conditions=[
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": CREATED},
                {
                    "type": "Initialized",
                    "status": "True",
                    "lastTransitionTime": "2024-05-01T10:00:01Z",
                },
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": "2024-05-01T10:00:09Z",
                    **({} if ready else {"reason": "ContainersNotReady"}),
                },
            ],
        )
        if state is not None:
            body["podIP"] = "10.244.3.17"
            body["podIPs"] = [{"ip": "10.244.3.17"}]
            body["containerStatuses"] = [
                {
                    "name": CONTAINER_NAME,
                    "image": container["image"],
                    "imageID": "",
                    "containerID": "containerd://4f1c" if "waiting" not in state else None,
                    "ready": ready,
                    "started": "running" in state,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": last_state or {},
                }
            ]
    if status:
        body.update(status)
    pod["status"] = body
    return pod


RUNNING = {"running": {"startedAt": STARTED}}


# ---------------------------------------------------------------- pod manifests


def test_pod_manifest_names_labels_and_is_bound_to_the_chosen_node_from_creation() -> None:
    spec = spec_for(labels={"team": "search", APP_LABEL: "hijack"}, annotations={"note": "x"})
    pod = pod_manifest(spec)
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    meta = pod["metadata"]
    assert (meta["name"], meta["namespace"]) == ("web-3", "biz-1")
    assert meta["labels"] == {
        "team": "search",
        MANAGED_BY_LABEL: MANAGED_BY,
        APP_LABEL: "web",
        INSTANCE_LABEL: "3",
        VERSION_LABEL: "v1",
    }
    assert meta["annotations"]["note"] == "x"
    assert meta["annotations"][SHAPE_HASH_ANNOTATION] == shape_hash(spec)
    assert GPU_IDS_ANNOTATION not in meta["annotations"]
    assert CPU_SET_ANNOTATION not in meta["annotations"]
    body = pod["spec"]
    assert body["schedulerName"] == SCHEDULER_NAME == "gaia-scheduler"
    assert body["nodeName"] == NODE  # one write: created bound, no binding POST after it
    assert "hostNetwork" not in body
    assert body["restartPolicy"] == "Always"
    [container] = body["containers"]
    assert container["name"] == "main"
    assert container["image"] == "registry.local/web:1.0"
    assert container["command"] == ["/bin/web"]
    assert container["args"] == ["--port", "8080"]
    assert container["env"] == [
        {"name": "ALPHA", "value": "first"},
        {"name": "ZED", "value": "last"},
    ]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP", "name": "http"}]
    want = {"cpu": "1500m", "memory": "2048Mi", "ephemeral-storage": "10Gi"}
    assert container["resources"] == {"requests": want, "limits": want}
    json.dumps(pod)  # plain JSON all the way down


def test_gpu_requests_whole_cards_and_shares() -> None:
    whole = pod_manifest(
        spec_for(
            resources=ResourceVector(cpu=4000, memory=8192, gpu=200, gpu_memory=2048),
            gpu_ids=(0, 1),
            cpu_ids=(0, 1, 2, 3, 8),
        )
    )
    limits = whole["spec"]["containers"][0]["resources"]["limits"]
    assert limits[NVIDIA_GPU] == "2" and limits[GAIA_GPU_MEMORY] == "2048"
    assert GAIA_GPU_CORE not in limits
    assert whole["metadata"]["annotations"][GPU_IDS_ANNOTATION] == "0,1"
    assert whole["metadata"]["annotations"][CPU_SET_ANNOTATION] == "0-3,8"

    share = pod_manifest(
        spec_for(resources=ResourceVector(cpu=500, gpu=25, gpu_memory=4096), gpu_ids=(2,))
    )
    resources = share["spec"]["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"] == {"cpu": "500m", GAIA_GPU_CORE: "25", GAIA_GPU_MEMORY: "4096"}
    assert share["metadata"]["annotations"][GPU_IDS_ANNOTATION] == "2"

    one = pod_manifest(spec_for(resources=ResourceVector(cpu=500, memory=512, gpu=100)))
    assert one["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "500m",
        "memory": "512Mi",
        NVIDIA_GPU: "1",
    }


def test_probes_round_up_to_whole_seconds() -> None:
    spec = spec_for(
        liveness=ProbeSpec(
            kind=ProbeKind.HTTP,
            path="healthz",
            initial_delay_s=0.5,
            period_s=0.2,
            timeout_s=0,
            success_threshold=3,
        ),
        readiness=ProbeSpec(kind=ProbeKind.TCP, period_s=2.5, success_threshold=2),
    )
    container = pod_manifest(spec)["spec"]["containers"][0]
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8080},  # port 0: the first container port
        "initialDelaySeconds": 1,
        "periodSeconds": 1,
        "timeoutSeconds": 1,
        "failureThreshold": 3,
        "successThreshold": 1,  # the only value Kubernetes accepts for liveness
    }
    assert container["readinessProbe"] == {
        "tcpSocket": {"port": 8080},
        "initialDelaySeconds": 0,
        "periodSeconds": 3,
        "timeoutSeconds": 1,
        "failureThreshold": 3,
        "successThreshold": 2,
    }
    exec_probe = ProbeSpec(kind=ProbeKind.EXEC, command=("cat", "/tmp/ok"), port=0)
    container = pod_manifest(spec_for(liveness=exec_probe, ports=()))["spec"]["containers"][0]
    assert container["livenessProbe"]["exec"] == {"command": ["cat", "/tmp/ok"]}


def test_configs_become_volumes_or_env_from() -> None:
    long_name = "settings." + "x" * 70
    spec = spec_for(
        configs=(
            ConfigRef("settings"),
            ConfigRef("creds", secret=True),
            ConfigRef("creds", secret=True, mount_path="/etc/creds"),
            ConfigRef("creds", mount_path="/etc/creds-plain"),
            ConfigRef(long_name, mount_path="/etc/long"),
        ),
        network_mode=NetworkMode.HOST,
    )
    pod = pod_manifest(spec)
    container = pod["spec"]["containers"][0]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "settings"}},
        {"secretRef": {"name": "creds"}},
    ]
    volumes = pod["spec"]["volumes"]
    assert volumes[0] == {"name": "cfg-creds", "secret": {"secretName": "creds"}}
    assert volumes[1]["configMap"] == {"name": "creds"}
    assert volumes[2]["configMap"] == {"name": long_name}
    names = [v["name"] for v in volumes]
    assert len(set(names)) == 3
    for name in names:
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert container["volumeMounts"] == [
        {"name": names[0], "mountPath": "/etc/creds", "readOnly": True},
        {"name": names[1], "mountPath": "/etc/creds-plain", "readOnly": True},
        {"name": names[2], "mountPath": "/etc/long", "readOnly": True},
    ]
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_pod_manifest_refuses_an_instance_placed_nowhere() -> None:
    with pytest.raises(InvalidRequest, match="names no node"):
        pod_manifest(spec_for(node=""))


# ---------------------------------------------------------------- hashes


def test_image_changes_the_template_hash_only() -> None:
    a = spec_for()
    b = spec_for(image="registry.local/web:2.0", version="v2")
    pa, pb = pod_manifest(a)["metadata"]["annotations"], pod_manifest(b)["metadata"]["annotations"]
    assert pa[SHAPE_HASH_ANNOTATION] == pb[SHAPE_HASH_ANNOTATION]
    assert pa[TEMPLATE_HASH_ANNOTATION] != pb[TEMPLATE_HASH_ANNOTATION]
    assert len(pa[SHAPE_HASH_ANNOTATION]) == 16
    assert pa[TEMPLATE_HASH_ANNOTATION] == template_hash(shape_hash(a), a.image)

    c = spec_for(env={"ZED": "last", "ALPHA": "changed"})
    pc = pod_manifest(c)["metadata"]["annotations"]
    assert pc[SHAPE_HASH_ANNOTATION] != pa[SHAPE_HASH_ANNOTATION]
    assert pc[TEMPLATE_HASH_ANNOTATION] != pa[TEMPLATE_HASH_ANNOTATION]

    # the order env was given in does not matter; resources, probes and configs do
    assert shape_hash(spec_for(env={"ALPHA": "first", "ZED": "last"})) == shape_hash(a)
    assert shape_hash(spec_for(resources=ResourceVector(cpu=1000))) != shape_hash(a)
    assert shape_hash(spec_for(readiness=ProbeSpec(port=8080))) != shape_hash(a)
    assert shape_hash(spec_for(configs=(ConfigRef("settings"),))) != shape_hash(a)
    assert shape_hash(spec_for(network_mode=NetworkMode.HOST)) != shape_hash(a)


def test_image_patch_swaps_in_place_without_reporting_a_failure() -> None:
    old = spec_for()
    new = spec_for(image="registry.local/web:2.0", version="v2")
    pod = served(pod_manifest(old), state=RUNNING)
    patch = image_patch(pod, image=new.image, version="v2")
    assert patch["spec"] == {"containers": [{"name": "main", "image": new.image}]}
    assert patch["metadata"]["labels"] == {VERSION_LABEL: "v2"}
    new_hash = pod_manifest(new)["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    assert patch["metadata"]["annotations"] == {
        TEMPLATE_HASH_ANNOTATION: new_hash,
        PLANNED_RESTART_ANNOTATION: "1",
    }

    # the API server merges the patch; the kubelet kills the old container and starts the new
    pod["metadata"]["labels"].update(patch["metadata"]["labels"])
    pod["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    pod["spec"]["containers"][0]["image"] = new.image
    # until the kubelet restarts the container, the old image runs: not ready, still pulling
    pending = instance_from_pod(pod)
    assert (pending.phase, pending.ready, pending.restarts) == (InstancePhase.PULLING, False, 0)
    killed = {
        "terminated": {
            "exitCode": 0,
            "reason": "Completed",
            "startedAt": STARTED,
            "finishedAt": "2024-05-01T10:30:00Z",
        }
    }
    status = pod["status"]["containerStatuses"][0]
    status.update(
        restartCount=1, lastState=killed, state={"running": {"startedAt": "2024-05-01T10:30:02Z"}}
    )
    inst = instance_from_pod(pod)
    assert (inst.phase, inst.version, inst.image) == (InstancePhase.RUNNING, "v2", new.image)
    assert inst.shape == shape_hash(old) == shape_hash(new)
    assert inst.restarts == 1 and inst.last_failure is None

    # a later crash is a failure again
    crash = {"terminated": {"exitCode": 2, "reason": "Error", "finishedAt": "2024-05-01T10:40:00Z"}}
    status.update(restartCount=2, lastState=crash)
    failure = instance_from_pod(pod).last_failure
    assert failure is not None and (failure.cause, failure.exit_code) == (FailureCause.APP_EXIT, 2)

    # the same image again: a new version label, no restart to wait for
    same = image_patch(pod, image=new.image, version="v2b")
    assert PLANNED_RESTART_ANNOTATION not in same["metadata"]["annotations"]

    with pytest.raises(InvalidRequest, match="shape-hash"):
        foreign = copy.deepcopy(pod)
        del foreign["metadata"]["annotations"][SHAPE_HASH_ANNOTATION]
        image_patch(foreign, image="x:1", version="v3")


# ---------------------------------------------------------------- reading pods back


def test_round_trip_whole_cards() -> None:
    spec = spec_for(
        resources=ResourceVector(
            cpu=4000,
            memory=16384,
            local_disk=50,
            cloud_disk=100,
            bandwidth=200,
            gpu=200,
            gpu_memory=0,
        ),
        gpu_ids=(0, 1),
        cpu_ids=(0, 1, 2, 3, 8),
        labels={"team": "search"},
    )
    pod = served(pod_manifest(spec), state=RUNNING)
    assert pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "4"  # canonical form
    inst = instance_from_pod(pod)
    assert (inst.namespace, inst.name, inst.app, inst.instance_id) == ("biz-1", "web-3", "web", 3)
    assert (inst.version, inst.image, inst.node) == ("v1", spec.image, NODE)
    assert inst.resources == spec.resources
    assert inst.gpu_ids == (0, 1) and inst.cpu_ids == (0, 1, 2, 3, 8)
    assert inst.shape == shape_hash(spec)
    assert (inst.phase, inst.ready) == (InstancePhase.RUNNING, True)
    assert (inst.pod_ip, inst.host_ip) == ("10.244.3.17", "192.168.10.21")
    assert inst.created_at == t(CREATED) and inst.started_at == t(STARTED)
    assert inst.restarts == 0 and inst.last_failure is None
    assert inst.labels["team"] == "search" and inst.labels[APP_LABEL] == "web"


def test_round_trip_gpu_share() -> None:
    spec = spec_for(
        resources=ResourceVector(cpu=500, memory=1024, gpu=25, gpu_memory=4096), gpu_ids=(2,)
    )
    inst = instance_from_pod(served(pod_manifest(spec), state=RUNNING))
    assert inst.resources == spec.resources
    assert inst.gpu_ids == (2,) and inst.cpu_ids == ()


def test_unbound_and_unstarted_pods_are_scheduled() -> None:
    manifest = pod_manifest(spec_for())
    unbound = instance_from_pod(served(manifest, node=None))
    assert (unbound.phase, unbound.node, unbound.ready) == (InstancePhase.SCHEDULED, "", False)
    bound = instance_from_pod(served(manifest, phase="Pending", ready=False))
    assert (bound.phase, bound.node) == (InstancePhase.SCHEDULED, NODE)
    assert bound.pod_ip == "" and bound.started_at is None


def test_container_creating_is_created() -> None:
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    pod = served(pod_manifest(spec_for()), phase="Pending", state=waiting, ready=False)
    inst = instance_from_pod(pod)
    assert (inst.phase, inst.ready, inst.last_failure) == (InstancePhase.CREATED, False, None)


def test_image_pull_back_off_fails_with_image_pull() -> None:
    message = 'Back-off pulling image "registry.local/web:nope"'
    for reason in ("ErrImagePull", "ImagePullBackOff"):
        waiting = {"waiting": {"reason": reason, "message": message}}
        pod = served(pod_manifest(spec_for()), phase="Pending", state=waiting, ready=False)
        inst = instance_from_pod(pod)
        assert inst.phase == InstancePhase.FAILED and not inst.ready
        assert inst.last_failure is not None
        assert inst.last_failure.cause == FailureCause.IMAGE_PULL
        assert reason in inst.last_failure.message and "nope" in inst.last_failure.message
        assert inst.last_failure.exit_code is None
        # the time is stable between reads: the platform records each failure once
        assert inst.last_failure.at == t("2024-05-01T10:00:09Z")
        assert instance_from_pod(pod).last_failure == inst.last_failure


def test_missing_config_fails_with_config() -> None:
    waiting = {
        "waiting": {
            "reason": "CreateContainerConfigError",
            "message": 'configmap "settings" not found',
        }
    }
    pod = served(pod_manifest(spec_for()), phase="Pending", state=waiting, ready=False)
    inst = instance_from_pod(pod)
    assert inst.phase == InstancePhase.FAILED and inst.last_failure is not None
    assert inst.last_failure.cause == FailureCause.CONFIG
    assert "settings" in inst.last_failure.message


def test_crash_loop_after_oom_kill() -> None:
    waiting = {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 40s restarting failed container=main pod=web-3_biz-1",
        }
    }
    oom = {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": "2024-05-01T10:05:00Z",
            "finishedAt": "2024-05-01T10:05:31Z",
            "containerID": "containerd://9a9a",
        }
    }
    pod = served(pod_manifest(spec_for()), state=waiting, last_state=oom, restarts=3, ready=False)
    inst = instance_from_pod(pod)
    assert (inst.phase, inst.ready, inst.restarts) == (InstancePhase.FAILED, False, 3)
    assert inst.last_failure is not None
    assert inst.last_failure.cause == FailureCause.OOM
    assert inst.last_failure.exit_code == 137
    assert inst.last_failure.at == t("2024-05-01T10:05:31Z")


def test_crash_loop_after_exit_and_terminated_container() -> None:
    waiting = {"waiting": {"reason": "CrashLoopBackOff"}}
    error = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": STARTED}}
    inst = instance_from_pod(
        served(pod_manifest(spec_for()), state=waiting, last_state=error, restarts=1, ready=False)
    )
    assert inst.last_failure is not None
    assert (inst.last_failure.cause, inst.last_failure.exit_code) == (FailureCause.APP_EXIT, 1)

    stopped = {
        "terminated": {
            "exitCode": 137,
            "reason": "OOMKilled",
            "finishedAt": "2024-05-01T10:20:00Z",
        }
    }
    inst = instance_from_pod(served(pod_manifest(spec_for()), state=stopped, ready=False))
    assert inst.phase == InstancePhase.FAILED and inst.last_failure is not None
    assert inst.last_failure.cause == FailureCause.OOM
    assert inst.started_at is None


def test_running_after_a_restart_keeps_the_last_failure() -> None:
    error = {
        "terminated": {
            "exitCode": 3,
            "reason": "Error",
            "message": "panic: boom",
            "finishedAt": "2024-05-01T10:00:06Z",
        }
    }
    inst = instance_from_pod(
        served(pod_manifest(spec_for()), state=RUNNING, last_state=error, restarts=2)
    )
    assert (inst.phase, inst.ready, inst.restarts) == (InstancePhase.RUNNING, True, 2)
    assert inst.last_failure is not None
    assert inst.last_failure.cause == FailureCause.APP_EXIT
    assert inst.last_failure.exit_code == 3 and "panic: boom" in inst.last_failure.message


def test_running_but_not_ready() -> None:
    inst = instance_from_pod(served(pod_manifest(spec_for()), state=RUNNING, ready=False))
    assert (inst.phase, inst.ready) == (InstancePhase.RUNNING, False)


def test_terminating() -> None:
    inst = instance_from_pod(served(pod_manifest(spec_for()), state=RUNNING, deleting=True))
    assert (inst.phase, inst.ready) == (InstancePhase.TERMINATING, False)
    assert inst.last_failure is None


def test_node_lost() -> None:
    manifest = pod_manifest(spec_for())
    lost = served(
        manifest,
        state=RUNNING,
        status={
            "reason": "NodeLost",
            "message": "Node gpu-1 which was running pod web-3 is unresponsive",
        },
    )
    inst = instance_from_pod(lost)
    assert (inst.phase, inst.ready) == (InstancePhase.FAILED, False)
    assert inst.last_failure is not None and inst.last_failure.cause == FailureCause.NODE_LOST
    assert "unresponsive" in inst.last_failure.message

    unknown = instance_from_pod(served(manifest, state=RUNNING, status={"phase": "Unknown"}))
    assert unknown.last_failure is not None
    assert unknown.last_failure.cause == FailureCause.NODE_LOST

    evicted_by_taint = served(manifest, state=RUNNING, deleting=True)
    evicted_by_taint["status"]["conditions"].append(
        {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": "2024-05-01T10:50:00Z",
        }
    )
    inst = instance_from_pod(evicted_by_taint)
    assert inst.phase == InstancePhase.TERMINATING
    assert inst.last_failure is not None and inst.last_failure.cause == FailureCause.NODE_LOST
    assert inst.last_failure.at == t("2024-05-01T10:50:00Z")


def test_finished_pods_are_failed() -> None:
    manifest = pod_manifest(spec_for())
    evicted = served(
        manifest,
        phase="Failed",
        state={"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}},
        ready=False,
        status={"reason": "Evicted", "message": "The node was low on resource: memory."},
    )
    inst = instance_from_pod(evicted)
    assert inst.phase == InstancePhase.FAILED and inst.last_failure is not None
    assert inst.last_failure.cause == FailureCause.NODE_LOST
    assert "low on resource" in inst.last_failure.message

    rejected = served(
        manifest, phase="Failed", ready=False, status={"reason": "OutOfnvidia.com/gpu"}
    )
    failure = instance_from_pod(rejected).last_failure
    assert failure is not None and failure.cause == FailureCause.NODE_LOST

    exited = served(
        manifest,
        phase="Failed",
        state={"terminated": {"exitCode": 1, "reason": "Error"}},
        ready=False,
    )
    failure = instance_from_pod(exited).last_failure
    assert failure is not None and (failure.cause, failure.exit_code) == (FailureCause.APP_EXIT, 1)


def test_unreadable_pods_are_refused() -> None:
    pod = served(pod_manifest(spec_for()), state=RUNNING)
    no_app = copy.deepcopy(pod)
    del no_app["metadata"]["labels"][APP_LABEL]
    with pytest.raises(InvalidRequest, match="not a Gaia instance"):
        instance_from_pod(no_app)
    bad_quantity = copy.deepcopy(pod)
    bad_quantity["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "lots"
    with pytest.raises(InvalidRequest, match="cpu"):
        instance_from_pod(bad_quantity)
    bad_ids = copy.deepcopy(pod)
    bad_ids["metadata"]["annotations"][GPU_IDS_ANNOTATION] = "zero"
    with pytest.raises(InvalidRequest, match="gpu-ids"):
        instance_from_pod(bad_ids)


def test_parse_cpuset() -> None:
    assert parse_cpuset("0-3,8") == (0, 1, 2, 3, 8)
    assert parse_cpuset("5") == (5,)
    with pytest.raises(InvalidRequest):
        parse_cpuset("3-1")
    with pytest.raises(InvalidRequest):
        parse_cpuset("a-b")


# ---------------------------------------------------------------- nodes

LINKS = [
    ["X", "NV12", "SYS", "SYS"],
    ["NV12", "X", "SYS", "SYS"],
    ["SYS", "SYS", "X", "NV12"],
    ["SYS", "SYS", "NV12", "X"],
]


def gpu_node(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "resourceVersion": "912",
            "labels": {
                "kubernetes.io/hostname": NODE,
                "topology.kubernetes.io/zone": "zone-a",
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
            },
            "annotations": {GPU_TOPOLOGY_ANNOTATION: json.dumps(LINKS), **annotations},
        },
        "spec": {"podCIDR": "10.244.3.0/24"},
        "status": {
            "capacity": {"cpu": "64", "memory": "263856044Ki", NVIDIA_GPU: "4"},
            "allocatable": {
                "cpu": "63900m",
                "memory": "261656044Ki",
                "ephemeral-storage": "1881567132Ki",
                "pods": "110",
                NVIDIA_GPU: "4",
                GAIA_GPU_MEMORY: "327680",
            },
            "addresses": [
                {"type": "InternalIP", "address": "192.168.10.21"},
                {"type": "Hostname", "address": NODE},
            ],
            "conditions": [
                {
                    "type": "MemoryPressure",
                    "status": "False",
                    "reason": "KubeletHasSufficientMemory",
                },
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            ],
        },
    }


def test_gpu_node_with_a_whole_card_pod_and_a_share() -> None:
    whole = served(
        pod_manifest(
            spec_for(
                instance_id=0,
                resources=ResourceVector(cpu=4000, memory=8192, bandwidth=100, gpu=200),
                gpu_ids=(0, 1),
            )
        ),
        state=RUNNING,
    )
    share = served(
        pod_manifest(
            spec_for(
                app="infer",
                instance_id=1,
                resources=ResourceVector(cpu=500, memory=1024, gpu=25, gpu_memory=4096),
                gpu_ids=(2,),
            )
        ),
        state=RUNNING,
    )
    elsewhere = served(pod_manifest(spec_for(instance_id=7)), node="gpu-2", state=RUNNING)
    finished = served(
        pod_manifest(spec_for(instance_id=8, gpu_ids=(3,), resources=ResourceVector(gpu=100))),
        phase="Succeeded",
        state={"terminated": {"exitCode": 0, "reason": "Completed"}},
    )
    daemon = {  # not the platform's: counts as allocated, not as an instance
        "metadata": {"name": "node-exporter-x1", "namespace": "monitoring"},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {"name": "exporter", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
            ],
        },
        "status": {"phase": "Running"},
    }
    node = node_from_k8s(gpu_node(), [whole, share, elsewhere, finished, daemon])
    assert (node.name, node.ready, node.schedulable) == (NODE, True, True)
    assert (node.zone, node.host_ip) == ("zone-a", "192.168.10.21")
    assert node.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert node.capacity == ResourceVector(
        cpu=63900,
        memory=261656044 // 1024,
        local_disk=1881567132 // (1024 * 1024),
        bandwidth=10_000,
        gpu=400,
        gpu_memory=327680,
    )
    assert [(g.index, g.model, g.memory_mib, g.numa_node) for g in node.gpus] == [
        (i, "NVIDIA-A100-SXM4-80GB", 81920, 0) for i in range(4)
    ]
    assert node.gpu_links[0] == ("X", "NV12", "SOC", "SOC")
    assert len(node.gpu_links) == 4 and node.message == ""
    assert node.gpu_used == {0: 100, 1: 100, 2: 25, 3: 0}
    assert node.gpu_memory_used == {0: 81920, 1: 81920, 2: 4096, 3: 0}
    assert node.allocated == ResourceVector(
        cpu=4000 + 500 + 100,
        memory=8192 + 1024 + 64,
        local_disk=0,
        bandwidth=100,
        gpu=225,
        gpu_memory=4096,
    )
    assert node.instance_count == 2
    assert node.free.gpu == 175


def test_node_topology_of_the_wrong_size_is_ignored() -> None:
    doc = gpu_node(**{GPU_TOPOLOGY_ANNOTATION: json.dumps([["X", "NV1"], ["NV1", "X"]])})
    doc["spec"]["unschedulable"] = True
    doc["status"]["conditions"][-1] = {
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
    }
    node = node_from_k8s(doc, [])
    assert node.gpu_links == () and len(node.gpus) == 4
    assert not node.ready and not node.schedulable
    assert "Kubelet stopped posting node status." in node.message
    assert GPU_TOPOLOGY_ANNOTATION in node.message
    assert node.gpu_used == {0: 0, 1: 0, 2: 0, 3: 0}
    assert node.allocated == ResourceVector()


def test_node_topology_that_breaks_the_link_rules_is_ignored() -> None:
    broken = [row[:] for row in LINKS]
    broken[0][1] = "WARP"
    node = node_from_k8s(gpu_node(**{GPU_TOPOLOGY_ANNOTATION: json.dumps(broken)}), [])
    assert node.gpu_links == () and len(node.gpus) == 4 and node.ready
    assert GPU_TOPOLOGY_ANNOTATION in node.message and "WARP" in node.message


def test_node_without_gpus_and_with_a_bandwidth_annotation() -> None:
    doc = {
        "metadata": {"name": "cpu-1", "annotations": {"gaia.io/bandwidth": "25000"}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi"}},
    }
    node = node_from_k8s(doc, [])
    assert node.capacity == ResourceVector(cpu=8000, memory=32768, local_disk=100, bandwidth=25000)
    assert node.gpus == () and node.gpu_used == {} and not node.ready


# ---------------------------------------------------------------- services


def test_service_manifest() -> None:
    spec = ServiceSpec(
        namespace="biz-1",
        name="web",
        app="web",
        ports=(PortSpec(80, "http"), PortSpec(53), PortSpec(53, protocol="UDP")),
        domain="web.example.test",
    )
    svc = service_manifest(spec)
    assert (svc["apiVersion"], svc["kind"]) == ("v1", "Service")
    assert svc["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert svc["metadata"]["annotations"] == {"gaia.io/domain": "web.example.test"}
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {APP_LABEL: "web"}
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
        {"name": "p53", "port": 53, "targetPort": 53, "protocol": "TCP"},
        {"name": "p53-udp", "port": 53, "targetPort": 53, "protocol": "UDP"},
    ]
    assert "clusterIP" not in svc["spec"]

    headless = service_manifest(ServiceSpec(namespace="biz-1", name="web", app="web"))
    assert headless["spec"]["clusterIP"] == "None" and "ports" not in headless["spec"]
    assert service_needs_replace(headless, svc) and not service_needs_replace(svc, svc)


def test_service_from_k8s_with_endpoint_slices() -> None:
    spec = ServiceSpec(
        namespace="biz-1",
        name="web",
        app="web",
        ports=(PortSpec(80, "http"), PortSpec(9090)),
        domain="web.example.test",
    )
    svc = service_manifest(spec)
    svc["spec"].update(clusterIP="10.96.12.7", clusterIPs=["10.96.12.7"])
    svc["metadata"].update(uid="a-b", creationTimestamp=CREATED)

    def endpoint(pod: str, ip: str, ready: bool | None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "addresses": [ip],
            "conditions": {"serving": True, "terminating": False},
            "nodeName": NODE,
            "targetRef": {"kind": "Pod", "namespace": "biz-1", "name": pod, "uid": "u"},
        }
        if ready is not None:
            doc["conditions"]["ready"] = ready
        return doc

    def slice_of(service: str, *endpoints: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-x7k2p",
                "namespace": "biz-1",
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": list(endpoints),
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }

    slices = [
        slice_of(
            "web", endpoint("web-10", "10.244.3.30", True), endpoint("web-2", "10.244.3.2", False)
        ),
        slice_of(
            "web", endpoint("web-1", "10.244.3.1", None), endpoint("web-2", "10.244.3.2", False)
        ),
        slice_of("other", endpoint("other-0", "10.244.3.99", True)),
        {"metadata": {"name": "empty", "labels": {"kubernetes.io/service-name": "web"}}},
    ]
    got = service_from_k8s(svc, slices)
    assert (got.namespace, got.name, got.app) == ("biz-1", "web", "web")
    assert got.cluster_ip == "10.96.12.7" and got.domain == "web.example.test"
    assert got.ports == (PortSpec(80, "http"), PortSpec(9090))  # p9090 reads back as unnamed
    assert [(e.instance, e.ip, e.node, e.ready) for e in got.endpoints] == [
        ("web-1", "10.244.3.1", NODE, True),  # no ready condition means ready
        ("web-2", "10.244.3.2", NODE, False),
        ("web-10", "10.244.3.30", NODE, True),
    ]
    assert [e.instance for e in got.ready_endpoints] == ["web-1", "web-10"]

    headless = service_manifest(ServiceSpec(namespace="biz-1", name="web", app="web"))
    assert service_from_k8s(headless, []).cluster_ip == ""


# ---------------------------------------------------------------- configs


def test_config_map_round_trip() -> None:
    config = ConfigData("biz-1", "settings", secret=False, data={"LEVEL": "debug", "a.b": "1"})
    doc = config_manifest(config)
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "ConfigMap")
    assert doc["metadata"]["labels"] == {MANAGED_BY_LABEL: MANAGED_BY}
    assert doc["data"] == {"LEVEL": "debug", "a.b": "1"}
    assert config_from_k8s(doc) == config
    doc["binaryData"] = {"blob": base64.b64encode(b"\x00ok").decode()}
    assert config_from_k8s(doc).data["blob"] == "\x00ok"


def test_secret_values_are_base64() -> None:
    config = ConfigData("biz-1", "creds", secret=True, data={"password": "pw-1 ✓", "empty": ""})
    doc = config_manifest(config)
    assert (doc["kind"], doc["type"]) == ("Secret", "Opaque")
    assert "stringData" not in doc
    assert doc["data"] == {
        "empty": "",
        "password": base64.b64encode("pw-1 ✓".encode()).decode(),
    }
    assert config_from_k8s(doc) == config
    # items of a list response carry no kind: a Secret has a type, a ConfigMap has none
    listed = {k: v for k, v in doc.items() if k not in ("kind", "apiVersion")}
    assert config_from_k8s(listed) == config
    assert config_from_k8s(listed, secret=True) == config
    listed["data"] = {"password": "not base64!"}
    with pytest.raises(InvalidRequest, match="base64"):
        config_from_k8s(listed)


def test_invalid_configs() -> None:
    with pytest.raises(InvalidRequest, match="key"):
        config_manifest(ConfigData("biz-1", "c", secret=False, data={"bad key": "v"}))
    with pytest.raises(InvalidRequest, match="DNS subdomain"):
        config_manifest(ConfigData("biz-1", "Bad_Name", secret=True, data={}))
    with pytest.raises(InvalidRequest, match="split it"):
        config_manifest(ConfigData("biz-1", "big", secret=False, data={"k": "x" * 1_100_000}))


# ---------------------------------------------------------------- events


def test_core_v1_event() -> None:
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": "web-3.17c2a1b2c3d4e5f6",
            "namespace": "biz-1",
            "creationTimestamp": "2024-05-01T10:00:02Z",
        },
        "involvedObject": {
            "kind": "Pod",
            "namespace": "biz-1",
            "name": "web-3",
            "fieldPath": "spec.containers{main}",
        },
        "reason": "Pulling",
        "message": 'Pulling image "registry.local/web:1.0"',
        "source": {"component": "kubelet", "host": NODE},
        "firstTimestamp": "2024-05-01T10:00:02Z",
        "lastTimestamp": "2024-05-01T10:00:03Z",
        "count": 2,
        "type": "Normal",
        "eventTime": None,
    }
    ev = event_from_k8s(event, 41)
    assert ev.seq == 41 and ev.at == t("2024-05-01T10:00:03Z")
    assert (ev.namespace, ev.object_kind, ev.object_name) == ("biz-1", "Instance", "web-3")
    assert (ev.reason, ev.type) == ("Pulling", "Normal")
    assert ev.message == 'Pulling image "registry.local/web:1.0"'

    node_event = {
        "metadata": {"name": "gpu-1.x", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": NODE},
        "reason": "NodeNotReady",
        "message": "Node gpu-1 status is now: NodeNotReady",
        "type": "Warning",
        "lastTimestamp": None,
        "eventTime": "2024-05-01T10:10:00.123456Z",
    }
    ev = event_from_k8s(node_event, 42)
    assert (ev.object_kind, ev.type, ev.namespace) == ("Node", "Warning", "")
    assert ev.at == dt.datetime(2024, 5, 1, 10, 10, 0, 123456, tzinfo=UTC)


def test_events_k8s_io_v1_event() -> None:
    event = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "web.x", "namespace": "biz-1", "creationTimestamp": CREATED},
        "eventTime": "2024-05-01T10:00:00.000001Z",
        "series": {"count": 4, "lastObservedTime": "2024-05-01T10:04:00.500000Z"},
        "reportingController": "endpointslice-controller.k8s.io",
        "reportingInstance": "cp-1",
        "action": "Update",
        "reason": "FailedToUpdateEndpointSlices",
        "regarding": {"kind": "Service", "namespace": "biz-1", "name": "web"},
        "note": "Error updating Endpoint Slices for Service biz-1/web",
        "type": "Warning",
        "deprecatedCount": 0,
    }
    ev = event_from_k8s(event, 7)
    assert (ev.object_kind, ev.object_name, ev.namespace) == ("Service", "web", "biz-1")
    assert ev.message.startswith("Error updating Endpoint Slices")
    assert ev.at == dt.datetime(2024, 5, 1, 10, 4, 0, 500000, tzinfo=UTC)
    assert ev.type == "Warning"

    bare = {
        "metadata": {"name": "x", "namespace": "biz-1", "creationTimestamp": CREATED},
        "regarding": {"kind": "ReplicaSet", "name": "rs-1"},
        "reason": "SuccessfulCreate",
    }
    ev = event_from_k8s(bare, 8)
    assert (ev.object_kind, ev.at, ev.type, ev.message) == ("ReplicaSet", t(CREATED), "Normal", "")


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"resources": ResourceVector(gpu=150)}, "whole cards"),
        ({"resources": ResourceVector(gpu_memory=1024)}, "no GPU"),
        ({"resources": ResourceVector(gpu=200), "gpu_ids": (0,)}, "list exactly 2"),
        ({"resources": ResourceVector(gpu=50), "gpu_ids": (0, 1)}, "share of one card"),
        ({"gpu_ids": (1,)}, "asks for no GPU"),
        ({"resources": ResourceVector(gpu=100), "gpu_ids": (1, 1)}, "twice"),
        ({"namespace": "Biz_1"}, "DNS label"),
        ({"version": "v1+build/7"}, "label value"),
        ({"image": ""}, "image"),
        ({"ports": (PortSpec(70000),)}, "between 1 and 65535"),
        ({"ports": (PortSpec(80, protocol="HTTP"),)}, "protocol"),
        ({"ports": (PortSpec(80, "a-very-long-port-name"),)}, "port name"),
        ({"ports": (), "readiness": ProbeSpec()}, "give the probe a port"),
        ({"liveness": ProbeSpec(kind=ProbeKind.EXEC)}, "names none"),
        ({"liveness": ProbeSpec(port=80, period_s=-1)}, "negative"),
        ({"liveness": ProbeSpec(port=80, failure_threshold=0)}, "failure_threshold"),
        (
            {"configs": (ConfigRef("a", mount_path="/etc/x"), ConfigRef("b", mount_path="/etc/x"))},
            "two configs",
        ),
        ({"configs": (ConfigRef("Not_A_Name"),)}, "config name"),
        ({"labels": {"bad key!": "v"}}, "label key"),
        ({"env": {"A=B": "v"}}, "environment variable"),
    ],
)
def test_what_cannot_be_expressed_is_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        pod_manifest(spec_for(**overrides))


def test_invalid_services_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="twice"):
        service_manifest(
            ServiceSpec(
                namespace="biz-1", name="web", app="web", ports=(PortSpec(80), PortSpec(80))
            )
        )
    with pytest.raises(InvalidRequest, match="DNS label"):
        service_manifest(ServiceSpec(namespace="biz-1", name="Web", app="web"))
    with pytest.raises(InvalidRequest, match="app"):
        service_manifest(ServiceSpec(namespace="biz-1", name="web", app=""))


# ---------------------------------------------------------------- restarts and KWOK nodes


def test_recreate_manifest_carries_the_restart_count_keeps_the_node_and_drops_server_fields() -> (
    None
):
    pod = served(pod_manifest(spec_for()), state=RUNNING, restarts=2)
    pod["metadata"]["annotations"][PLANNED_RESTART_ANNOTATION] = "2"
    assert instance_from_pod(pod).restarts == 2
    fresh = recreate_manifest(pod, restarts=3)
    meta = fresh["metadata"]
    assert {"uid", "resourceVersion", "creationTimestamp"}.isdisjoint(meta)
    assert fresh["spec"]["nodeName"] == NODE and "status" not in fresh
    assert meta["annotations"][RESTARTS_BEFORE_ANNOTATION] == "3"
    assert PLANNED_RESTART_ANNOTATION not in meta["annotations"]
    assert (
        meta["annotations"][SHAPE_HASH_ANNOTATION]
        == pod["metadata"]["annotations"][SHAPE_HASH_ANNOTATION]
    )
    # the new pod's container counts from zero; the instance goes on counting
    again = served(fresh, state=RUNNING, restarts=1)
    assert instance_from_pod(again).restarts == 4
    with pytest.raises(InvalidRequest):
        recreate_manifest(pod, restarts=-1)
    broken = served(fresh, state=RUNNING)
    broken["metadata"]["annotations"][RESTARTS_BEFORE_ANNOTATION] = "many"
    with pytest.raises(InvalidRequest, match=RESTARTS_BEFORE_ANNOTATION):
        instance_from_pod(broken)


def test_kwok_node_manifest_reads_back_as_the_node_asked_for() -> None:
    links = (("X", "PIX"), ("PIX", "X"))
    spec = NodeSpec(
        name="kwok-1",
        cpu_milli=8000,
        memory_mib=16384,
        gpus=2,
        gpu_model="A100",
        gpu_memory_mib=40960,
        zone="zone-b",
        labels={"pool": "train"},
        bandwidth_mbps=25_000,
    )
    manifest = kwok_node_manifest(spec, links)
    assert manifest["metadata"]["annotations"][KWOK_NODE_ANNOTATION] == "fake"
    served_node = copy.deepcopy(manifest)
    served_node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    served_node["status"]["addresses"] = [{"type": "InternalIP", "address": "10.1.0.2"}]
    node = node_from_k8s(served_node, [])
    assert node.capacity == ResourceVector(
        cpu=8000, memory=16384, local_disk=100, bandwidth=25_000, gpu=200, gpu_memory=81920
    )
    assert [g.model for g in node.gpus] == ["A100", "A100"]
    assert node.zone == "zone-b" and node.labels["pool"] == "train"
    assert node.gpu_links == links
    for bad in (
        dict(name="Bad_Name"),
        dict(cpu_milli=0),
        dict(gpus=-1),
        dict(labels={"bad key!": "x"}),
        dict(zone="no spaces allowed"),
    ):
        fields = {"name": "ok", "cpu_milli": 1000, "memory_mib": 1024, "gpus": 0, **bad}
        with pytest.raises(InvalidRequest):
            kwok_node_manifest(NodeSpec(**fields), ())  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="rows"):
        kwok_node_manifest(NodeSpec(name="ok", cpu_milli=1, memory_mib=1, gpus=2), links[:1])


# ---------------------------------------------------------------- what the caches keep

MANAGED_FIELDS = [
    {
        "manager": "kwok",
        "operation": "Update",
        "subresource": "status",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:conditions": {".": {}}, "f:phase": {}, "f:podIP": {}}},
    }
]


def _with_managed_fields(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"]["managedFields"] = MANAGED_FIELDS
    return doc


def test_the_cache_keeps_of_a_gaia_pod_everything_but_its_managed_fields() -> None:
    pod = _with_managed_fields(
        served(
            pod_manifest(spec_for(gpu_ids=(1,), resources=ResourceVector(gpu=100))), state=RUNNING
        )
    )
    kept = kept_pod(pod)
    assert "managedFields" not in kept["metadata"]
    assert pod["metadata"]["managedFields"] == MANAGED_FIELDS  # the received object is not changed
    del pod["metadata"]["managedFields"]
    assert kept == pod  # the status, the whole spec (a restart copies it back), the annotations
    assert instance_from_pod(kept) == instance_from_pod(pod)


def test_the_cache_keeps_of_other_pods_what_a_nodes_allocation_counts() -> None:
    ours = served(
        pod_manifest(
            spec_for(
                instance_id=0,
                gpu_ids=(0,),
                resources=ResourceVector(cpu=1000, memory=1024, gpu=100),
            )
        ),
        state=RUNNING,
    )
    theirs = _with_managed_fields(
        {
            "metadata": {
                "name": "trainer-0",
                "namespace": "ml",
                "resourceVersion": "77",
                "labels": {"job": "train"},
                "annotations": {
                    GPU_IDS_ANNOTATION: "2",
                    "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4000 + "}",
                },
            },
            "spec": {
                "nodeName": NODE,
                "initContainers": [
                    {
                        "name": "proxy",
                        "image": "proxy:1",
                        "restartPolicy": "Always",  # a sidecar: counted with the containers
                        "resources": {"requests": {"cpu": "250m"}},
                    }
                ],
                "containers": [
                    {
                        "name": "train",
                        "image": "train:1",
                        "command": ["python", "train.py"],
                        "env": [{"name": f"V{i}", "value": "x" * 100} for i in range(50)],
                        "resources": {
                            "requests": {"cpu": "2", "memory": "4Gi", NVIDIA_GPU: "1"},
                            "limits": {NVIDIA_GPU: "1"},
                        },
                    }
                ],
                "overhead": {"cpu": "50m"},
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "train", "image": "train:1", "ready": True}],
            },
        }
    )
    kept = [kept_pod(ours), kept_pod(theirs)]
    assert node_from_k8s(gpu_node(), kept) == node_from_k8s(gpu_node(), [ours, theirs])
    small = kept[1]
    assert "env" not in small["spec"]["containers"][0]
    assert "volumes" not in small["spec"] and small["status"] == {"phase": "Running"}
    assert small["metadata"]["annotations"] == {GPU_IDS_ANNOTATION: "2"}
    assert len(json.dumps(small)) < len(json.dumps(theirs)) / 4


def test_the_cache_keeps_of_a_node_all_but_its_images_and_managed_fields() -> None:
    node = _with_managed_fields(gpu_node())
    node["status"]["images"] = [
        {"names": [f"registry.local/img-{i}@sha256:{'0' * 64}"], "sizeBytes": 10**9}
        for i in range(50)
    ]
    kept = kept_node(node)
    assert "images" not in kept["status"] and "managedFields" not in kept["metadata"]
    assert node_from_k8s(kept, []) == node_from_k8s(node, [])
    assert "images" in node["status"]


def test_the_cache_keeps_of_an_event_what_the_event_log_reads() -> None:
    event = _with_managed_fields(
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": "web-3.1",
                "namespace": "biz-1",
                "uid": "u1",
                "resourceVersion": "9",
            },
            "eventTime": "2024-05-01T10:00:02.000001Z",
            "series": {"count": 3, "lastObservedTime": "2024-05-01T10:05:00.000000Z"},
            "reportingController": "kubelet",
            "reportingInstance": NODE,
            "action": "Mount",
            "reason": "FailedMount",
            "note": 'configmap "absent" not found',
            "type": "Warning",
            "regarding": {"kind": "Pod", "namespace": "biz-1", "name": "web-3", "uid": "p1"},
            "deprecatedSource": {"component": "kubelet", "host": NODE},
        }
    )
    kept = kept_event(event)
    assert event_from_k8s(kept, 5) == event_from_k8s(event, 5)
    assert kept["regarding"]["uid"] == "p1"  # the FailedMount watch keys on it
    assert "managedFields" not in kept["metadata"] and "deprecatedSource" not in kept


# ---------------------------------------------------------------- the batch Scheduled event


def test_a_batch_scheduled_event_names_its_pods_within_the_note_limit() -> None:
    at = t("2024-05-01T10:00:00Z")
    few = scheduled_event(
        namespace="biz-1",
        app="web",
        placements=[("web-0", "gpu-1"), ("web-1", "gpu-2"), ("web-2", "gpu-1")],
        reporting_instance="gaia-kube",
        at=at,
        seq=1,
    )
    assert few["note"] == (
        "Successfully assigned 3 pod(s) of app web to 2 node(s): "
        "web-0 to gpu-1, web-1 to gpu-2, web-2 to gpu-1"
    )
    assert few["regarding"] == {
        "apiVersion": "gaia.io/v1",
        "kind": "App",
        "namespace": "biz-1",
        "name": "web",
    }
    assert (few["reason"], few["action"], few["type"]) == ("Scheduled", "Binding", "Normal")
    assert few["eventTime"] == "2024-05-01T10:00:00.000000Z"
    assert is_batch_event(few)
    as_core_v1 = {  # how the provider's watch (core/v1) reads it back
        **{k: v for k, v in few.items() if k not in ("regarding", "reportingController")},
        "involvedObject": few["regarding"],
        "reportingComponent": few["reportingController"],
    }
    assert is_batch_event(kept_event(as_core_v1))
    assert not is_batch_event({**as_core_v1, "reportingComponent": "kubelet"})
    assert event_from_k8s(few, 1).object_kind == "App"

    many = scheduled_event(
        namespace="biz-1",
        app="web",
        placements=[(f"web-{i}", f"n{i:05d}") for i in range(250)],
        reporting_instance="gaia-kube",
        at=at,
        seq=2,
    )
    note = many["note"]
    assert len(note) <= NOTE_LIMIT
    named = note.count(" to n")
    assert named > 10 and note.endswith(f" and {250 - named} more")
    assert many["metadata"]["name"] != few["metadata"]["name"]


def test_placements_are_written_as_one_event_per_app_and_window() -> None:
    asyncio.run(_placements_in_windows())


async def _placements_in_windows() -> None:
    written: list[dict[str, Any]] = []

    async def post(body: dict[str, Any]) -> None:
        written.append(body)

    recorder = ScheduledRecorder(post=post, reporting_instance="gaia-kube", window_s=0.05)
    for i in range(5):
        recorder.note(namespace="biz-1", app="web", pod=f"web-{i}", node="gpu-1")
    recorder.note(namespace="biz-1", app="api", pod="api-0", node="gpu-2")
    assert written == []  # nothing before the window has passed
    await asyncio.sleep(0.2)
    assert sorted(e["regarding"]["name"] for e in written) == ["api", "web"]
    web = next(e for e in written if e["regarding"]["name"] == "web")
    assert web["note"].startswith("Successfully assigned 5 pod(s) of app web to 1 node(s)")
    recorder.note(namespace="biz-1", app="web", pod="web-5", node="gpu-1")
    await recorder.close()  # what is left is written at close
    assert len(written) == 3 and "web-5 to gpu-1" in written[-1]["note"]
