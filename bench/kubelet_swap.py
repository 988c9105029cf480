"""How long a real kubelet takes to swap a running container's image in place, the image
already on the node: the step the simulated kubelet models as watch + create + start
(``gaia.providers.sim._cluster``: 0.05 + 0.2 + 0.3 s) once a gray upgrade's pre-pull has run.

Run ``.venv/bin/python bench/kubelet_swap.py`` from the repository root, as root, after
``scripts/test.sh`` has built the control plane (``--swaps`` to change the count). It starts the
test bed's real node (``tests/support/node.py``: etcd + kube-apiserver, containerd 1.6 + runc
and a v1.37 kubelet on this machine), runs one pod of ``gaia/web`` v1, pulls v2 onto the node
(a pod of it, then deleted) and then, ``--swaps`` times, patches the pod's image to the other
version and times, from the patch, (1) the container running on the new image and (2) the pod
Ready (a readiness probe every second, as Gaia's web template has). The old container gets
SIGTERM; ``--grace`` is the pod's termination grace period. Printed: each swap and the median,
beside the simulated kubelet's figure for the same step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.kube import ControlPlane, build_control_plane
from tests.support.node import start_real_node

NAMESPACE = "swap"
SIM_STEP_S = 0.05 + 0.2 + 0.3  # gaia.providers.sim._cluster: WATCH_S + CREATE_S + START_S


def manifest(node_name: str, image: str, grace: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": NAMESPACE},
        "spec": {
            "nodeName": node_name,
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--grace", type=int, default=5, help="terminationGracePeriodSeconds")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gaia-kubelet-swap-"))
    plane = ControlPlane(bin_dir=build_control_plane(), work=work / "plane").start()
    try:
        node = start_real_node(plane, work / "node")
        try:
            return measure(plane, node, options)
        finally:
            node.stop()
    finally:
        plane.stop()


def measure(plane: ControlPlane, node: Any, options: argparse.Namespace) -> int:
    api = plane.http_client()
    assert api.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}).status_code == 201
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    images = [node.images.web_v1, node.images.web_v2]

    def get() -> dict[str, Any]:
        return dict(api.get(f"{path}/web-0").json())

    def wait(test: Any, what: str, timeout: float = 120) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if test(get()):
                return time.monotonic()
            time.sleep(0.01)
        raise SystemExit(f"{what}: not within {timeout} s")

    def running_on(pod: dict[str, Any], image: str) -> bool:
        for c in pod.get("status", {}).get("containerStatuses", []):
            if c.get("image", "").endswith(image.split("/", 1)[1]) and "running" in c.get(
                "state", {}
            ):
                return True
        return False

    def ready(pod: dict[str, Any]) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )

    # v2 onto the node first (as a pre-pull leaves it), then the pod on v1
    for image in (images[1], images[0]):
        if api.get(f"{path}/web-0").status_code == 200:
            api.delete(f"{path}/web-0", params={"gracePeriodSeconds": 0})
            wait_gone = time.monotonic()
            while api.get(f"{path}/web-0").status_code == 200:
                if time.monotonic() - wait_gone > 120:
                    raise SystemExit("pod not deleted")
                time.sleep(0.05)
        assert api.post(path, json=manifest(node.name, image, options.grace)).status_code == 201
        wait(lambda p, i=image: running_on(p, i) and ready(p), f"pod on {image} Ready")
    rows = []
    for n in range(options.swaps):
        image = images[(n + 1) % 2]
        patch = {"spec": {"containers": [{"name": "main", "image": image}]}}
        t0 = time.monotonic()
        r = api.patch(
            f"{path}/web-0",
            json=patch,
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        t_run = wait(lambda p, i=image: running_on(p, i), "running on the new image")
        t_ready = wait(lambda p, i=image: running_on(p, i) and ready(p), "Ready")
        rows.append((t_run - t0, t_ready - t0))
        print(
            f"swap {n + 1}: running on the new image after {t_run - t0:.2f} s, "
            f"Ready after {t_ready - t0:.2f} s",
            flush=True,
        )
    print(
        f"median of {len(rows)}: running {statistics.median(r[0] for r in rows):.2f} s, "
        f"Ready {statistics.median(r[1] for r in rows):.2f} s; the simulated kubelet's "
        f"step: {SIM_STEP_S:.2f} s (grace period {options.grace} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
