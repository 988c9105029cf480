"""The harness the provider contract suite runs on: one per adapter of the ClusterProvider port.

``provider_harness`` is parametrized by adapter. Each harness gives the suite:

- ``provider``: a fresh ``ClusterProvider`` (or a real cluster the test may change);
- ``namespace``: a namespace no other test uses;
- ``images``: two image references of one repository (an "old" and a "new" version) that the
  cluster can run;
- ``settle(predicate, timeout_s)``: wait until the async predicate holds. The ``sim`` harness
  steps a ``ManualClock`` in small increments (simulated time, no sleeping); a real cluster's
  harness polls in wall time;
- ``fault(kind, **fields)``: inject a failure. Only the ``sim`` harness can; tests that need it
  are marked ``sim_only`` and skipped on adapters without fault injection.

The suite speaks the port only: it never reaches into an adapter's internals.

The ``kubernetes`` harness runs on a control plane of its own (so its nodes are only its own):
etcd, kube-apiserver, kube-controller-manager (namespace deletion), KWOK for the nodes a test adds,
and one **real node**: a kubelet running real containers through containerd and runc, pulling
from a local registry (``tests/support/node.py``). Its four GPUs are FAKE (extended resources and
a topology annotation patched onto the node; no GPU exists here). Each test gets a fresh provider,
a fresh namespace (deleted, and waited for, afterwards) and image tags never pulled before, so
the kubelet pulls them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from gaia.clock import ManualClock
from gaia.providers.kubernetes import KubernetesCluster
from gaia.providers.port import ClusterProvider
from gaia.providers.sim import SimCluster
from tests.conftest import start_real_bed
from tests.support.kube import ControlPlane
from tests.support.node import RealNode

Predicate = Callable[[], Awaitable[bool]]

ADAPTERS = ["sim", "kubernetes"]
_namespaces = itertools.count()


class Harness(Protocol):
    kind: str
    provider: ClusterProvider
    namespace: str
    images: tuple[str, str]
    can_inject: bool

    async def settle(self, predicate: Predicate, timeout_s: float = 60.0) -> None: ...

    def fault(self, kind: str, **fields: Any) -> None: ...


class SimHarness:
    kind = "sim"
    can_inject = True
    STEP_S = 0.25

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.sim = SimCluster(
            name="contract",
            spec={"nodes": 3, "cpu": 16, "memory_mib": 64 * 1024, "gpus": 4},
            zone="zone-a",
            clock=self.clock,
        )
        self.provider: ClusterProvider = self.sim
        self.namespace = f"contract-{next(_namespaces)}"
        self.images = ("registry.local/contract/web:v1", "registry.local/contract/web:v2")

    async def settle(self, predicate: Predicate, timeout_s: float = 60.0) -> None:
        waited = 0.0
        while not await predicate():
            if waited >= timeout_s:
                raise AssertionError(f"not settled within {timeout_s:g}s of simulated time")
            self.clock.step(self.STEP_S)
            self.sim.advance()
            waited += self.STEP_S

    def fault(self, kind: str, **fields: Any) -> None:
        self.sim.inject({"kind": kind, **fields})


@dataclass
class KubeBed:
    plane: ControlPlane
    node: RealNode


class KubeHarness:
    kind = "kubernetes"
    can_inject = False
    POLL_S = 0.2

    def __init__(self, bed: KubeBed) -> None:
        self.bed = bed
        self.provider: ClusterProvider = KubernetesCluster(
            name="contract", kubeconfig=bed.plane.kubeconfig_text(), node_simulator="kwok"
        )
        self.namespace = f"contract-{next(_namespaces)}"
        self.images = bed.node.fresh_images(self.namespace)

    async def settle(self, predicate: Predicate, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not await predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not settled within {timeout_s:g}s")
            await asyncio.sleep(self.POLL_S)

    def fault(self, kind: str, **fields: Any) -> None:
        raise AssertionError("the kubernetes harness cannot inject faults")

    def clean(self) -> None:
        """Delete the test's namespace and nodes and wait until they are gone, so the next
        test sees an idle real node and no events of this one."""
        with self.bed.plane.http_client() as client:
            # the pods at once (the kubelet stops their containers in the background), then the
            # rest with the namespace
            client.delete(
                f"/api/v1/namespaces/{self.namespace}/pods", params={"gracePeriodSeconds": "0"}
            )
            client.delete(f"/api/v1/namespaces/{self.namespace}")
            for node in client.get("/api/v1/nodes").json().get("items", []):
                name = node["metadata"]["name"]
                if name != self.bed.node.name:
                    client.delete(f"/api/v1/nodes/{name}")
            deadline = time.monotonic() + 120
            while client.get(f"/api/v1/namespaces/{self.namespace}").status_code != 404:
                if time.monotonic() > deadline:
                    raise AssertionError(f"namespace {self.namespace} still exists after 120s")
                time.sleep(0.25)


@pytest.fixture(scope="session")
def kube_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeBed]:
    plane, node = start_real_bed(tmp_path_factory, "contract", controller_manager=True)
    yield KubeBed(plane, node)
    node.stop()
    plane.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sim_only: needs fault injection, which only the sim harness offers"
    )


@pytest.fixture(params=ADAPTERS)
def provider_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.node.get_closest_marker("sim_only") and request.param != "sim":
        pytest.skip(f"needs fault injection; the {request.param} harness has none")
    harness: Harness
    if request.param == "sim":
        harness = SimHarness()
    elif request.param == "kubernetes":
        harness = KubeHarness(request.getfixturevalue("kube_bed"))
    else:
        raise AssertionError(f"no harness for {request.param}")
    try:
        yield harness
    finally:
        asyncio.run(harness.provider.close())
        if isinstance(harness, KubeHarness):
            harness.clean()


def contract(
    test: Callable[[Harness], Coroutine[Any, Any, None]],
) -> Callable[[Harness], None]:
    """Run an ``async def test_...(provider_harness)`` to completion (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run(provider_harness: Harness) -> None:
        asyncio.run(test(provider_harness))

    return run
