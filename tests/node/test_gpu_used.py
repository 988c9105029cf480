"""``gaia.io/gpu-used`` rewritten from the node's pods (``gaia.node.gpu_used``): what counts, and
when the agent writes (only a difference that has settled, with the Node's resourceVersion)."""

from __future__ import annotations

import json
from typing import Any

from gaia.node.deviceplugin.ledger import Granted
from gaia.node.gpu_used import GpuUsedReconciler, used_by_pods
from gaia.node.vgpu import CardShare

CARD_MIB = 81920


def node(used: dict[str, list[int]] | None = None) -> dict[str, Any]:
    annotations = {"gaia.io/gpu-used": json.dumps(used)} if used is not None else {}
    amounts = {"nvidia.com/gpu": "4", "gaia.io/gpu-memory": str(4 * CARD_MIB)}
    return {
        "metadata": {"name": "n", "resourceVersion": "41", "annotations": annotations},
        "status": {"capacity": amounts, "allocatable": amounts},
    }


def pod(
    name: str, *, ids: str | None, limits: dict[str, str], phase: str = "Running"
) -> dict[str, Any]:
    annotations = {"gaia.io/gpu-ids": ids} if ids is not None else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "t",
            "uid": f"uid-{name}",
            "annotations": annotations,
        },
        "spec": {"nodeName": "n", "containers": [{"name": "a", "resources": {"limits": limits}}]},
        "status": {"phase": phase},
    }


PODS = [
    pod("share", ids="1", limits={"gaia.io/gpu-core": "30", "gaia.io/gpu-memory": "4096"}),
    pod("whole", ids="2,3", limits={"nvidia.com/gpu": "2"}),
    pod("done", ids="0", limits={"nvidia.com/gpu": "1"}, phase="Succeeded"),
    pod("foreign", ids=None, limits={"gaia.io/gpu-core": "10"}),
    pod("garbled", ids="x", limits={"gaia.io/gpu-core": "10"}),
]


def test_live_pods_with_gpu_ids_count_as_the_extender_counts_them() -> None:
    assert used_by_pods(PODS, cards=4, memory_per_card=CARD_MIB) == {
        1: (30, 4096),
        2: (100, CARD_MIB),
        3: (100, CARD_MIB),
    }


def test_a_granted_pod_counts_its_grant() -> None:
    granted = Granted(
        allocation_id="uid-foreign-a",
        uid="uid-foreign",
        namespace="t",
        pod="foreign",
        container="a",
        device_ids=("x",),
        shares=(CardShare(index=0, uuid="GPU-0", minor=0, cores=10, memory_mib=8192),),
    )
    used = used_by_pods(PODS, cards=4, memory_per_card=CARD_MIB, grants=[granted])
    assert used[0] == (10, 8192)


def test_only_a_settled_difference_is_written_with_the_resource_version() -> None:
    now = [0.0]
    reconciler = GpuUsedReconciler(settle_s=30, clock=lambda: now[0])
    stale = node({"0": [100, CARD_MIB], "1": [30, 4096]})  # card 0's pod has ended
    assert reconciler.patch(stale, PODS, []) is None  # first seen
    now[0] = 29
    assert reconciler.patch(stale, PODS, []) is None  # not settled yet
    now[0] = 31
    patch = reconciler.patch(stale, PODS, [])
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "41"
    assert json.loads(patch["metadata"]["annotations"]["gaia.io/gpu-used"]) == {
        "1": [30, 4096],
        "2": [100, CARD_MIB],
        "3": [100, CARD_MIB],
    }
    reconciler.written()
    right = node({"1": [30, 4096], "2": [100, CARD_MIB], "3": [100, CARD_MIB]})
    assert reconciler.patch(right, PODS, []) is None


def test_a_difference_that_changes_starts_to_settle_again() -> None:
    now = [0.0]
    reconciler = GpuUsedReconciler(settle_s=30, clock=lambda: now[0])
    assert reconciler.patch(node({}), PODS, []) is None
    now[0] = 20
    # a bind added a share meanwhile (the extender's compare-and-swap): a new difference
    assert reconciler.patch(node({"0": [50, 0]}), PODS, []) is None
    now[0] = 40
    assert reconciler.patch(node({"0": [50, 0]}), PODS, []) is None
    now[0] = 51
    assert reconciler.patch(node({"0": [50, 0]}), PODS, []) is not None
