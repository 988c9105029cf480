"""The node's ``gaia.io/gpu-used`` as its pods say it should be.

The scheduler extender adds a pod's share to the Node's ``gaia.io/gpu-used`` when it binds the
pod, and nothing took it away when the pod ended: the annotation only grew, and a card whose
pods had all finished still looked busy to the extender. Pods that the platform binds itself
(the ``kubernetes`` provider, with ``gaia.io/gpu-ids``) were not in it at all, so the extender
could place a foreign pod on a card an instance holds. The node agent owns the annotation's
truth instead: ``used_by_pods`` counts, per card, every live pod on the node that carries
``gaia.io/gpu-ids``, with the extender's own arithmetic (``gpu_use_after``: a whole card is all
of its memory). A pod the device plugin has granted counts what it was granted (a share that
asked for no memory holds the same fraction of the card's memory as of its cores).

**The race with a bind.** The extender writes the annotation a moment before the pod is bound
(a compare-and-swap, then the binding). An agent that rewrote the annotation in between would
drop that pod's share. So ``GpuUsedReconciler`` writes only a difference that has stayed the
same for ``settle_s`` (30 s by default; a bind takes milliseconds), and writes it with the
Node's ``resourceVersion`` as a precondition, so a bind that changed the Node meanwhile wins
and the agent looks again on its next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gaia.kube.errors import UnreadableObject
from gaia.kube.labels import GPU_IDS_ANNOTATION, GPU_USED_ANNOTATION
from gaia.kube.nodes import GpuUse, encode_gpu_used, read_node
from gaia.node.deviceplugin.assign import read_gpu_ids
from gaia.node.deviceplugin.ledger import Granted
from gaia.scheduler.extender.bind import gpu_use_after
from gaia.scheduler.extender.decisions import pod_request

log = logging.getLogger(__name__)

DEFAULT_SETTLE_S = 30.0


def used_by_pods(
    pods: Iterable[Mapping[str, Any]],
    *,
    cards: int,
    memory_per_card: int,
    grants: Iterable[Granted] = (),
) -> dict[int, tuple[int, int]]:
    """(hundredths, MiB) used per card by the live pods with ``gaia.io/gpu-ids``."""
    granted: dict[str, list[Granted]] = {}
    for grant in grants:
        granted.setdefault(grant.uid, []).append(grant)
    used: dict[int, tuple[int, int]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in (
            "Succeeded",
            "Failed",
        ):
            continue
        uid = str(meta.get("uid", ""))
        if uid in granted:
            for grant in granted[uid]:
                for share in grant.shares:
                    if 0 <= share.index < cards:
                        memory = share.memory_mib if share.cores < 100 else memory_per_card
                        c, m = used.get(share.index, (0, 0))
                        used[share.index] = (min(100, c + share.cores), m + memory)
            continue
        raw = (meta.get("annotations") or {}).get(GPU_IDS_ANNOTATION)
        if raw is None:
            continue
        try:
            ids = [i for i in read_gpu_ids(raw) if 0 <= i < cards]
            request = pod_request(pod)
        except (ValueError, UnreadableObject) as exc:
            log.info(
                "pod %s/%s is not counted in %s: %s",
                meta.get("namespace"),
                meta.get("name"),
                GPU_USED_ANNOTATION,
                exc,
            )
            continue
        if ids and request.resources.gpu > 0:
            used = gpu_use_after(
                used, gpu_ids=ids, request=request, memory_per_card=memory_per_card
            )
    return {card: value for card, value in used.items() if value != (0, 0)}


class GpuUsedReconciler:
    """Decides, pass after pass, when the Node's ``gaia.io/gpu-used`` should be rewritten."""

    def __init__(
        self, *, settle_s: float = DEFAULT_SETTLE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settle_s = settle_s
        self._clock = clock
        self._seen: tuple[str, str] | None = None  # (what is there, what should be)
        self._since = 0.0

    def written(self) -> None:
        """The last patch landed: the next difference settles afresh."""
        self._seen = None

    def patch(
        self, node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], grants: Iterable[Granted]
    ) -> dict[str, Any] | None:
        """The merge patch to write now (with the Node's resourceVersion), or None. A patch
        refused for a newer resourceVersion is asked again on the next pass."""
        view = read_node(node)
        have: GpuUse = view.gpus.used
        want = used_by_pods(
            pods, cards=view.gpus.cards, memory_per_card=view.gpus.memory_per_card, grants=grants
        )
        have_text, want_text = encode_gpu_used(have), encode_gpu_used(want)
        current = view.annotations.get(GPU_USED_ANNOTATION)
        if want_text == have_text and (current is not None or not want):
            self._seen = None
            return None
        if self._seen != (have_text, want_text):
            self._seen, self._since = (have_text, want_text), self._clock()
            return None
        if self._clock() - self._since < self._settle_s:
            return None
        return {
            "metadata": {
                "resourceVersion": view.resource_version,
                "annotations": {GPU_USED_ANNOTATION: want_text},
            }
        }
