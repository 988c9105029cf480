"""Nodes: a core/v1 Node and the pods bound to it as the port's ``Node``, and the Node KWOK
runs for a node added to a simulated cluster, as pure functions.

**Reading** (``node_from_k8s``): the Node itself is read by ``gaia.kube.nodes.read_node``, the
one reader the scheduler extender uses too: capacity is ``status.allocatable`` (cpu millicores,
memory MiB, disk GiB, all rounded down; cards from ``nvidia.com/gpu`` or ``gaia.io/gpu-core`` / 100,
GPU memory from ``gaia.io/gpu-memory``), the model from the ``gaia.io/gpu-model`` label (else
``nvidia.com/gpu.product``), the link matrix from the ``gaia.io/gpu-topology`` annotation (left out,
with a note in ``Node.message``, when it cannot be read or describes other cards). This module adds
the bandwidth, from the node annotation ``gaia.io/bandwidth`` in Mbit/s (10,000 when absent), and
what the pods hold: ``allocated`` sums the effective requests of the given pods bound to the node
and not finished, as kube-scheduler computes them (``gaia.kube.resources``); per-card use comes
from their ``gaia.io/gpu-ids``.

**Writing** (``kwok_node_manifest``): for clusters whose nodes KWOK simulates (demos, scale
tests), a Node with the spec's capacity as allocatable; a real node registers itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector
from gaia.kube.errors import UnreadableObject
from gaia.kube.labels import (
    APP_LABEL,
    GPU_IDS_ANNOTATION,
    GPU_MODEL_LABEL,
    GPU_TOPOLOGY_ANNOTATION,
    KWOK_NODE_ANNOTATION,
    NODE_BANDWIDTH_ANNOTATION,
    ZONE_LABEL,
)
from gaia.kube.nodes import encode_gpu_topology, read_node
from gaia.kube.quantities import clamp_amount
from gaia.kube.resources import (
    GAIA_GPU_MEMORY,
    NVIDIA_GPU,
    WHOLE_CARD,
    held_resources,
    pod_requests,
)
from gaia.providers.kubernetes.fields import (
    as_object,
    as_str_map,
    check_dns_subdomain,
    check_key,
    check_label_value,
    from_kube,
    pod_name,
)
from gaia.providers.kubernetes.pods import FINISHED_PHASES, annotated_resources, card_ids
from gaia.providers.port import Gpu, Node, NodeSpec

DEFAULT_NODE_BANDWIDTH_MBPS = 10_000  # NodeSpec's default


# ------------------------------------------------------------------------------- writing


def kwok_node_manifest(spec: NodeSpec, links: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """A Node for KWOK to run (``kwok.x-k8s.io/node: fake``): the capacity of ``spec`` as
    allocatable, GPUs as ``nvidia.com/gpu`` (+ ``gaia.io/gpu-memory``) with ``links`` as the
    topology annotation, the model as a label, the zone as the well-known label. For clusters
    whose nodes are simulated by KWOK (demos, scale tests); a real node registers itself."""
    check_dns_subdomain(spec.name, "node name")
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
        check_key(key, "node label")
        check_label_value(text, f"node label {key}")
        labels[key] = text
    labels.update({"kubernetes.io/hostname": spec.name, "kubernetes.io/os": "linux"})
    labels["type"] = "kwok"
    if spec.zone:
        check_label_value(spec.zone, "node zone")
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
            check_label_value(spec.gpu_model, "node gpu_model")
            labels[GPU_MODEL_LABEL] = spec.gpu_model
        annotations[GPU_TOPOLOGY_ANNOTATION] = encode_gpu_topology(links)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels, "annotations": annotations},
        "spec": {"taints": []},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


# ------------------------------------------------------------------------------- reading


def _bandwidth(annotations: Mapping[str, str], notes: list[str]) -> int:
    raw = annotations.get(NODE_BANDWIDTH_ANNOTATION, "").strip()
    if not raw:
        return DEFAULT_NODE_BANDWIDTH_MBPS
    if raw.isascii() and raw.isdigit():
        return int(raw)
    notes.append(
        f"annotation {NODE_BANDWIDTH_ANNOTATION} ignored: {raw!r} is not a whole number of Mbit/s"
    )
    return DEFAULT_NODE_BANDWIDTH_MBPS


def node_from_k8s(node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Node:
    """A core/v1 Node and what the given pods hold on it (pods bound elsewhere are skipped)."""
    facts = from_kube(lambda: read_node(node))
    name = facts.name
    gpus = facts.gpus
    cards = gpus.cards
    notes: list[str] = []
    bandwidth = _bandwidth(facts.annotations, notes)
    if GPU_TOPOLOGY_ANNOTATION in gpus.unreadable:
        notes.append(f"{gpus.unreadable[GPU_TOPOLOGY_ANNOTATION]}; ignored")
    capacity = dataclasses.replace(facts.capacity, bandwidth=clamp_amount(bandwidth))
    per_card = gpus.memory_per_card
    gpu_cards = tuple(
        Gpu(
            index=i,
            model=gpus.model,
            memory_mib=per_card,
            numa_node=gpus.numa_node.get(i, 0),
            cpu_ids=gpus.cpus.get(i, ()),  # gaia.io/gpu-numa: instances get pinned next to it
            healthy=i not in gpus.unhealthy,  # gaia.io/gpu-health
        )
        for i in range(cards)
    )
    for card, reasons in sorted(gpus.health_reasons.items()):
        notes.append(f"GPU {card} unhealthy: {'; '.join(reasons)}")

    allocated = ResourceVector()
    gpu_used = dict.fromkeys(range(cards), 0)
    gpu_memory_used = dict.fromkeys(range(cards), 0)
    instance_count = 0
    unplaced = 0
    for pod in pods:
        pod_meta = as_object(pod.get("metadata"), "Pod.metadata")
        pod_where = f"pod {pod_name(pod_meta)}"
        pod_spec = as_object(pod.get("spec"), f"{pod_where}: spec")
        if pod_spec.get("nodeName") != name:
            continue
        if as_object(pod.get("status"), f"{pod_where}: status").get("phase") in FINISHED_PHASES:
            continue
        pod_labels = as_str_map(pod_meta.get("labels"), f"{pod_where}: metadata.labels")
        pod_annotations = as_str_map(
            pod_meta.get("annotations"), f"{pod_where}: metadata.annotations"
        )
        try:
            amounts = pod_requests(pod)
        except UnreadableObject as exc:
            raise InvalidRequest(f"{pod_where}: {exc}") from None
        held = dataclasses.replace(
            held_resources(amounts), **annotated_resources(pod_annotations, pod_where)
        )
        allocated = allocated + held
        if pod_labels.get(APP_LABEL):
            instance_count += 1
        if held.gpu <= 0:
            continue
        try:
            ids = card_ids(pod_annotations.get(GPU_IDS_ANNOTATION), f"{pod_where}: gpu ids")
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
    if not facts.ready:
        notes.insert(0, facts.ready_message or "node is not ready")
    return Node(
        name=name,
        ready=facts.ready,
        schedulable=facts.schedulable,
        zone=facts.zone,
        labels=dict(facts.labels),
        host_ip=facts.host_ip,
        capacity=capacity,
        allocated=allocated,
        gpus=gpu_cards,
        gpu_links=gpus.links,
        gpu_used={card: min(used, WHOLE_CARD) for card, used in gpu_used.items()},
        gpu_memory_used=gpu_memory_used,
        instance_count=instance_count,
        message="; ".join(notes),
    )
