"""Publishing this node's GPUs on its Node object, where the scheduler extender and the platform
read them: one reconcile function and a thin loop, as a Kubernetes controller is written.

What flows in is a ``GpuSnapshot`` (``gaia.node.gpus``) and the Node as the API server has it;
what flows out is a JSON merge patch of the Node's labels and annotations, or None when the Node
already says what the snapshot says (``node_patch``, pure: level-triggered and idempotent, so a
second pass changes nothing). ``NodePublisher`` observes, calls it and applies the patch:
``publish_once()`` is one pass, ``run(stop)`` repeats it every ``interval_s`` until ``stop`` is
set. The agent owns the task that runs it and sets ``stop`` to end it.

What it writes (keys from ``gaia.kube.labels``; formats and readers in ``gaia.kube.nodes``):

======================= ========== =========================================================
key                     kind       value
======================= ========== =========================================================
gaia.io/gpu-model       label      the cards' model as GPU feature discovery spells it
                                   (``NVIDIA-H100-80GB-HBM3``); left alone when cards differ
gaia.io/gpu-topology    annotation the ``nvidia-smi topo -m`` matrix (``encode_gpu_topology``)
gaia.io/gpu-health      annotation ``{"3": ["XID 79 (GPU has fallen off the bus)"]}``;
                                   ``{}`` when all are healthy (a reader knows it runs)
gaia.io/gpu-numa        annotation ``{"0": [0, "0-55,112-167"], ...}``: NUMA node or null,
                                   and the nearest cores
gaia.io/gpu-memory-used annotation ``{"0": 31000}``: MiB the card's processes hold (idle
                                   cards left out), rewritten past the hysteresis below
======================= ========== =========================================================

**Why process memory is an annotation with hysteresis, not one per second.** Every write of a
Node wakes every watcher of Nodes (kube-scheduler, the extender's informers, the platform's
provider) and costs an etcd revision; memory use moves all the time. So the value is rewritten
only when a card goes idle or busy, or moves by more than ``MEMORY_STEP_MIB`` or
``MEMORY_STEP_SHARE`` of the card: enough to see which cards hold memory nobody scheduled there,
at a cost of a few writes an hour. Per-process detail stays in the snapshot (and the agent's
logs); a per-second series is a metrics exporter's job (DCGM exporter), not the Node's.

The loop never removes a key: a node whose NVML stops answering keeps its last facts rather
than looking like a node without GPUs. It reads the Node once per ``resync_s`` and otherwise
works from the Node its last patch returned (a patch of metadata needs no resourceVersion), so a
pass without change costs no request at all; an API error drops that copy and is logged, and
the next pass starts again from a fresh read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from gaia.kube.labels import (
    GPU_HEALTH_ANNOTATION,
    GPU_MEMORY_USED_ANNOTATION,
    GPU_MODEL_LABEL,
    GPU_NUMA_ANNOTATION,
    GPU_TOPOLOGY_ANNOTATION,
)
from gaia.kube.nodes import encode_gpu_health, encode_gpu_numa, encode_gpu_topology
from gaia.node.gpus import GpuReader, GpuSnapshot

log = logging.getLogger(__name__)

MEMORY_STEP_MIB = 1024
MEMORY_STEP_SHARE = 0.05  # of the card's memory
DEFAULT_INTERVAL_S = 10.0
DEFAULT_RESYNC_S = 300.0

# The API calls the publisher makes (group, resource, verb): what its RBAC must allow, no more.
PUBLISHER_API_CALLS = frozenset({("", "nodes", "get"), ("", "nodes", "patch")})

_LABEL_VALUE_MAX = 63


def model_label_value(model: str) -> str:
    """A product name as a label value, the way GPU feature discovery writes
    ``nvidia.com/gpu.product``: ``NVIDIA H100 80GB HBM3`` -> ``NVIDIA-H100-80GB-HBM3``."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", model.strip())[:_LABEL_VALUE_MAX]
    return value.strip("-_.")


def _memory_used(snapshot: GpuSnapshot) -> dict[int, int]:
    return {i: mib for i, mib in snapshot.memory_used_mib().items() if mib > 0}


def _read_memory_used(raw: str | None) -> dict[int, int] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        return {int(k): int(v) for k, v in doc.items()}
    except (ValueError, TypeError, AttributeError):
        return None  # not ours, or broken: rewrite it


def _memory_moved(
    published: dict[int, int] | None, now: dict[int, int], card_mib: Mapping[int, int]
) -> bool:
    """Whether ``gaia.io/gpu-memory-used`` is worth rewriting (see the module docstring)."""
    if published is None or published.keys() != now.keys():
        return True  # never written, or a card went idle or busy
    for index, mib in now.items():
        step = max(MEMORY_STEP_MIB, int(card_mib.get(index, 0) * MEMORY_STEP_SHARE))
        if abs(mib - published[index]) > step:
            return True
    return False


def desired_metadata(snapshot: GpuSnapshot) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations the snapshot asks for, but process memory (which has its own
    rule)."""
    labels: dict[str, str] = {}
    models = {c.model for c in snapshot.cards if c.model}
    if len(models) == 1:
        value = model_label_value(models.pop())
        if value:
            labels[GPU_MODEL_LABEL] = value
    annotations = {
        GPU_HEALTH_ANNOTATION: encode_gpu_health(snapshot.unhealthy()),
        GPU_NUMA_ANNOTATION: encode_gpu_numa(
            {
                c.index: (c.numa_node, c.cpus)
                for c in snapshot.cards
                if c.numa_node is not None or c.cpus
            }
        ),
    }
    if snapshot.topology is not None:
        annotations[GPU_TOPOLOGY_ANNOTATION] = encode_gpu_topology(snapshot.topology.links)
    return labels, annotations


def node_patch(current: Mapping[str, Any], snapshot: GpuSnapshot) -> dict[str, Any] | None:
    """The merge patch that makes Node ``current`` say what ``snapshot`` says; None when it
    already does (so applying the result and calling again gives None)."""
    meta = current.get("metadata") or {}
    have_labels: Mapping[str, str] = meta.get("labels") or {}
    have_annotations: Mapping[str, str] = meta.get("annotations") or {}
    want_labels, want_annotations = desired_metadata(snapshot)
    labels = {k: v for k, v in want_labels.items() if have_labels.get(k) != v}
    annotations = {k: v for k, v in want_annotations.items() if have_annotations.get(k) != v}
    used = _memory_used(snapshot)
    card_mib = {c.index: c.memory_mib for c in snapshot.cards}
    if _memory_moved(
        _read_memory_used(have_annotations.get(GPU_MEMORY_USED_ANNOTATION)), used, card_mib
    ):
        encoded = json.dumps({str(i): m for i, m in sorted(used.items())}, separators=(",", ":"))
        if have_annotations.get(GPU_MEMORY_USED_ANNOTATION) != encoded:
            annotations[GPU_MEMORY_USED_ANNOTATION] = encoded
    if not labels and not annotations:
        return None
    patch: dict[str, Any] = {}
    if labels:
        patch["labels"] = labels
    if annotations:
        patch["annotations"] = annotations
    return {"metadata": patch}


class NodePublisher:
    """Keeps Node ``node_name`` saying what ``reader`` sees (see the module docstring)."""

    def __init__(
        self,
        *,
        client: AsyncClient,
        node_name: str,
        reader: GpuReader,
        resync_s: float = DEFAULT_RESYNC_S,
        clock: Any = time.monotonic,
    ) -> None:
        self._client = client
        self._node_name = node_name
        self._reader = reader
        self._resync_s = resync_s
        self._clock = clock
        self._node: dict[str, Any] | None = None  # the Node as last read or patched
        self._read_at = 0.0
        self.last_snapshot: GpuSnapshot | None = None

    async def publish_once(self) -> bool:
        """One pass: read the GPUs, patch the Node if it says otherwise. True when it patched."""
        # NVML calls block (an event wait, a driver call): off the event loop
        snapshot = await asyncio.to_thread(self._reader.snapshot)
        return await self.publish(snapshot)

    async def publish(self, snapshot: GpuSnapshot) -> bool:
        """Patch the Node if it says otherwise than ``snapshot`` (the node agent reads once per
        pass for the device plugin and this); True when it patched."""
        self.last_snapshot = snapshot
        try:
            if self._node is None or self._clock() - self._read_at >= self._resync_s:
                node = await self._client.get(Node, self._node_name)
                self._node, self._read_at = node.to_dict(), self._clock()
            patch = node_patch(self._node, snapshot)
            if patch is None:
                return False
            patched = await self._client.patch(
                Node, self._node_name, patch, patch_type=PatchType.MERGE
            )
        except ApiError:
            self._node = None  # read it afresh next time
            raise
        self._node = patched.to_dict()
        unhealthy = snapshot.unhealthy()
        log.info(
            "node %s: published %s (unhealthy cards: %s)",
            self._node_name,
            ", ".join(
                sorted(
                    {
                        **patch["metadata"].get("labels", {}),
                        **patch["metadata"].get("annotations", {}),
                    }
                )
            ),
            unhealthy or "none",
        )
        return True

    async def run(self, stop: asyncio.Event, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """``publish_once`` every ``interval_s`` until ``stop`` is set; a failed pass is logged
        and the next one tries again (the API server may be restarting)."""
        while not stop.is_set():
            try:
                await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._node = None
                log.warning("node %s: publishing the GPUs failed: %s", self._node_name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
