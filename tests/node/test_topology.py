"""Reading a GPU node's topology (``gaia.node.topology``): ``nvidia-smi topo -m`` run by path, and
NVML through a FAKE NVML (``tests/support/fake_nvml.py``) built from the real ``nvidia-smi``
tables of ``tests/fixtures/topology`` (no machine here has a GPU). The tables themselves are the
scheduler's parser's business (``tests/scheduler/test_links.py``)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from gaia.node.topology import read_local_topology, read_nvml_topology
from gaia.scheduler.links import GpuTopology, parse_nvidia_smi_topo
from tests.support.fake_nvml import FakeNvml
from tests.support.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "topology"


def fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.txt").read_text()


def load(name: str) -> GpuTopology:
    return parse_nvidia_smi_topo(fixture_text(name))


def test_read_local_topology_without_nvidia_smi_is_none() -> None:
    def never_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise AssertionError("nothing to run")

    assert read_local_topology(run=never_run, which=lambda name: None) is None


def test_read_local_topology_runs_nvidia_smi_by_path() -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append((args, kwargs.get("shell", False)))
        return subprocess.CompletedProcess(args, 0, stdout=fixture_text("dgx_h100"), stderr="")

    topology = read_local_topology(run=fake_run, which=lambda name: f"/usr/bin/{name}")
    assert topology == load("dgx_h100")
    assert calls == [(["/usr/bin/nvidia-smi", "topo", "-m"], False)]


@pytest.mark.parametrize(
    "outcome",
    [
        subprocess.CompletedProcess([], 9, stdout="", stderr="NVIDIA-SMI has failed"),
        subprocess.CompletedProcess([], 0, stdout="No devices were found\n", stderr=""),
        OSError("exec format error"),
        subprocess.TimeoutExpired(["nvidia-smi"], 30),
    ],
)
def test_read_local_topology_is_none_when_nvidia_smi_fails(
    outcome: subprocess.CompletedProcess[str] | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    def fake_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert read_local_topology(run=fake_run, which=lambda name: "/usr/bin/nvidia-smi") is None
    assert "nvidia-smi topo -m" in caplog.text


# --------------------------------------------------------------------------- NVML (fake)


@pytest.mark.parametrize(
    "name", ["dgx1_v100", "pcie8_two_switches", "pcie8_cascade", "workstation4_nvlink_bridges"]
)
def test_nvml_reads_what_nvidia_smi_prints(name: str) -> None:
    expected = load(name)
    fake = FakeNvml(expected)
    topology = read_nvml_topology(fake)
    assert topology is not None
    assert topology.links == tuple(
        tuple("SYS" if label == "SOC" else label for label in row) for row in expected.links
    )
    assert topology.cpu_affinity == expected.cpu_affinity
    assert fake.shut


def test_nvml_counts_links_through_nvswitches() -> None:
    a100 = load("dgx_a100")
    topology = read_nvml_topology(FakeNvml(a100, nvswitch=12))
    assert topology is not None
    assert topology.links == a100.links  # NV12 between every two GPUs
    assert topology.numa_node == a100.numa_node


def test_nvml_without_a_driver_is_none() -> None:
    fake = FakeNvml(load("dgx1_v100"), init_fails=True)
    assert read_nvml_topology(fake) is None
