"""The scheduler extender: wire format, decisions, the HTTP app and the API-server binder.

The wire format is checked twice: our golden documents (written from
``k8s.io/kube-scheduler/extender/v1`` types.go, whose fields have no json tags, so the keys are the
Go field names) round-trip through our own types, and they and everything our endpoints answer
survive a decode/encode through the upstream Go types themselves (``tests/support/extender_wire``,
built once with the Go toolchain; without Go or the module proxy the check is skipped locally and
fails in CI).

The binder is tested against a small API server of our own on 127.0.0.1 that keeps pods and
nodes, applies merge patches with the ``resourceVersion`` precondition and Binding writes as the
real one does, and records every request.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gaia.domain.resources import ResourceVector
from gaia.kube import KubeCredentials, parse_quantity
from gaia.kube.labels import CPU_SET_ANNOTATION, GPU_IDS_ANNOTATION, GPU_USED_ANNOTATION, cpuset
from gaia.scheduler.extender.bind import BindFailed, NodeChanged
from gaia.scheduler.extender.decisions import filter_nodes, node_view, parse_node, pod_request
from gaia.scheduler.extender.protocol import (
    BadExtenderRequest,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderBindingResult,
    ExtenderFilterResult,
    HostPriority,
)
from gaia.scheduler.extender.server import (
    KubernetesBinder,
    binder_from,
    create_app,
    in_cluster_credentials,
)
from gaia.scheduler.fit import ResourceFitScheduler
from gaia.scheduler.port import (
    ClusterView,
    NodeView,
    Placement,
    PlacementRequest,
    Unschedulable,
    pick_gpus,
    why_not,
)
from tests.conftest import missing_component
from tests.support.kube import wait_healthy
from tests.support.paths import REPO

ROOT = REPO
WIRE_SOURCE = ROOT / "tests" / "support" / "extender_wire"
V100 = "Tesla-V100-SXM2-16GB"

# ------------------------------------------------------------------------------- documents


def pod_doc(
    *,
    name: str = "trainer-0",
    uid: str = "6f1c2a9e-0000-4000-8000-000000000001",
    requests: Mapping[str, str] | None = None,
    limits: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    node_selector: Mapping[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Pod as kube-scheduler sends it (quantities in canonical form, as stored)."""
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = dict(limits)
    if requests:
        resources["requests"] = dict(requests)
    doc: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ml", "uid": uid, "resourceVersion": "812"},
        "spec": {
            "containers": [
                {"name": "main", "image": "registry.local/trainer:1", "resources": resources}
            ],
            "schedulerName": "default-scheduler",
            **spec,
        },
        "status": {"phase": "Pending"},
    }
    if annotations:
        doc["metadata"]["annotations"] = dict(annotations)
    if node_selector:
        doc["spec"]["nodeSelector"] = dict(node_selector)
    return doc


def node_doc(
    name: str,
    *,
    allocatable: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    ready: bool = True,
    resource_version: str = "100",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": resource_version,
            "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            "annotations": dict(annotations or {}),
        },
        "spec": {},
        "status": {
            "capacity": dict(allocatable),
            "allocatable": dict(allocatable),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


NV4 = [["X" if a == b else "NV2" for b in range(4)] for a in range(4)]
PCIE2 = [["X", "PIX"], ["PIX", "X"]]

TRAINER = pod_doc(
    requests={"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
    limits={"nvidia.com/gpu": "2"},
    annotations={"gaia.io/gpu-model": V100},
    node_selector={"pool": "gpu"},
)
GPU_A = node_doc(
    "gpu-a",
    allocatable={"cpu": "31500m", "memory": "120Gi", "nvidia.com/gpu": "4", "pods": "110"},
    annotations={"gaia.io/gpu-topology": json.dumps(NV4)},
    labels={"pool": "gpu", "nvidia.com/gpu.product": V100},
)
GPU_B = node_doc(
    "gpu-b",
    allocatable={"cpu": "31500m", "memory": "120Gi", "nvidia.com/gpu": "2", "pods": "110"},
    annotations={
        "gaia.io/gpu-topology": json.dumps(PCIE2),
        "gaia.io/gpu-used": '{"0":[100,0]}',
    },
    labels={"pool": "gpu", "gaia.io/gpu-model": V100},
)
CPU_C = node_doc(
    "cpu-c",
    allocatable={"cpu": "63", "memory": "250Gi", "pods": "110"},
    labels={"pool": "gpu"},
)

# Golden documents, one per upstream type, as kube-scheduler (Go's encoding/json) writes them:
# every field, Go's field names, no omitempty.
GOLDEN_ARGS: dict[str, Any] = {
    "Pod": TRAINER,
    "Nodes": {"metadata": {}, "items": [GPU_A, GPU_B, CPU_C]},
    "NodeNames": None,
}
GOLDEN_ARGS_CACHE_CAPABLE: dict[str, Any] = {
    "Pod": TRAINER,
    "Nodes": None,
    "NodeNames": ["gpu-a", "gpu-b"],
}
GOLDEN_FILTER_RESULT: dict[str, Any] = {
    "Nodes": {"metadata": {}, "items": [GPU_A]},
    "NodeNames": None,
    "FailedNodes": {"gpu-b": "Insufficient gpu"},
    "FailedAndUnresolvableNodes": {"cpu-c": f"node(s) without {V100} GPUs"},
    "Error": "",
}
GOLDEN_FILTER_ERROR: dict[str, Any] = {
    "Nodes": None,
    "NodeNames": None,
    "FailedNodes": {},
    "FailedAndUnresolvableNodes": {},
    "Error": (
        "spec.containers[0].resources.requests[cpu]: 'lots' is not a quantity "
        "(a number with an optional suffix: 500m, 2Gi, 1e3)"
    ),
}
GOLDEN_PRIORITIES: list[dict[str, Any]] = [
    {"Host": "gpu-a", "Score": 10},
    {"Host": "gpu-b", "Score": 0},
    {"Host": "cpu-c", "Score": 0},
]
GOLDEN_BINDING_ARGS: dict[str, Any] = {
    "PodName": "trainer-0",
    "PodNamespace": "ml",
    "PodUID": "6f1c2a9e-0000-4000-8000-000000000001",
    "Node": "gpu-a",
}
GOLDEN_BINDING_RESULT: dict[str, Any] = {"Error": ""}
GOLDEN_BINDING_FAILURE: dict[str, Any] = {"Error": "pod ml/trainer-0 is already bound to gpu-b"}

GOLDEN: list[tuple[str, Any]] = [
    ("ExtenderArgs", GOLDEN_ARGS),
    ("ExtenderArgs", GOLDEN_ARGS_CACHE_CAPABLE),
    ("ExtenderFilterResult", GOLDEN_FILTER_RESULT),
    ("ExtenderFilterResult", GOLDEN_FILTER_ERROR),
    ("HostPriorityList", GOLDEN_PRIORITIES),
    ("ExtenderBindingArgs", GOLDEN_BINDING_ARGS),
    ("ExtenderBindingResult", GOLDEN_BINDING_RESULT),
    ("ExtenderBindingResult", GOLDEN_BINDING_FAILURE),
]


def our_round_trip(kind: str, doc: Any) -> Any:
    if kind == "ExtenderArgs":
        return ExtenderArgs.from_wire(doc).to_wire()
    if kind == "ExtenderFilterResult":
        return ExtenderFilterResult.from_wire(doc).to_wire()
    if kind == "HostPriorityList":
        return [p.to_wire() for p in HostPriority.list_from_wire(doc)]
    if kind == "ExtenderBindingArgs":
        return ExtenderBindingArgs.from_wire(doc).to_wire()
    if kind == "ExtenderBindingResult":
        return ExtenderBindingResult.from_wire(doc).to_wire()
    raise AssertionError(kind)


def lowercased_keys(doc: Any, depth: int = 1) -> Any:
    """The envelope's keys in lower case (what upstream's TestCompatibility feeds the decoder)."""
    if isinstance(doc, list):
        return [lowercased_keys(item, depth) for item in doc]
    if isinstance(doc, dict) and depth > 0:
        return {k.lower(): v for k, v in doc.items()}
    return doc


# ------------------------------------------------------------------------------- the Go check


def _is_zero(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_is_zero(v) for v in value.values())
    return value is None or value == "" or value == 0 or value is False or value == []


def wire_differences(ours: Any, theirs: Any, path: str = "$") -> list[str]:
    """How ``theirs`` (our document after the upstream decode/encode) differs from ``ours``.

    Every key we wrote must come back under the same name with the same value. The only leeway
    is for zero values: Go adds those of fields we left out (``"status": {}``, ``"Port": 0``)
    and leaves out empty ``omitempty`` fields we wrote (``"annotations": {}``). The envelopes
    have no ``omitempty`` fields and are compared byte for byte besides."""
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [f"{path}: became {theirs!r}"]
        problems = []
        for key, value in ours.items():
            if key not in theirs:
                if not _is_zero(value):  # Go leaves out empty omitempty fields ("annotations")
                    problems.append(f"{path}.{key}: not a field of the upstream type (dropped)")
            else:
                problems += wire_differences(value, theirs[key], f"{path}.{key}")
        for key, value in theirs.items():
            if key not in ours and not _is_zero(value):
                problems.append(f"{path}.{key}: the upstream type added {value!r}")
        return problems
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            return [f"{path}: became {theirs!r}"]
        return [
            p
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            for p in wire_differences(a, b, f"{path}[{i}]")
        ]
    if ours != theirs or type(ours) is not type(theirs):
        return [f"{path}: {ours!r} came back as {theirs!r}"]
    return []


_NETWORK_TROUBLE = (
    "dial tcp",
    "no such host",
    "connection refused",
    "i/o timeout",
    "TLS handshake",
    "proxy.golang.org",
    "GOPROXY",
    "requires go >=",
    "toolchain",
)


@pytest.fixture(scope="session")
def extender_wire() -> Path:
    """The upstream round-trip program, built once per source change into build/extender-wire."""
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        missing_component("Go", "install Go 1.26 or newer to check the extender wire format")
        raise AssertionError("unreachable")
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=readonly -buildvcs=false",
        "CGO_ENABLED": "0",
    }
    version = subprocess.run([go, "version"], capture_output=True, text=True, env=env).stdout
    digest = hashlib.sha256(version.encode())
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((WIRE_SOURCE / name).read_bytes())
    binary = ROOT / "build" / "extender-wire" / digest.hexdigest()[:16] / "extender-wire"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"extender-wire.{os.getpid()}.partial")
    build = subprocess.run(
        [go, "build", "-trimpath", "-o", str(partial), "."],
        cwd=WIRE_SOURCE,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if build.returncode != 0:
        lines = (build.stderr + build.stdout).splitlines()
        output = "\n".join(line for line in lines if not line.startswith("go: downloading"))
        if any(marker in output for marker in _NETWORK_TROUBLE):
            missing_component(
                "The Go module k8s.io/kube-scheduler (the upstream extender types)",
                f"go build could not fetch or use it (Go module proxy reachable?): {output[-600:]}",
            )
        pytest.fail(f"go build of tests/support/extender_wire failed:\n{output}", pytrace=False)
    partial.replace(binary)
    return binary


def upstream_round_trip(binary: Path, items: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    payload = json.dumps([{"type": kind, "document": doc} for kind, doc in items])
    run = subprocess.run([str(binary)], input=payload, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    answers: list[dict[str, Any]] = json.loads(run.stdout)
    assert len(answers) == len(items)
    return answers


def assert_survives_upstream(binary: Path, items: list[tuple[str, Any]]) -> None:
    problems = []
    for (kind, doc), answer in zip(items, upstream_round_trip(binary, items), strict=True):
        if "error" in answer:
            problems.append(f"{kind}: the upstream decoder refused it: {answer['error']}")
            continue
        problems += [f"{kind}: {p}" for p in wire_differences(doc, answer["document"])]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- wire format


@pytest.mark.parametrize(("kind", "doc"), GOLDEN, ids=[k for k, _ in GOLDEN])
def test_golden_documents_round_trip_through_our_types(kind: str, doc: Any) -> None:
    assert our_round_trip(kind, doc) == doc


@pytest.mark.parametrize(("kind", "doc"), GOLDEN, ids=[k for k, _ in GOLDEN])
def test_keys_are_read_case_insensitively_like_go(kind: str, doc: Any) -> None:
    assert our_round_trip(kind, lowercased_keys(doc)) == doc


def test_golden_documents_survive_the_upstream_types(extender_wire: Path) -> None:
    assert_survives_upstream(extender_wire, GOLDEN)


def test_envelopes_come_back_from_upstream_byte_for_byte(extender_wire: Path) -> None:
    items = [(k, d) for k, d in GOLDEN if k not in ("ExtenderArgs", "ExtenderFilterResult")]
    items.append(("ExtenderFilterResult", GOLDEN_FILTER_ERROR))
    for (_, doc), answer in zip(items, upstream_round_trip(extender_wire, items), strict=True):
        assert answer["document"] == doc


def test_the_upstream_check_catches_wrong_names_and_unknown_fields(extender_wire: Path) -> None:
    # Go's decoder accepts "host" for "Host", but writes "Host": a document with the wrong casing
    # does not survive unchanged, so the check above would notice it.
    (answer,) = upstream_round_trip(
        extender_wire, [("HostPriorityList", [{"host": "a", "score": 1}])]
    )
    assert wire_differences([{"host": "a", "score": 1}], answer["document"])
    (answer,) = upstream_round_trip(extender_wire, [("ExtenderBindingResult", {"Message": "x"})])
    assert "unknown field" in answer["error"]
    (answer,) = upstream_round_trip(
        extender_wire, [("HostPriorityList", [{"Host": "a", "Score": 1.5}])]
    )
    assert "error" in answer  # Score is an int64


def test_everything_the_endpoints_answer_survives_the_upstream_types(extender_wire: Path) -> None:
    app = create_app(scheduler=ResourceFitScheduler(), binder=None)
    client = TestClient(app)
    bad = copy.deepcopy(GOLDEN_ARGS)
    bad["Pod"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "lots"
    items: list[tuple[str, Any]] = [
        ("ExtenderFilterResult", client.post("/filter", json=GOLDEN_ARGS).json()),
        ("ExtenderFilterResult", client.post("/filter", json=bad).json()),
        ("ExtenderFilterResult", client.post("/filter", content=b"{").json()),
        ("HostPriorityList", client.post("/prioritize", json=GOLDEN_ARGS).json()),
        ("HostPriorityList", client.post("/prioritize", json=bad).json()),
        ("ExtenderBindingResult", client.post("/bind", json=GOLDEN_BINDING_ARGS).json()),
    ]
    assert_survives_upstream(extender_wire, items)
    assert items[0][1] == GOLDEN_FILTER_RESULT
    assert items[1][1] == GOLDEN_FILTER_ERROR
    assert items[3][1] == GOLDEN_PRIORITIES


# ------------------------------------------------------------------------------- quantities

QUANTITIES = [
    ("0", "0"),
    ("500m", "0.5"),
    ("1", "1"),
    ("1.5", "1.5"),
    (".5", "0.5"),
    ("2.", "2"),
    ("+3", "3"),
    ("-2", "-2"),
    ("100k", "100000"),
    ("1M", "1000000"),
    ("2G", "2000000000"),
    ("1T", "1000000000000"),
    ("1P", "1000000000000000"),
    ("1E", "1000000000000000000"),
    ("1Ki", "1024"),
    ("1.5Ki", "1536"),
    ("2Gi", "2147483648"),
    ("3Ti", "3298534883328"),
    ("1Pi", "1125899906842624"),
    ("1Ei", "1152921504606846976"),
    ("1e3", "1000"),
    ("1E3", "1000"),
    ("1e-3", "0.001"),
    ("2.5e2", "250"),
    ("1e+2", "100"),
    ("250u", "0.00025"),
    ("7n", "0.000000007"),
    ("0.0000000001", "0.000000001"),  # finer than 1n rounds up to 1n
    ("1.0000000001", "1.000000001"),
    ("31500m", "31.5"),
    ("129Mi", "135266304"),
    ("7Ei", "8070450532247928832"),
    ("9223372036854775807", "9223372036854775807"),
    ("1e-40", "0.000000001"),
    ("-0.1n", "-0.000000001"),
]


@pytest.mark.parametrize(("text", "value"), QUANTITIES)
def test_quantities_parse_exactly(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


def test_quantities_may_be_json_numbers_like_go_accepts() -> None:
    assert parse_quantity(2) == 2
    assert parse_quantity(0.25) == Decimal("0.25")


@pytest.mark.parametrize(
    "text", ["", "Gi", "1e", "1.2.3", "abc", "1ki", "1 Gi", "--1", "1e99999", "9Ei", "1e19"]
)
def test_malformed_quantities_are_refused(text: str) -> None:
    with pytest.raises(BadExtenderRequest):
        parse_quantity(text)


def test_quantities_agree_with_the_upstream_parser(extender_wire: Path) -> None:
    items: list[tuple[str, Any]] = [("Quantity", text) for text, _ in QUANTITIES]
    for (_, text), answer in zip(items, upstream_round_trip(extender_wire, items), strict=True):
        assert "error" not in answer, (text, answer)
        assert parse_quantity(text) == Decimal(answer["decimal"]), text
    for text in ["1e", "1.2.3", "abc", "1ki", "1 Gi", "--1"]:
        (answer,) = upstream_round_trip(extender_wire, [("Quantity", text)])
        assert "error" in answer, text


# ------------------------------------------------------------------------------- pods


@pytest.mark.parametrize(
    ("resources", "gpu", "gpu_memory"),
    [
        ({"nvidia.com/gpu": "2"}, 200, 0),
        ({"tencent.com/vcuda-core": "50", "tencent.com/vcuda-memory": "10"}, 50, 2560),
        ({"gaia.io/gpu-core": "25", "gaia.io/gpu-memory": "4096"}, 25, 4096),
        ({"gaia.io/gpu-core": "200", "gaia.io/gpu-memory": "8192"}, 200, 8192),
        ({"tencent.com/vcuda-core": "100"}, 100, 0),
    ],
)
def test_gpu_resource_names_of_every_peer(
    resources: dict[str, str], gpu: int, gpu_memory: int
) -> None:
    request = pod_request(pod_doc(requests=resources, limits=resources))
    assert (request.resources.gpu, request.resources.gpu_memory) == (gpu, gpu_memory)


def test_extended_resources_given_only_as_limits_count() -> None:
    request = pod_request(pod_doc(limits={"nvidia.com/gpu": "1", "cpu": "2"}))
    assert request.resources.gpu == 100
    assert request.resources.cpu == 2000


def test_cpu_memory_and_disk_round_up_to_gaia_units() -> None:
    request = pod_request(
        pod_doc(requests={"cpu": "1500u", "memory": "1025Ki", "ephemeral-storage": "1G"})
    )
    assert request.resources == ResourceVector(cpu=2, memory=2, local_disk=1)


def test_init_containers_are_a_floor_and_sidecars_add_up() -> None:
    pod = pod_doc(requests={"cpu": "1", "memory": "1Gi"})
    pod["spec"]["initContainers"] = [
        {"name": "fetch", "resources": {"requests": {"cpu": "3", "memory": "512Mi"}}},
        {
            "name": "proxy",
            "restartPolicy": "Always",
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
        },
        {"name": "warm", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}},
    ]
    # containers + sidecar = 1.5 cores, 1280 MiB; init "fetch" alone 3 cores;
    # init "warm" beside the sidecar 2.5 cores and 2304 MiB.
    assert pod_request(pod).resources == ResourceVector(cpu=3000, memory=2304)


def test_pod_level_requests_win_and_overhead_is_added() -> None:
    pod = pod_doc(requests={"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"})
    pod["spec"]["resources"] = {"requests": {"cpu": "4"}}
    pod["spec"]["overhead"] = {"cpu": "250m", "memory": "64Mi"}
    assert pod_request(pod).resources == ResourceVector(cpu=4250, memory=1088, gpu=100)


def test_pod_annotations_choose_model_and_link() -> None:
    pod = pod_doc(
        requests={"nvidia.com/gpu": "2"},
        annotations={"gaia.io/gpu-model": V100, "gaia.io/gpu-link": "nv1"},
        node_selector={"pool": "gpu"},
    )
    request = pod_request(pod)
    assert (request.name, request.gpu_model, request.max_link) == ("ml/trainer-0", V100, "NV1")
    assert request.node_selector == {"pool": "gpu"}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gaia.io/gpu-core": "150"}, "whole cards"),
        ({"nvidia.com/gpu": "1", "gaia.io/gpu-core": "50"}, "whole cards"),
        ({"gaia.io/gpu-memory": "1024"}, "no GPU cores"),
        ({"nvidia.com/gpu": "500m"}, "whole number"),
        ({"cpu": "-1"}, "negative"),
    ],
)
def test_requests_the_cards_cannot_serve_are_refused(
    resources: dict[str, str], message: str
) -> None:
    with pytest.raises(BadExtenderRequest, match=message):
        pod_request(pod_doc(requests=resources))


# ------------------------------------------------------------------------------- nodes


def test_node_gpu_state_comes_from_the_annotations() -> None:
    doc = node_doc(
        "gpu-s",
        allocatable={
            "cpu": "16",
            "memory": "64Gi",
            "ephemeral-storage": "100Gi",
            "gaia.io/gpu-core": "200",
            "gaia.io/gpu-memory": "32768",
        },
        annotations={
            "gaia.io/gpu-topology": '[["X","SYS"],["SYS","X"]]',
            "gaia.io/gpu-used": '{"1":[30,4096]}',
        },
        labels={"gaia.io/gpu-model": "Tesla P40", "topology.kubernetes.io/zone": "z1"},
    )
    node = parse_node(doc)
    assert (node.gpus.cards, node.gpus.memory_per_card, node.gpus.model) == (2, 16384, "Tesla P40")
    view = node_view(node, pod_request(pod_doc(requests={"gaia.io/gpu-core": "50"})))
    assert view.gpu_free == {0: 100, 1: 70}
    assert view.gpu_memory_free == {0: 16384, 1: 12288}
    assert view.gpu_links == (("X", "SOC"), ("SOC", "X"))
    assert view.free == ResourceVector(
        cpu=16000, memory=65536, local_disk=100, gpu=170, gpu_memory=28672
    )
    assert view.zone == "z1"


def test_cards_without_room_for_the_memory_share_look_full() -> None:
    node = parse_node(
        node_doc(
            "gpu-s",
            allocatable={"tencent.com/vcuda-core": "200", "tencent.com/vcuda-memory": "64"},
            annotations={"gaia.io/gpu-used": '{"0":[10,7680]}'},
        )
    )
    assert node.gpus.memory_per_card == 8192  # 64 blocks of 256 MiB over 2 cards
    request = pod_request(
        pod_doc(requests={"tencent.com/vcuda-core": "20", "tencent.com/vcuda-memory": "4"})
    )
    assert node_view(node, request).gpu_free == {0: 0, 1: 100}
    assert node_view(node, request, idle=True).gpu_free == {0: 100, 1: 100}


def test_card_count_without_topology_comes_from_allocatable() -> None:
    node = parse_node(node_doc("n", allocatable={"nvidia.com/gpu": "8"}))
    assert node.gpus.cards == 8 and node.gpus.links == ()


@pytest.mark.parametrize(
    "annotations",
    [
        {"gaia.io/gpu-topology": "not json"},
        {"gaia.io/gpu-topology": '[["X","PIX"]]'},
        {"gaia.io/gpu-topology": '[["X","PIX"],["PXB","X"]]'},
        {"gaia.io/gpu-topology": '[["X","WARP"],["WARP","X"]]'},
        # a matrix of another size than the allocatable cards (the one Node reader's rule)
        {"gaia.io/gpu-topology": json.dumps(NV4)},
        {"gaia.io/gpu-used": '{"7":[10,0]}'},
        {"gaia.io/gpu-used": '{"0":[10]}'},
        {"gaia.io/gpu-used": "[]"},
    ],
)
def test_unreadable_gpu_annotations_make_only_that_node_unusable_for_gpu_pods(
    annotations: dict[str, str],
) -> None:
    broken = node_doc("broken", allocatable={"nvidia.com/gpu": "2"}, annotations=annotations)
    fine = node_doc("fine", allocatable={"nvidia.com/gpu": "2"})
    args = {"Pod": pod_doc(requests={"nvidia.com/gpu": "1"}), "Nodes": {"items": [broken, fine]}}
    result = filter_nodes(args, ResourceFitScheduler())
    assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["fine"]
    assert "gaia.io/gpu-" in result["FailedAndUnresolvableNodes"]["broken"]
    assert result["Error"] == ""
    args["Pod"] = pod_doc(requests={"cpu": "0"})
    result = filter_nodes(args, ResourceFitScheduler())
    assert len(result["Nodes"]["items"]) == 2


# ------------------------------------------------------------------------- filter, prioritize


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(scheduler=ResourceFitScheduler(), binder=None))


def test_filter_keeps_fitting_nodes_and_says_why_for_the_others(client: TestClient) -> None:
    result = client.post("/filter", json=GOLDEN_ARGS)
    assert result.status_code == 200
    assert result.json() == GOLDEN_FILTER_RESULT
    # gpu-b has a used card: preemption could free it, so it is only "failed";
    # cpu-c has no V100s at all: unresolvable.


def test_filter_respects_the_node_selector_and_readiness(client: TestClient) -> None:
    not_ready = copy.deepcopy(GPU_A)
    not_ready["metadata"]["name"] = "gpu-down"
    not_ready["status"]["conditions"][0]["status"] = "False"
    other_pool = copy.deepcopy(GPU_A)
    other_pool["metadata"]["name"] = "gpu-other"
    other_pool["metadata"]["labels"]["pool"] = "batch"
    args = {"Pod": TRAINER, "Nodes": {"items": [not_ready, other_pool]}}
    result = client.post("/filter", json=args).json()
    assert result["Nodes"]["items"] == []
    assert result["FailedAndUnresolvableNodes"] == {
        "gpu-down": "node(s) not ready",
        "gpu-other": "node(s) didn't match the node selector",
    }


def test_filter_reports_a_bad_pod_in_error_not_as_a_server_error(client: TestClient) -> None:
    bad = copy.deepcopy(GOLDEN_ARGS)
    bad["Pod"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "lots"
    result = client.post("/filter", json=bad)
    assert result.status_code == 200
    assert result.json() == GOLDEN_FILTER_ERROR


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"Pod": 3, "Nodes": {"items": []}}', "Pod must be a JSON object"),
        (json.dumps(GOLDEN_ARGS_CACHE_CAPABLE).encode(), "nodeCacheCapable: false"),
        (
            json.dumps({"Pod": TRAINER, "Nodes": {"items": [{"metadata": {}}]}}).encode(),
            "without metadata.name",
        ),
        (b'{"Pod": {}, "Nodes": {"items": []}}', "without a Pod"),
    ],
)
def test_filter_explains_unusable_calls(client: TestClient, body: bytes, message: str) -> None:
    result = client.post("/filter", content=body, headers={"content-type": "application/json"})
    assert result.status_code == 200
    assert message in result.json()["Error"]
    assert result.json()["Nodes"] is None


def test_bodies_over_the_limit_are_refused_without_reading_on() -> None:
    client = TestClient(
        create_app(scheduler=ResourceFitScheduler(), binder=None, max_body_bytes=1000)
    )
    big = json.dumps(GOLDEN_ARGS).encode()
    assert len(big) > 1000
    assert "larger than the extender's limit" in client.post("/filter", content=big).json()["Error"]
    assert client.post("/prioritize", content=big).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield big[:900]
        yield big[900:]

    streamed = client.post("/bind", content=chunks())  # no content-length: counted while reading
    assert "larger than the extender's limit" in streamed.json()["Error"]


def test_prioritize_gives_the_chosen_node_ten_and_unfit_nodes_zero(client: TestClient) -> None:
    result = client.post("/prioritize", json=GOLDEN_ARGS)
    assert result.status_code == 200
    assert result.json() == GOLDEN_PRIORITIES


class EmptiestFirst(ResourceFitScheduler):
    """Places on the node with the most free GPU cores (the fit scheduler rotates)."""

    def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
        for node in sorted(cluster.nodes, key=lambda n: -sum(n.gpu_free.values())):
            gpus = pick_gpus(node, request.resources.gpu)
            if why_not(node, request) is None and gpus is not None:
                return Placement(node=node.name, gpu_ids=gpus)
        raise Unschedulable(request, {"Insufficient gpu": len(cluster.nodes)}, len(cluster.nodes))


def test_prioritize_ranks_other_fitting_nodes_below_the_choice_by_free_gpu() -> None:
    busy = node_doc(
        "busy",
        allocatable={"nvidia.com/gpu": "4"},
        annotations={"gaia.io/gpu-used": '{"0":[100,0],"1":[50,0]}'},
    )
    idle = node_doc("idle", allocatable={"nvidia.com/gpu": "4"})
    full = node_doc(
        "full",
        allocatable={"nvidia.com/gpu": "1"},
        annotations={"gaia.io/gpu-used": '{"0":[100,0]}'},
    )
    pod = pod_doc(requests={"nvidia.com/gpu": "1"})
    args = {"Pod": pod, "Nodes": {"items": [busy, idle, full]}}
    client = TestClient(create_app(scheduler=EmptiestFirst(), binder=None))
    scores = client.post("/prioritize", json=args).json()
    # idle is the scheduler's choice; busy has 62.5% of its GPU free: int(9 * 0.625)
    assert scores == [
        {"Host": "busy", "Score": 5},
        {"Host": "idle", "Score": 10},
        {"Host": "full", "Score": 0},
    ]


def test_prioritize_uses_the_scheduler_score_when_it_has_one() -> None:
    class ScoringScheduler(ResourceFitScheduler):
        def score(self, request: PlacementRequest, node: NodeView, cluster: ClusterView) -> float:
            assert sorted(cluster.by_name) == ["gpu-a", "gpu-b"]  # the nodes that fit
            return {"gpu-a": 0.74, "gpu-b": 7.0}.get(node.name, -1.0)

    client = TestClient(create_app(scheduler=ScoringScheduler(), binder=None))
    nodes = [
        GPU_A,
        node_doc(
            "gpu-b",
            allocatable={"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"},
            labels={"pool": "gpu", "gaia.io/gpu-model": V100},
        ),
    ]
    result = client.post("/prioritize", json={"Pod": TRAINER, "Nodes": {"items": nodes}}).json()
    assert result == [{"Host": "gpu-a", "Score": 7}, {"Host": "gpu-b", "Score": 10}]


def test_prioritize_abstains_for_a_bad_pod(client: TestClient) -> None:
    bad = copy.deepcopy(GOLDEN_ARGS)
    bad["Pod"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "x"
    result = client.post("/prioritize", json=bad)
    assert result.status_code == 200
    assert [p["Score"] for p in result.json()] == [0, 0, 0]
    assert client.post("/prioritize", content=b"nope").status_code == 400


def test_a_token_guards_every_verb_but_healthz() -> None:
    client = TestClient(create_app(scheduler=ResourceFitScheduler(), binder=None, token="s3cret"))
    assert client.get("/healthz").json() == {"status": "ok"}
    for verb in ("filter", "prioritize", "bind"):
        refused = client.post(f"/{verb}", json=GOLDEN_ARGS)
        assert refused.status_code == 401
        assert "GAIA_EXTENDER_TOKEN" in refused.json()["Error"]
    wrong = client.post("/filter", json=GOLDEN_ARGS, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = client.post("/filter", json=GOLDEN_ARGS, headers={"Authorization": "Bearer s3cret"})
    assert right.json() == GOLDEN_FILTER_RESULT


def test_bind_without_api_access_says_how_to_give_it(client: TestClient) -> None:
    result = client.post("/bind", json=GOLDEN_BINDING_ARGS).json()
    assert "--kubeconfig" in result["Error"]


def test_a_scheduler_bug_is_reported_in_the_result() -> None:
    class Broken:
        def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
            raise RuntimeError("boom")

    client = TestClient(create_app(scheduler=Broken(), binder=None))
    result = client.post("/filter", json=GOLDEN_ARGS)
    assert result.status_code == 200
    assert "boom" in result.json()["Error"]


# ------------------------------------------------------------------------------- a fake API server


class FakeApiServer:
    """Pods and nodes over the real REST paths, with the API server's write semantics for what
    the binder uses; every request is recorded as (method, path, headers, body)."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.conflicts_to_inject = 0
        self.refuse_bindings: tuple[int, str] | None = None
        self.token = "api-t0ken"
        self._lock = threading.Lock()
        self._version = 1000
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_pod(self, doc: dict[str, Any]) -> None:
        meta = doc["metadata"]
        self.pods[(meta["namespace"], meta["name"])] = copy.deepcopy(doc)

    def add_node(self, doc: dict[str, Any]) -> None:
        self.nodes[doc["metadata"]["name"]] = copy.deepcopy(doc)

    def _bump(self, meta: dict[str, Any]) -> None:
        self._version += 1
        meta["resourceVersion"] = str(self._version)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        with self._lock:
            if parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
                node = self.nodes.get(parts[3])
                if node is None:
                    return 404, _status(404, f'nodes "{parts[3]}" not found')
                if method == "GET":
                    return 200, node
                if method == "PATCH":
                    wanted = body.get("metadata", {}).get("resourceVersion")
                    if self.conflicts_to_inject:
                        self.conflicts_to_inject -= 1
                        self._bump(node["metadata"])  # someone else wrote the node meanwhile
                    if wanted and wanted != node["metadata"]["resourceVersion"]:
                        return 409, _status(409, "the object has been modified")
                    node["metadata"].setdefault("annotations", {}).update(
                        body["metadata"]["annotations"]
                    )
                    self._bump(node["metadata"])
                    return 200, node
            if parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 5:
                key = (parts[3], parts[5])
                pod = self.pods.get(key)
                if pod is None:
                    return 404, _status(404, f'pods "{parts[5]}" not found')
                if method == "GET" and len(parts) == 6:
                    return 200, pod
                if method == "POST" and parts[6:] == ["binding"]:
                    if self.refuse_bindings is not None:
                        return self.refuse_bindings[0], _status(*self.refuse_bindings)
                    meta = body["metadata"]
                    if meta.get("uid") and meta["uid"] != pod["metadata"]["uid"]:
                        return 409, _status(409, "Precondition failed: UID in precondition")
                    if pod["spec"].get("nodeName"):
                        return 409, _status(409, "pod is already assigned to a node")
                    pod["spec"]["nodeName"] = body["target"]["name"]
                    pod["metadata"].setdefault("annotations", {}).update(
                        meta.get("annotations", {})
                    )
                    self._bump(pod["metadata"])
                    return 201, _status(201, "")
        return 405, _status(405, "method not allowed")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                api.requests.append((self.command, self.path, dict(self.headers), body))
                if self.headers.get("authorization") != f"Bearer {api.token}":
                    code, answer = 401, _status(401, "Unauthorized")
                else:
                    code, answer = api.handle(self.command, self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _status(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "code": code, "message": message}


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def binder(api: FakeApiServer) -> Iterator[KubernetesBinder]:
    credentials = KubeCredentials(
        server=api.url,
        ca_data=None,
        insecure=False,
        client_cert=None,
        client_key=None,
        token=api.token,
    )
    binder = KubernetesBinder(credentials)
    yield binder
    binder.close()


def _bind_client(binder: KubernetesBinder) -> TestClient:
    return TestClient(create_app(scheduler=ResourceFitScheduler(), binder=binder))


def test_bind_picks_gpus_records_them_on_the_node_and_binds_with_annotations(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_pod(TRAINER)
    api.add_node(GPU_A)
    result = _bind_client(binder).post("/bind", json=GOLDEN_BINDING_ARGS)
    assert result.json() == GOLDEN_BINDING_RESULT
    pod = api.pods[("ml", "trainer-0")]
    assert pod["spec"]["nodeName"] == "gpu-a"
    assert pod["metadata"]["annotations"][GPU_IDS_ANNOTATION] == "0,1"
    assert CPU_SET_ANNOTATION not in pod["metadata"]["annotations"]  # the fit scheduler picks none
    assert json.loads(api.nodes["gpu-a"]["metadata"]["annotations"][GPU_USED_ANNOTATION]) == {
        "0": [100, 0],
        "1": [100, 0],
    }
    calls = [(m, p) for m, p, _, _ in api.requests]
    assert calls == [
        ("GET", "/api/v1/namespaces/ml/pods/trainer-0"),
        ("GET", "/api/v1/nodes/gpu-a"),
        ("PATCH", "/api/v1/nodes/gpu-a"),
        ("POST", "/api/v1/namespaces/ml/pods/trainer-0/binding"),
    ]
    _, _, patch_headers, patch = api.requests[2]
    assert patch_headers["Content-Type"] == "application/merge-patch+json"
    assert patch["metadata"]["resourceVersion"] == "100"
    _, _, headers, binding = api.requests[3]
    assert headers["Authorization"] == f"Bearer {api.token}"
    assert binding == {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {
            "name": "trainer-0",
            "namespace": "ml",
            "uid": "6f1c2a9e-0000-4000-8000-000000000001",
            "annotations": {GPU_IDS_ANNOTATION: "0,1"},
        },
        "target": {"apiVersion": "v1", "kind": "Node", "name": "gpu-a"},
    }


def test_the_next_pod_sees_the_cards_the_last_bind_took(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_node(GPU_A)
    client = _bind_client(binder)
    for i in range(2):
        api.add_pod(pod_doc(name=f"p{i}", uid=f"u{i}", requests={"nvidia.com/gpu": "2"}))
        args = {"PodName": f"p{i}", "PodNamespace": "ml", "PodUID": f"u{i}", "Node": "gpu-a"}
        assert client.post("/bind", json=args).json() == {"Error": ""}
    assert api.pods[("ml", "p1")]["metadata"]["annotations"][GPU_IDS_ANNOTATION] == "2,3"
    api.add_pod(pod_doc(name="p2", uid="u2", requests={"nvidia.com/gpu": "1"}))
    full = client.post(
        "/bind", json={"PodName": "p2", "PodNamespace": "ml", "PodUID": "u2", "Node": "gpu-a"}
    ).json()
    assert "no longer fits on gpu-a" in full["Error"]
    filtered = client.post(
        "/filter", json={"Pod": api.pods[("ml", "p2")], "Nodes": {"items": [api.nodes["gpu-a"]]}}
    ).json()
    assert filtered["FailedNodes"] == {"gpu-a": "Insufficient gpu"}


def test_shares_of_a_card_pack_and_count_their_memory(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_node(
        node_doc(
            "share",
            allocatable={"gaia.io/gpu-core": "200", "gaia.io/gpu-memory": "32768"},
        )
    )
    client = _bind_client(binder)
    for i, (cores, memory) in enumerate([("30", "4096"), ("50", "8192")]):
        resources = {"gaia.io/gpu-core": cores, "gaia.io/gpu-memory": memory}
        api.add_pod(pod_doc(name=f"s{i}", uid=f"s{i}", requests=resources, limits=resources))
        args = {"PodName": f"s{i}", "PodNamespace": "ml", "PodUID": f"s{i}", "Node": "share"}
        assert client.post("/bind", json=args).json() == {"Error": ""}
    used = json.loads(api.nodes["share"]["metadata"]["annotations"][GPU_USED_ANNOTATION])
    assert used == {"0": [80, 12288]}  # the fit scheduler packs shares onto the fullest card


def test_a_node_changed_by_someone_else_is_read_again(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_pod(TRAINER)
    api.add_node(GPU_A)
    api.conflicts_to_inject = 2
    assert _bind_client(binder).post("/bind", json=GOLDEN_BINDING_ARGS).json() == {"Error": ""}
    patches = [r for r in api.requests if r[0] == "PATCH"]
    assert len(patches) == 3


def test_a_refused_binding_gives_the_cards_back(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_pod(TRAINER)
    api.add_node(GPU_A)
    api.refuse_bindings = (403, 'pods "trainer-0" is forbidden: RBAC says no')
    result = _bind_client(binder).post("/bind", json=GOLDEN_BINDING_ARGS).json()
    assert result["Error"] == (
        "binding pod ml/trainer-0 to gpu-a: the API server answered 403: "
        'pods "trainer-0" is forbidden: RBAC says no'
    )
    assert json.loads(api.nodes["gpu-a"]["metadata"]["annotations"][GPU_USED_ANNOTATION]) == {}
    assert "nodeName" not in api.pods[("ml", "trainer-0")]["spec"]


def test_bind_refuses_a_replaced_pod_and_repeats_a_done_bind(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_pod(TRAINER)
    api.add_node(GPU_A)
    client = _bind_client(binder)
    replaced = {**GOLDEN_BINDING_ARGS, "PodUID": "another-uid"}
    assert "was replaced" in client.post("/bind", json=replaced).json()["Error"]
    assert client.post("/bind", json=GOLDEN_BINDING_ARGS).json() == {"Error": ""}
    before = len(api.requests)
    assert client.post("/bind", json=GOLDEN_BINDING_ARGS).json() == {"Error": ""}
    assert len(api.requests) == before + 1  # read the pod, saw it bound there: nothing to do
    elsewhere = client.post("/bind", json={**GOLDEN_BINDING_ARGS, "Node": "gpu-b"}).json()
    assert elsewhere == {"Error": "pod ml/trainer-0 is already bound to gpu-a"}


def test_a_pod_without_gpus_is_bound_without_touching_the_node(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    api.add_pod(pod_doc(name="web", uid="w", requests={"cpu": "1"}))
    args = {"PodName": "web", "PodNamespace": "ml", "PodUID": "w", "Node": "cpu-c"}
    assert _bind_client(binder).post("/bind", json=args).json() == {"Error": ""}
    assert [r[0] for r in api.requests] == ["GET", "POST"]
    assert api.requests[1][3]["metadata"] == {"name": "web", "namespace": "ml", "uid": "w"}


def test_binder_errors_name_the_step_and_the_api_servers_message(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    with pytest.raises(
        BindFailed, match='reading pod ml/gone: the API server answered 404: pods "gone" not found'
    ):
        binder.read_pod(namespace="ml", name="gone")
    api.add_node(GPU_A)
    with pytest.raises(NodeChanged):
        binder.update_node_annotations(name="gpu-a", annotations={"a": "b"}, resource_version="1")
    api.token = "rotated"
    with pytest.raises(BindFailed, match="401: Unauthorized"):
        binder.read_node(name="gpu-a")
    api.server.shutdown()
    api.server.server_close()
    with pytest.raises(BindFailed, match="did not answer"):
        binder.read_node(name="gpu-a")


def test_binder_from_a_kubeconfig_file(api: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
current-context: test
contexts: [{{name: test, context: {{cluster: c, user: u}}}}]
clusters: [{{name: c, cluster: {{server: "{api.url}"}}}}]
users: [{{name: u, user: {{token: {api.token}}}}}]
"""
    )
    api.add_node(GPU_A)
    binder = binder_from(str(kubeconfig))
    assert binder is not None
    try:
        assert binder.read_node(name="gpu-a")["metadata"]["name"] == "gpu-a"
    finally:
        binder.close()


def test_in_cluster_credentials_come_from_the_service_account(
    api: FakeApiServer, tmp_path: Path
) -> None:
    assert in_cluster_credentials(tmp_path, env={}) is None
    (tmp_path / "token").write_text("sa-token\n")
    creds = in_cluster_credentials(tmp_path, env={"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert creds is not None and creds.server == "https://[fd00::1]:443"
    # the token file is read on every request (kubelet rotates it)
    creds = KubeCredentials(
        server=api.url,
        ca_data=None,
        insecure=False,
        client_cert=None,
        client_key=None,
        token=None,
    )
    binder = KubernetesBinder(creds, token_file=tmp_path / "token")
    api.add_node(GPU_A)
    try:
        api.token = "sa-token"
        assert binder.read_node(name="gpu-a")["metadata"]["name"] == "gpu-a"
        (tmp_path / "token").write_text("sa-token-2")
        api.token = "sa-token-2"
        assert binder.read_node(name="gpu-a")["metadata"]["name"] == "gpu-a"
    finally:
        binder.close()


# ------------------------------------------------------------------------------- small pieces


def test_cpuset_lists_ranges_like_linux() -> None:
    assert cpuset([8, 0, 1, 2, 3, 10, 11]) == "0-3,8,10-11"
    assert cpuset([5]) == "5"
    assert cpuset([]) == ""


def test_a_placement_with_cpu_ids_is_annotated_as_a_cpuset(
    api: FakeApiServer, binder: KubernetesBinder
) -> None:
    class NearCores(ResourceFitScheduler):
        def place(self, request: PlacementRequest, cluster: ClusterView) -> Placement:
            placement = super().place(request, cluster)
            return Placement(placement.node, placement.gpu_ids, cpu_ids=(0, 1, 2, 3, 16))

    api.add_pod(TRAINER)
    api.add_node(GPU_A)
    client = TestClient(create_app(scheduler=NearCores(), binder=binder))
    assert client.post("/bind", json=GOLDEN_BINDING_ARGS).json() == {"Error": ""}
    annotations = api.pods[("ml", "trainer-0")]["metadata"]["annotations"]
    assert annotations[CPU_SET_ANNOTATION] == "0-3,16"


def test_the_port_helpers_see_the_extender_view_as_the_platform_does() -> None:
    # The extender's NodeView is an ordinary port value: the port's own checks apply to it.
    request = pod_request(TRAINER)
    view = node_view(parse_node(GPU_A), request)
    assert why_not(view, request) is None
    assert pick_gpus(view, request.resources.gpu) == (0, 1)
    with pytest.raises(Unschedulable):
        ResourceFitScheduler().place(request, ClusterView([node_view(parse_node(CPU_C), request)]))


def test_serve_answers_on_loopback_with_the_token_from_the_environment(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "from gaia.scheduler.extender.server import serve; "
        f"serve(host='127.0.0.1', port={port}, kubeconfig=None, token=None)"
    )
    env = {**os.environ, "GAIA_EXTENDER_TOKEN": "tok", "KUBERNETES_SERVICE_HOST": ""}
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{url}/healthz", timeout=1).json() == {"status": "ok"}
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "the extender did not start in 30s"
                time.sleep(0.1)
        assert httpx.post(f"{url}/filter", json=GOLDEN_ARGS).status_code == 401
        answer = httpx.post(
            f"{url}/filter", json=GOLDEN_ARGS, headers={"Authorization": "Bearer tok"}
        )
        assert answer.json() == GOLDEN_FILTER_RESULT
        bind = httpx.post(
            f"{url}/bind", json=GOLDEN_BINDING_ARGS, headers={"Authorization": "Bearer tok"}
        )
        assert "--kubeconfig" in bind.json()["Error"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()


# ------------------------------------------------------------------ the CLI, Gaia scheduler behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


PCIE4 = [
    ["X", "PIX", "SYS", "SYS"],
    ["PIX", "X", "SYS", "SYS"],
    ["SYS", "SYS", "X", "PIX"],
    ["SYS", "SYS", "PIX", "X"],
]


def test_gaia_scheduler_extender_cli_prefers_the_nvlink_pair_and_guards_its_link() -> None:
    """``gaia scheduler-extender`` as a real process: the Gaia scheduler's topology decisions
    reach kube-scheduler through filter and prioritize."""
    port = _free_port()
    env = {**os.environ, "GAIA_EXTENDER_TOKEN": "t0ken"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gaia", "scheduler-extender", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        # two NVLinked cards free on one node, two cards across sockets on the other
        nv = node_doc(
            "nv-1",
            allocatable={"cpu": "32", "memory": "120Gi", "nvidia.com/gpu": "4", "pods": "110"},
            annotations={
                "gaia.io/gpu-topology": json.dumps(NV4),
                "gaia.io/gpu-used": '{"0":[100,0],"1":[100,0]}',
            },
        )
        # GPU0 and GPU2 are taken: the two free cards are across sockets
        split = node_doc(
            "pcie-1",
            allocatable={"cpu": "32", "memory": "120Gi", "nvidia.com/gpu": "4", "pods": "110"},
            annotations={
                "gaia.io/gpu-topology": json.dumps(PCIE4),
                "gaia.io/gpu-used": '{"0":[100,0],"2":[100,0]}',
            },
        )
        pod = pod_doc(requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"})
        args = {"Pod": pod, "Nodes": {"metadata": {}, "items": [nv, split]}, "NodeNames": None}
        auth = {"Authorization": "Bearer t0ken"}
        assert httpx.post(f"{base}/filter", json=args).status_code == 401
        scores = httpx.post(f"{base}/prioritize", json=args, headers=auth).json()
        by_host = {s["Host"]: s["Score"] for s in scores}
        assert by_host["nv-1"] > by_host["pcie-1"] > 0, by_host
        # A pod that allows at most a PIX link cannot use the cross-socket pair.
        pix = pod_doc(
            requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"},
            annotations={"gaia.io/gpu-link": "PIX"},
        )
        result = httpx.post(f"{base}/filter", json={**args, "Pod": pix}, headers=auth).json()
        assert [n["metadata"]["name"] for n in result["Nodes"]["items"]] == ["nv-1"]
        assert result["FailedNodes"] == {"pcie-1": "2 free GPUs but no PIX set of 2"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_scheduler_extender_cli_refuses_a_missing_kubeconfig(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gaia", "scheduler-extender", "--kubeconfig", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no kubeconfig at" in done.stderr
