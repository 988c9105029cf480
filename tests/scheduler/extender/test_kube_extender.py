"""``gaia scheduler-extender`` behind a real kube-scheduler: a pod that is not the platform's gets
its GPUs from the Gaia scheduler through filter, prioritize and bind.

They talk as in production beyond loopback: over mutual TLS. The extender serves HTTPS and
requires a client certificate of its CA (``--client-ca-file``); kube-scheduler's extender config
has ``enableHTTPS`` and ``tlsConfig`` with its client pair (``certFile``, ``keyFile``) and the CA
that signed the extender's certificate (``caFile``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.scheduler.extender.conftest import ExtenderPki, start_extender
from tests.support.kube import ControlPlane, fake_node, free_port
from tests.support.waiting import eventually

PCIE4 = [
    ["X", "PIX", "SYS", "SYS"],
    ["PIX", "X", "SYS", "SYS"],
    ["SYS", "SYS", "X", "PIX"],
    ["SYS", "SYS", "PIX", "X"],
]


@pytest.fixture(scope="module")
def extender(
    control_plane: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
    extender_pki: ExtenderPki,
) -> Iterator[str]:
    # new nodes carry the not-ready taint until the node lifecycle controller lifts it
    control_plane.ensure_controller_manager()
    port = free_port()
    work = tmp_path_factory.mktemp("extender")
    base = f"https://127.0.0.1:{port}"
    args = [
        "--port",
        str(port),
        "--kubeconfig",
        str(control_plane.kubeconfig_path),
        *extender_pki.server_args(),
    ]
    with start_extender(
        args, log=work / "extender.log", base=base, verify=extender_pki.client_context()
    ):
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1",
            "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(control_plane.kubeconfig_path)},
            "leaderElection": {"leaderElect": False},
            "extenders": [
                {
                    "urlPrefix": base,
                    "filterVerb": "filter",
                    "prioritizeVerb": "prioritize",
                    "bindVerb": "bind",
                    "weight": 5,
                    "nodeCacheCapable": False,
                    "httpTimeout": "30s",
                    "managedResources": [{"name": "nvidia.com/gpu", "ignoredByScheduler": False}],
                    "enableHTTPS": True,
                    "tlsConfig": {
                        "certFile": str(extender_pki.client_cert),
                        "keyFile": str(extender_pki.client_key),
                        "caFile": str(extender_pki.ca),
                    },
                }
            ],
        }
        path = Path(work) / "scheduler.yaml"
        path.write_text(yaml.safe_dump(config))
        control_plane.start_scheduler(config=path)
        yield base


def _pinned_probe(node: str) -> dict[str, object]:
    """A pod only ``node`` can take (by name, as a DaemonSet pins its pods), with no GPU."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"probe-{node}", "namespace": "ext"},
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": [node]}
                                ]
                            }
                        ]
                    }
                }
            },
            "containers": [
                {
                    "name": "main",
                    "image": "registry.local/probe:1",
                    "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}},
                }
            ],
        },
    }


def test_kube_scheduler_asks_the_gaia_extender_for_gpu_pods(
    control_plane: ControlPlane, extender: str
) -> None:
    api = control_plane.http_client()
    try:
        # "split" has two free cards across sockets; "paired" two on one PCIe switch
        split = fake_node(
            "ext-split", gpus=4, gpu_memory_mib=16384, gpu_topology=PCIE4, labels={"pool": "ext"}
        )
        split["metadata"]["annotations"]["gaia.io/gpu-used"] = '{"0":[100,0],"2":[100,0]}'
        paired = fake_node(
            "ext-paired", gpus=4, gpu_memory_mib=16384, gpu_topology=PCIE4, labels={"pool": "ext"}
        )
        paired["metadata"]["annotations"]["gaia.io/gpu-used"] = '{"0":[100,0],"1":[100,0]}'
        for node in (split, paired):
            r = api.post("/api/v1/nodes", json=node)
            assert r.status_code in (201, 409), r.text

        def ready(name: str) -> bool:
            conditions = api.get(f"/api/v1/nodes/{name}").json().get("status", {}).get("conditions")
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions or [])

        # kube-scheduler watches nodes and pods apart: a pod that arrives before it has seen
        # both (Ready, from KWOK) would be placed on the only one it knows, without asking the
        # extender to compare them
        eventually(lambda: ready("ext-split") and ready("ext-paired"), what="both nodes Ready")
        api.post("/api/v1/namespaces", json={"metadata": {"name": "ext"}})
        # Ready through the API is not yet known to kube-scheduler's own watch (it lagged under
        # a loaded CI run, and the GPU pod went to the one node it knew): a pod pinned to each
        # node, asking for no GPU (the extender is not asked), is bound only once the scheduler
        # knows that node. The two are alike, so they weigh on neither node's score.
        for name in ("ext-split", "ext-paired"):
            r = api.post("/api/v1/namespaces/ext/pods", json=_pinned_probe(name))
            assert r.status_code == 201, r.text

        def known(name: str) -> bool:
            probe = api.get(f"/api/v1/namespaces/ext/pods/probe-{name}").json()
            return probe["spec"].get("nodeName") == name  # type: ignore[no-any-return]

        eventually(
            lambda: known("ext-split") and known("ext-paired"), what="the scheduler knows both"
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer", "namespace": "ext"},
            "spec": {
                "nodeSelector": {"pool": "ext"},
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.local/trainer:1",
                        "resources": {
                            "requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "2"},
                            "limits": {"nvidia.com/gpu": "2"},
                        },
                    }
                ],
            },
        }
        r = api.post("/api/v1/namespaces/ext/pods", json=pod)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 90
        bound: dict[str, object] = {}
        while time.monotonic() < deadline:
            bound = api.get("/api/v1/namespaces/ext/pods/trainer").json()
            if bound["spec"].get("nodeName"):  # type: ignore[index, union-attr]
                break
            time.sleep(0.3)
        events = api.get("/api/v1/namespaces/ext/events").json()["items"]
        why = [(e.get("reason"), e.get("message")) for e in events]
        assert bound["spec"].get("nodeName"), (bound.get("status"), why)  # type: ignore[union-attr]
        spec = bound["spec"]
        meta = bound["metadata"]
        assert spec["nodeName"] == "ext-paired", json.dumps(bound)[:2000]  # type: ignore[index]
        assert meta["annotations"]["gaia.io/gpu-ids"] == "2,3"  # type: ignore[index]
        node = api.get("/api/v1/nodes/ext-paired").json()
        used = json.loads(node["metadata"]["annotations"]["gaia.io/gpu-used"])
        assert set(used) == {"0", "1", "2", "3"}
    finally:
        api.close()
