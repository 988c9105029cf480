"""Gaia's image (``scripts/build-image.sh``) run by its Helm chart on a real node, on PostgreSQL.

Only with ``GAIA_TEST_IMAGE=1``: the first build makes a Debian root file system and downloads
the wheels (a minute or two on two cores, docs/ha.md); later builds reuse buildah's
layer cache under ``~/.cache/gaia/image-build``.

The chain is the production one, with nothing stubbed: the script builds the image and pushes
it to the real node's registry (``tests/support/node.py``); ``helm template`` renders the chart
with that image (three replicas, its default); kubectl applies it, with the two Secrets it
reads, to a control plane with kube-scheduler and kube-controller-manager; the kubelet pulls
the image, runs ``gaia up`` on a read-only root file system as uid 10001 and probes
``/api/readyz``. The database is the test session's PostgreSQL, reached from the pods through a
relay on the host's address (PostgreSQL listens on loopback only). Every replica must become
ready with no restart, the leader lease rows they write must name the pods (``GAIA_REPLICA_ID``
from the downward API), and the disruption budget must count them all healthy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import start_real_bed
from tests.deploy.test_helm_chart import RELEASE, helm, template_text  # noqa: F401 (fixture)
from tests.support.kube import ControlPlane
from tests.support.node import REGISTRY_HOST, RealNode
from tests.support.postgres import PostgresServer
from tests.support.relay import Relay
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3  # the chart's default
SECRET_KEY = "dGVzdC1rZXktZm9yLWdhaWEtdGVzdHMtb25seS0xMjM="

pytestmark = pytest.mark.skipif(
    os.environ.get("GAIA_TEST_IMAGE") != "1",
    reason="builds Gaia's image (minutes the first time): set GAIA_TEST_IMAGE=1",
)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, RealNode]]:
    plane, node = start_real_bed(tmp_path_factory, "gaia-image", controller_manager=True)
    try:
        plane.start_scheduler()
        yield plane, node
    finally:
        node.stop()
        plane.stop()


def build_and_push(registry_url: str, tag: str) -> str:
    """Build with the script and push to the node's registry; the reference pods use."""
    repository = "gaia/gaia"
    destination = f"docker://{registry_url.removeprefix('http://')}/{repository}:{tag}"
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh"), "--push", destination, "--tls-verify=false"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "localhost/gaia:0.1.0"
    return f"{REGISTRY_HOST}/{repository}"


def kubectl_json(plane: ControlPlane, *args: str) -> dict[str, Any]:
    done = plane.kubectl(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_chart_runs_the_image_as_ready_replicas_on_postgres(
    bed: tuple[ControlPlane, RealNode],
    helm: Path,  # noqa: F811 (the fixture)
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    plane, node = bed
    tag = f"test-{uuid.uuid4().hex[:8]}"
    repository = build_and_push(node.registry_url, tag)

    database = f"gaia_image_{uuid.uuid4().hex[:8]}"
    host_url = postgres_server.create_database(database)
    relay = Relay(postgres_server.port, listen_host=node.ip)
    relay.restore()
    try:
        pod_url = host_url.replace(f"127.0.0.1:{postgres_server.port}", f"{node.ip}:{relay.port}")
        namespace = f"gaia-image-{uuid.uuid4().hex[:6]}"
        secrets = [
            ("gaia-database", f"--from-literal=url={pod_url}"),
            ("gaia-secret-key", f"--from-literal=key={SECRET_KEY}"),
        ]
        assert plane.kubectl("create", "namespace", namespace).returncode == 0
        for name, literal in secrets:
            done = plane.kubectl("-n", namespace, "create", "secret", "generic", name, literal)
            assert done.returncode == 0, done.stderr
        manifest = tmp_path / "gaia.yaml"
        manifest.write_text(
            template_text(
                helm,
                f"image.repository={repository}",
                f"image.tag={tag}",
                "resources.requests.cpu=100m",
                namespace=namespace,
            )
        )
        done = plane.kubectl("apply", "--server-side", "-f", str(manifest))
        assert done.returncode == 0, done.stderr

        def ready() -> bool:
            status = kubectl_json(plane, "-n", namespace, "get", "deployment", RELEASE)
            return bool(status.get("status", {}).get("readyReplicas") == REPLICAS)

        started = time.monotonic()
        try:
            eventually(
                ready, f"{REPLICAS} ready replicas of the image", timeout_s=300, interval_s=2
            )
        except AssertionError:
            described = plane.kubectl("-n", namespace, "describe", "pods")
            logs = plane.kubectl("-n", namespace, "logs", "-l", "app.kubernetes.io/name=gaia")
            raise AssertionError(f"{described.stdout[-4000:]}\n{logs.stdout[-3000:]}") from None
        print(f"{REPLICAS} replicas ready {time.monotonic() - started:.0f} s after the apply")

        pods = kubectl_json(
            plane, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/name=gaia"
        )
        names = {pod["metadata"]["name"] for pod in pods["items"]}
        assert len(names) == REPLICAS
        for pod in pods["items"]:
            [status] = pod["status"]["containerStatuses"]
            assert status["ready"] is True
            previous = ""
            if status["restartCount"]:
                name = pod["metadata"]["name"]
                previous = plane.kubectl("-n", namespace, "logs", "--previous", name).stdout
            assert status["restartCount"] == 0, previous[-4000:]
            assert status["image"].endswith(f"{repository}:{tag}")

        # for the record (docs/ha.md): what each replica uses, from the kubelet's summary
        summary = json.loads(
            plane.kubectl("get", "--raw", f"/api/v1/nodes/{node.name}/proxy/stats/summary").stdout
        )
        for pod in summary["pods"]:
            if pod["podRef"]["name"] in names:
                memory = pod.get("memory", {}).get("workingSetBytes", 0)
                print(f"{pod['podRef']['name']}: {memory / 2**20:.0f} MiB working set")

        # the leases are held by pods, under their own names
        engine = create_engine(host_url)
        try:

            def leases_held_by_pods() -> bool:
                with engine.connect() as conn:
                    holders = {
                        row[0] for row in conn.execute(text("SELECT holder FROM leader_leases"))
                    }
                return bool(holders) and holders <= names

            eventually(leases_held_by_pods, "leader leases held by the pods", timeout_s=30)
        finally:
            engine.dispose()

        # the disruption budget counts them: one may leave
        def one_may_leave() -> bool:
            budget = kubectl_json(plane, "-n", namespace, "get", "pdb", RELEASE)["status"]
            return bool(
                budget.get("currentHealthy") == REPLICAS and budget.get("disruptionsAllowed") == 1
            )

        eventually(one_may_leave, "the disruption budget: all healthy, one may leave", timeout_s=30)
        plane.kubectl("delete", "namespace", namespace, "--wait=false")
    finally:
        relay.cut()
