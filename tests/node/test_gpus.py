"""The node's GPU reader (``gaia.node.gpus``), driven by a FAKE NVML
(``tests/support/fake_nvml.py``) built from real ``nvidia-smi -q`` and ``nvidia-smi topo -m``
output: no machine here has a GPU, so everything below is checked against the fake, never
against NVIDIA's library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gaia.node.gpus import (
    IGNORED_XIDS,
    GpuReader,
    NvmlGpuReader,
    SmiGpuReader,
    open_gpus,
    parse_nvidia_smi_query,
)
from gaia.scheduler.links import GpuTopology, parse_nvidia_smi_topo
from tests.support.fake_nvml import FakeNvml, machine_text
from tests.support.paths import FIXTURES, REPO

DGX_H100_UUIDS = (
    "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1",
    "GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd",
    "GPU-2d50cdf6-dd67-9f2e-855e-0d4d6d395a2f",
    "GPU-d1838e76-90e6-4408-711d-aeeaa2e1fd14",
    "GPU-72be6e5d-3c1b-0d37-98ac-d3ef159f2589",
    "GPU-52378fbc-3124-3895-13b6-1dd179563e0f",
    "GPU-83a5aebb-b71c-c570-aa83-185e1233fe97",
    "GPU-33135771-a848-ece1-b61e-489e221d663c",
)
SOCKET0 = (*range(0, 56), *range(112, 168))
SOCKET1 = (*range(56, 112), *range(168, 224))


def topology(name: str) -> GpuTopology:
    return parse_nvidia_smi_topo((FIXTURES / "topology" / f"{name}.txt").read_text())


def no_nvidia_smi(name: str) -> str | None:
    return None


def never_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    raise AssertionError("nvidia-smi must not run while NVML answers")


@pytest.fixture
def dgx_h100() -> FakeNvml:
    return FakeNvml.machine("dgx_h100", topology=topology("dgx_h100"))


@pytest.fixture
def a100() -> FakeNvml:
    return FakeNvml.machine("hgx_a100_4")


def open_reader(fake: FakeNvml, **kwargs: Any) -> Iterator[GpuReader]:
    reader = open_gpus(nvml=fake, run=never_run, which=no_nvidia_smi, **kwargs)
    assert reader is not None
    yield reader
    reader.close()


@pytest.fixture
def h100_reader(dgx_h100: FakeNvml) -> Iterator[GpuReader]:
    yield from open_reader(dgx_h100)


@pytest.fixture
def a100_reader(a100: FakeNvml) -> Iterator[GpuReader]:
    yield from open_reader(a100)


# ------------------------------------------------------------------------------ the cards


def test_a_dgx_h100_reads_as_eight_cards_with_their_uuid_minor_bus_and_socket(
    h100_reader: GpuReader,
) -> None:
    snapshot = h100_reader.snapshot()
    assert [c.uuid for c in snapshot.cards] == list(DGX_H100_UUIDS)
    assert {c.model for c in snapshot.cards} == {"NVIDIA H100 80GB HBM3"}
    assert {c.memory_mib for c in snapshot.cards} == {81559}
    assert [c.minor for c in snapshot.cards] == list(range(8))
    assert [c.bus_id for c in snapshot.cards] == [
        "0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
        "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0",
    ]  # fmt: skip
    assert [c.numa_node for c in snapshot.cards] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [c.cpus for c in snapshot.cards] == [SOCKET0] * 4 + [SOCKET1] * 4
    assert snapshot.topology is not None
    assert snapshot.topology.links[0][7] == "NV18"
    assert all(h.healthy for h in snapshot.health)
    assert snapshot.processes == ()
    assert snapshot.source == "nvml"


def test_minor_numbers_are_read_not_assumed_equal_to_the_index(a100_reader: GpuReader) -> None:
    # this real 4-card A100 machine has /dev/nvidia3../dev/nvidia6
    assert [c.minor for c in a100_reader.snapshot().cards] == [3, 4, 5, 6]


def test_numa_node_and_cores_come_from_sysfs_where_nvml_has_none(tmp_path: Path) -> None:
    # as on the H200 of TESTBED.md: NVML answers NotSupported for the NUMA node
    fake = FakeNvml.machine("h100_nvl_2", unsupported={"nvmlDeviceGetNumaNodeId"})
    for bus, node, cpus in (("0000:ad:00.0", "1\n", "32-63\n"), ("0000:ae:00.0", "-1\n", "")):
        device = tmp_path / "bus" / "pci" / "devices" / bus
        device.mkdir(parents=True)
        (device / "numa_node").write_text(node)
        (device / "local_cpulist").write_text(cpus)
    reader = open_gpus(nvml=fake, run=never_run, which=no_nvidia_smi, sysfs=tmp_path)
    assert reader is not None
    cards = reader.snapshot().cards
    assert (cards[0].numa_node, cards[0].cpus) == (1, tuple(range(32, 64)))
    assert (cards[1].numa_node, cards[1].cpus) == (None, ())  # -1: the platform does not know


# ------------------------------------------------------------------------------ health


def test_xid_79_makes_the_card_unhealthy_until_the_agent_restarts(dgx_h100: FakeNvml) -> None:
    reader = open_gpus(nvml=dgx_h100, run=never_run, which=no_nvidia_smi)
    assert reader is not None
    dgx_h100.xid(3, 79)
    unhealthy = reader.snapshot().unhealthy()
    assert list(unhealthy) == [3]
    assert unhealthy[3] == (
        "XID 79 (GPU has fallen off the bus)",
        "NVML has lost the GPU (fallen off the bus?)",
    )
    dgx_h100.cards[3].lost = False  # the card answers again: the XID is not forgotten
    assert reader.snapshot().unhealthy() == {3: ("XID 79 (GPU has fallen off the bus)",)}
    reader.close()
    restarted = open_gpus(nvml=dgx_h100, run=never_run, which=no_nvidia_smi)
    assert restarted is not None
    assert restarted.snapshot().unhealthy() == {}


@pytest.mark.parametrize("xid", sorted(IGNORED_XIDS))
def test_application_xids_leave_the_card_healthy(
    h100_reader: GpuReader, dgx_h100: FakeNvml, xid: int
) -> None:
    dgx_h100.xid(5, xid)
    assert h100_reader.snapshot().unhealthy() == {}


def test_application_xids_are_nvidias_list() -> None:
    # NVIDIA/k8s-device-plugin internal/rm/health.go, ignoredXids (109 since 2024)
    assert sorted(IGNORED_XIDS) == [13, 31, 43, 45, 68, 109]


def test_a_double_bit_ecc_error_makes_the_card_unhealthy(
    h100_reader: GpuReader, dgx_h100: FakeNvml
) -> None:
    dgx_h100.ecc(2, uncorrected=1)
    assert h100_reader.snapshot().unhealthy() == {
        2: (
            "XID 48 (double-bit ECC error)",
            "1 uncorrected ECC error(s) since the driver loaded",
        )
    }


def test_corrected_ecc_errors_are_not_a_fault(a100_reader: GpuReader) -> None:
    # card 1 of the recorded A100 machine has 353 corrected DRAM errors and no uncorrected one
    assert "DRAM Correctable              : 353" in machine_text("hgx_a100_4")
    assert a100_reader.snapshot().unhealthy() == {}


def test_a_card_at_its_slowdown_temperature_is_unhealthy_until_it_cools(
    a100_reader: GpuReader, a100: FakeNvml
) -> None:
    a100.set_temperature(0, 89)  # the A100's recorded "GPU Slowdown Temp : 89 C"
    assert a100_reader.snapshot().unhealthy() == {
        0: ("temperature 89 C at or above its slowdown of 89 C",)
    }
    a100.set_temperature(0, 70)
    assert a100_reader.snapshot().unhealthy() == {}


def test_without_a_slowdown_temperature_the_limit_applies(dgx_h100: FakeNvml) -> None:
    reader = open_gpus(nvml=dgx_h100, run=never_run, which=no_nvidia_smi, temperature_limit_c=80)
    assert reader is not None
    dgx_h100.set_temperature(6, 80)
    assert reader.snapshot().unhealthy() == {6: ("temperature 80 C at or above its limit of 80 C",)}


def test_processes_and_the_memory_they_hold(h100_reader: GpuReader, dgx_h100: FakeNvml) -> None:
    dgx_h100.add_process(0, pid=4242, used_mib=30000)
    dgx_h100.add_process(0, pid=4343, used_mib=1000)
    dgx_h100.add_process(7, pid=99, used_mib=512)
    snapshot = h100_reader.snapshot()
    assert {(p.index, p.pid, p.used_mib) for p in snapshot.processes} == {
        (0, 4242, 30000),
        (0, 4343, 1000),
        (7, 99, 512),
    }
    assert snapshot.memory_used_mib() == {0: 31000, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 512}
    dgx_h100.remove_process(0, 4242)
    assert h100_reader.snapshot().memory_used_mib()[0] == 1000


# ------------------------------------------------------------------------------ failures


def test_calls_nvml_does_not_support_cost_only_their_fact(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeNvml.machine(
        "dgx_h100",
        topology=topology("dgx_h100"),
        unsupported={
            "nvmlDeviceGetNumaNodeId",
            "nvmlDeviceGetNvLinkState",
            "nvmlDeviceGetMinorNumber",
            "nvmlDeviceGetTemperature",
            "nvmlDeviceGetTotalEccErrors",
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlEventSetCreate",
        },
    )
    reader = open_gpus(nvml=fake, run=never_run, which=no_nvidia_smi)
    assert reader is not None
    snapshot = reader.snapshot()
    assert len(snapshot.cards) == 8
    assert {c.minor for c in snapshot.cards} == {-1}
    assert [c.uuid for c in snapshot.cards] == list(DGX_H100_UUIDS)
    assert snapshot.unhealthy() == {}
    reader.snapshot()
    # logged once per card and call, not once per snapshot
    temperature_lines = [r for r in caplog.records if "nvmlDeviceGetTemperature" in r.getMessage()]
    assert len(temperature_lines) == 8


def test_closing_the_reader_shuts_nvml_down(dgx_h100: FakeNvml) -> None:
    reader = open_gpus(nvml=dgx_h100, run=never_run, which=no_nvidia_smi)
    assert reader is not None and dgx_h100.initialised
    reader.close()
    assert not dgx_h100.initialised
    assert dgx_h100.calls[-2:] == ["nvmlEventSetFree", "nvmlShutdown"]


def nvidia_smi(machine: str, topo: str | None) -> Any:
    def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if args[1:] == ["-q"]:
            return subprocess.CompletedProcess(args, 0, stdout=machine_text(machine), stderr="")
        if args[1:] == ["topo", "-m"] and topo is not None:
            text = (FIXTURES / "topology" / f"{topo}.txt").read_text()
            return subprocess.CompletedProcess(args, 0, stdout=text, stderr="")
        return subprocess.CompletedProcess(args, 9, stdout="", stderr="not recorded")

    return run


def test_without_a_driver_for_nvml_nvidia_smi_is_read(tmp_path: Path) -> None:
    fake = FakeNvml.machine("dgx_h100", topology=topology("dgx_h100"))
    fake.init_fails = True
    reader = open_gpus(
        nvml=fake,
        run=nvidia_smi("dgx_h100", "dgx_h100"),
        which=lambda name: f"/usr/bin/{name}",
        sysfs=tmp_path,
    )
    assert isinstance(reader, SmiGpuReader)
    snapshot = reader.snapshot()
    assert snapshot.source == "nvidia-smi"
    assert [c.uuid for c in snapshot.cards] == list(DGX_H100_UUIDS)
    assert [c.numa_node for c in snapshot.cards] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert snapshot.unhealthy() == {}


def test_nvml_topology_falls_back_to_nvidia_smi_topo(a100: FakeNvml) -> None:
    a100.unsupported = frozenset({"nvmlDeviceGetTopologyCommonAncestor"})
    reader = open_gpus(
        nvml=a100,
        run=nvidia_smi("hgx_a100_4", "workstation4_dual_socket"),
        which=lambda name: f"/usr/bin/{name}",
    )
    assert isinstance(reader, NvmlGpuReader)
    snapshot = reader.snapshot()
    assert snapshot.topology == topology("workstation4_dual_socket")
    assert [c.numa_node for c in snapshot.cards] == [0, 0, 1, 1]


def test_a_node_without_nvml_or_nvidia_smi_has_no_reader() -> None:
    fake = FakeNvml.machine("h100_nvl_2")
    fake.init_fails = True
    assert open_gpus(nvml=fake, run=never_run, which=no_nvidia_smi) is None


@pytest.mark.parametrize(
    ("machine", "uuids", "minors", "slowdown"),
    [
        ("dgx_h100", DGX_H100_UUIDS, tuple(range(8)), None),
        (
            "hgx_a100_4",
            (
                "GPU-31515c3d-1414-7c2c-004a-f86a898946ac",
                "GPU-72d87681-01db-370e-567d-41afcf20fad0",
                "GPU-62989189-9e1e-ac75-4676-114f14998542",
                "GPU-011b2cfe-2b8e-1cb0-19e1-1b764e854dfc",
            ),
            (3, 4, 5, 6),
            89,
        ),
    ],
)
def test_nvidia_smi_q_of_the_recorded_machines_reads_back(
    machine: str, uuids: tuple[str, ...], minors: tuple[int, ...], slowdown: int | None
) -> None:
    cards = parse_nvidia_smi_query(machine_text(machine))
    assert tuple(c.uuid for c in cards) == uuids
    assert tuple(c.minor for c in cards) == minors
    assert {c.slowdown_c for c in cards} == {slowdown}
    assert {c.ecc_uncorrected for c in cards} == {0}
    assert all(c.processes == () for c in cards)


def test_nvidia_smi_q_processes_and_uncorrected_errors_are_read() -> None:
    # one card's block in the layout nvidia-smi -q prints (composed here, not recorded)
    text = """GPU 00000000:18:00.0
    Product Name                          : NVIDIA H100 80GB HBM3
    GPU UUID                              : GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1
    Minor Number                          : 0
    ECC Errors
        Volatile
            SRAM Uncorrectable Parity     : 0
            SRAM Uncorrectable SEC-DED    : 1
            DRAM Correctable              : 4
            DRAM Uncorrectable            : 2
        Aggregate
            DRAM Uncorrectable            : 7
    Processes
        GPU instance ID                   : N/A
        Compute instance ID               : N/A
        Process ID                        : 4242
            Type                          : C
            Name                          : python3
            Used GPU Memory               : 30000 MiB
        GPU instance ID                   : N/A
        Compute instance ID               : N/A
        Process ID                        : 99
            Type                          : C
            Name                          : trainer
            Used GPU Memory               : 512 MiB
"""
    (card,) = parse_nvidia_smi_query(text)
    assert card.ecc_uncorrected == 3
    assert card.processes == ((4242, 30000), (99, 512))


# ----------------------------------------------------------------- from another process


AGENT = """
import json, sys
from gaia.node.gpus import open_gpus
reader = open_gpus(which=lambda name: None)
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps({str(k): v for k, v in reader.snapshot().unhealthy().items()}), flush=True)
reader.close()
"""


def test_an_agent_in_another_process_sees_an_xid_posted_by_the_test(tmp_path: Path) -> None:
    state = tmp_path / "nvml.json"
    fake = FakeNvml.machine("dgx_h100", topology=topology("dgx_h100"), state_path=state)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests/support/fake_pynvml"), str(REPO)]),
        "GAIA_FAKE_NVML_STATE": str(state),
    }
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert agent.stdout is not None and agent.stdin is not None
        assert agent.stdout.readline().strip() == "ready", agent.stderr
        fake.xid(6, 79)
        agent.stdin.write("go\n")
        agent.stdin.flush()
        unhealthy = json.loads(agent.stdout.readline())
    finally:
        agent.kill()
        agent.wait(timeout=10)
    assert list(unhealthy) == ["6"]
    assert unhealthy["6"][0] == "XID 79 (GPU has fallen off the bus)"
