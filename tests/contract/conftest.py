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
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Protocol

import pytest

from gaia.clock import ManualClock
from gaia.providers.port import ClusterProvider
from gaia.providers.sim import SimCluster

Predicate = Callable[[], Awaitable[bool]]

ADAPTERS = ["sim"]  # the kubernetes adapter joins with its issue
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sim_only: needs fault injection, which only the sim harness offers"
    )


@pytest.fixture(params=ADAPTERS)
def provider_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "sim":
        harness: Harness = SimHarness()
    else:  # pragma: no cover - adapters arrive with their issues
        raise AssertionError(f"no harness for {request.param}")
    if request.node.get_closest_marker("sim_only") and not harness.can_inject:
        pytest.skip(f"needs fault injection; the {harness.kind} harness has none")
    yield harness
    asyncio.run(harness.provider.close())


def contract(
    test: Callable[[Harness], Coroutine[Any, Any, None]],
) -> Callable[[Harness], None]:
    """Run an ``async def test_...(provider_harness)`` to completion (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run(provider_harness: Harness) -> None:
        asyncio.run(test(provider_harness))

    return run
