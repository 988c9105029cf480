"""The extender's bind step: choose the cards on the node kube-scheduler picked, record them on
the node, and bind the pod with them (``ExtenderBindingArgs`` in, ``ExtenderBindingResult`` out).

``ExtenderBindingArgs`` names the pod but does not carry it, so a ``Binder`` (the API-server side;
``server.KubernetesBinder`` over HTTP, fakes in tests) reads the pod and the node, writes the
node's ``gaia.io/gpu-used`` annotation with a ``resourceVersion`` precondition, and binds.

Order: read the pod; for a GPU pod read the node, choose cards with the scheduler (the same
``decisions.why_not_here`` check as filter, since the node may have changed since), add the pod's
share to ``gaia.io/gpu-used`` as a compare-and-swap (on a race, read and decide again, up to
``NODE_UPDATE_ATTEMPTS`` times); then bind with ``gaia.io/gpu-ids`` (and ``gaia.io/cpu-set`` when
the scheduler chose cores near the cards) as annotations, which the API server copies onto the
pod in the same write that sets ``spec.nodeName``, so there is no moment where the pod is bound
without its GPU ids. A failed bind gives the cards back; if giving back fails too the node
over-counts until the annotation is rewritten from the pods, which errs on the safe side (a card
shown as used is never handed out twice). A whole card counts as all of its memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gaia.kube.fields import optional_object, string
from gaia.kube.labels import (
    CPU_SET_ANNOTATION,
    GPU_IDS_ANNOTATION,
    GPU_USED_ANNOTATION,
    cpuset,
    gpu_ids_value,
)
from gaia.kube.nodes import GpuUse, encode_gpu_used
from gaia.scheduler.extender.decisions import (
    ExtenderNode,
    PlacementScheduler,
    card_share,
    node_view,
    parse_node,
    pod_request,
    why_not_here,
)
from gaia.scheduler.extender.protocol import (
    BadExtenderRequest,
    ExtenderBindingArgs,
    ExtenderBindingResult,
)
from gaia.scheduler.port import WHOLE_CARD, ClusterView, Placement, PlacementRequest, Unschedulable

NODE_UPDATE_ATTEMPTS = 5


class NodeChanged(Exception):
    """The node's ``resourceVersion`` moved between read and write (``Binder`` raises it)."""


class BindFailed(Exception):
    """The API server refused a step of the bind; the message says which and why."""


class Binder(Protocol):
    """The API-server side of the bind step (``KubernetesBinder`` in ``server``).

    ``ExtenderBindingArgs`` names the pod but does not carry it, so the binder also reads the pod
    and the node, and writes the node's GPU annotation with a ``resourceVersion`` precondition."""

    def read_pod(self, *, namespace: str, name: str) -> Mapping[str, Any]:
        """The pod as stored; ``BindFailed`` when it is gone."""
        ...

    def read_node(self, *, name: str) -> Mapping[str, Any]:
        """The node as stored; ``BindFailed`` when it is gone."""
        ...

    def update_node_annotations(
        self, *, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> None:
        """Set these annotations if the node is still at ``resource_version``, else raise
        ``NodeChanged``."""
        ...

    def bind(
        self, *, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]
    ) -> None:
        """Bind the pod to ``node``, setting ``annotations`` on it in the same write."""
        ...


def gpu_use_after(
    used: GpuUse,
    *,
    gpu_ids: Sequence[int],
    request: PlacementRequest,
    memory_per_card: int,
    sign: int = 1,
) -> dict[int, tuple[int, int]]:
    """``used`` with the request's share added on ``gpu_ids`` (``sign=-1``: taken away).

    A whole card counts as all of its memory: its owner may use all of it."""
    _, cores, memory = card_share(request)
    if cores >= WHOLE_CARD:
        memory = max(memory, memory_per_card)
    out = dict(used)
    for card in gpu_ids:
        c, m = out.get(card, (0, 0))
        out[card] = (max(0, min(WHOLE_CARD, c + sign * cores)), max(0, m + sign * memory))
    return out


def _update_gpu_use(
    binder: Binder,
    *,
    node_name: str,
    request: PlacementRequest,
    decide: Callable[[ExtenderNode], tuple[Placement, int]],
) -> Placement:
    """Read the node, ``decide`` (placement, +1 to take / -1 to give back), write the node's
    ``gaia.io/gpu-used`` if nobody changed the node meanwhile; on a race, read and decide again."""
    for _ in range(NODE_UPDATE_ATTEMPTS):
        node = parse_node(binder.read_node(name=node_name))
        if node.problem is not None:
            raise BindFailed(f"node {node_name}: {node.problem}")
        placement, sign = decide(node)
        used = gpu_use_after(
            node.gpus.used,
            gpu_ids=placement.gpu_ids,
            request=request,
            memory_per_card=node.gpus.memory_per_card,
            sign=sign,
        )
        try:
            binder.update_node_annotations(
                name=node_name,
                annotations={GPU_USED_ANNOTATION: encode_gpu_used(used)},
                resource_version=node.resource_version,
            )
        except NodeChanged:
            continue  # another bind on the same node won the race
        return placement
    raise BindFailed(
        f"node {node_name} changed {NODE_UPDATE_ATTEMPTS} times while binding {request.name}; "
        "kube-scheduler will retry the pod"
    )


def _take_gpus(
    binder: Binder, *, node_name: str, request: PlacementRequest, scheduler: PlacementScheduler
) -> Placement:
    def decide(node: ExtenderNode) -> tuple[Placement, int]:
        reason = why_not_here(node, request, scheduler, idle=False)
        if reason is not None:
            raise BindFailed(f"{request.name} no longer fits on {node_name}: {reason}")
        return scheduler.place(request, ClusterView([node_view(node, request)])), 1

    return _update_gpu_use(binder, node_name=node_name, request=request, decide=decide)


def _give_back_gpus(binder: Binder, *, placement: Placement, request: PlacementRequest) -> None:
    _update_gpu_use(
        binder, node_name=placement.node, request=request, decide=lambda _: (placement, -1)
    )


def bind_pod(
    args: Mapping[str, Any], *, binder: Binder, scheduler: PlacementScheduler
) -> dict[str, Any]:
    """Answer a bind call (``ExtenderBindingArgs`` in, ``ExtenderBindingResult`` out, as JSON),
    in the order the module docstring gives."""
    try:
        call = ExtenderBindingArgs.from_wire(args)
        namespace = call.pod_namespace or "default"
        pod = binder.read_pod(namespace=namespace, name=call.pod_name)
        meta = optional_object(pod.get("metadata"), "Pod.metadata")
        spec = optional_object(pod.get("spec"), "Pod.spec")
        uid = string(meta.get("uid"), "Pod.metadata.uid")
        if call.pod_uid and uid and uid != call.pod_uid:
            raise BindFailed(
                f"pod {namespace}/{call.pod_name} is now uid {uid}, not {call.pod_uid}: it was "
                "replaced while being scheduled"
            )
        bound_to = string(spec.get("nodeName"), "Pod.spec.nodeName")
        if bound_to:
            if bound_to == call.node:
                return ExtenderBindingResult().to_wire()  # a retried call: already done
            raise BindFailed(f"pod {namespace}/{call.pod_name} is already bound to {bound_to}")
        request = pod_request(pod)
        annotations: dict[str, str] = {}
        placement: Placement | None = None
        if request.resources.gpu > 0:
            placement = _take_gpus(
                binder, node_name=call.node, request=request, scheduler=scheduler
            )
            annotations[GPU_IDS_ANNOTATION] = gpu_ids_value(placement.gpu_ids)
            if placement.cpu_ids:
                annotations[CPU_SET_ANNOTATION] = cpuset(placement.cpu_ids)
        try:
            binder.bind(
                namespace=namespace,
                name=call.pod_name,
                uid=call.pod_uid or uid,
                node=call.node,
                annotations=annotations,
            )
        except BindFailed:
            if placement is not None and placement.gpu_ids:
                # over-counting is the safe side; the bind's own error is what to report
                with contextlib.suppress(BindFailed):
                    _give_back_gpus(binder, placement=placement, request=request)
            raise
    except (BadExtenderRequest, BindFailed, Unschedulable) as exc:
        return ExtenderBindingResult(error=str(exc)).to_wire()
    return ExtenderBindingResult().to_wire()
