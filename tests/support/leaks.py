"""What the test process lets go of after each test (``tests/conftest.py``).

FastAPI (0.16x) remembers the last 4,096 callables it classified (route endpoints and
dependencies: generator, coroutine?) in module-level LRU caches, each key holding its callable.
Gaia's endpoints are closures over their ``Platform``, so in a process that builds app after
app those caches kept the last few dozen test platforms alive: their engines, metric
registries, compiled statements. The test process grew past 1.4 GB within seven minutes, and
a full collection of the garbage collector then took over 5 s, during which an in-process
server answers nobody: clients gave up after httpx's 5 s (CI of 569ccbd,
``tests/node/test_cni_netns.py``). A server process builds one app, whose callables stay
anyway: the caches cost nothing there.
"""

from __future__ import annotations

import gc
import time

import fastapi.dependencies.models


def forget_fastapi_callables() -> int:
    """Clear FastAPI's caches of classified callables; how many caches were cleared (0 when
    a FastAPI release has none: ``tests/api/test_app_lifetime.py`` then says whether a
    platform still outlives its app)."""
    cleared = 0
    for value in vars(fastapi.dependencies.models).values():
        if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
            value.cache_clear()
            cleared += 1
    return cleared


class CollectorPauses:
    """The garbage collector's longest full pass in this process, and the test it fell in,
    for the run's summary: a pass of seconds means the process holds what it should have let
    go of (the cause above), and in-process servers stall for that long."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.during: str | None = None
        self.test: str | None = None  # the test running now (``pytest_runtest_logstart``)
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info.get("generation") == 2:
            took = time.perf_counter() - self._started
            if took > self.longest:
                self.longest, self.during = took, self.test

    def summary(self) -> str:
        return (
            f"longest full garbage collection: {self.longest:.2f} s"
            + (f" (during {self.during})" if self.during else "")
            + f"; resident memory at the end: {_resident_mib()} MiB"
        )


def _resident_mib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1
