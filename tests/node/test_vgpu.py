"""GPU shares on a node (``gaia.node.vgpu``): what Allocate grants and how PreStartContainer makes
the limits real, against a FAKE ``nvidia-cuda-mps-control`` (``fake_mps_control.py``, which
answers as NVIDIA documents the real one). No GPU is needed; what only a real card can show
(the limits holding in a CUDA process) is ``scripts/gpu-check.sh``'s job.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gaia.node.vgpu import (
    CONTAINER_PIPE_DIR,
    CardShare,
    DeviceNode,
    EnforcementError,
    Grant,
    Mount,
    MpsEnforcement,
    ThreadCalibration,
    VisibilityOnly,
    enforcement_from,
    mps_limits,
    validate_allocation_id,
)
from tests.support.waiting import eventually

FAKE = Path(__file__).with_name("fake_mps_control.py")
UUID0 = "GPU-11111111-2222-3333-4444-555555555555"
UUID1 = "GPU-66666666-7777-8888-9999-000000000000"


def share(index: int = 0, *, cores: int = 30, memory_mib: int = 2048) -> CardShare:
    return CardShare(
        index=index, uuid=(UUID0, UUID1)[index], minor=index, cores=cores, memory_mib=memory_mib
    )


@pytest.fixture
def dev_root(tmp_path: Path) -> Path:
    root = tmp_path / "dev"
    root.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):  # no nvidia-uvm-tools here
        (root / name).touch()
    return root


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_MPS_RECORD", str(path))
    for name in ("FAKE_MPS_REFUSE", "FAKE_MPS_NO_START", "FAKE_MPS_IGNORE_QUIT"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def fake_control(tmp_path: Path) -> str:
    wrapper = tmp_path / "fake-nvidia-cuda-mps-control"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


@pytest.fixture
def mps(
    tmp_path: Path, dev_root: Path, fake_control: str, record: Path
) -> Iterator[MpsEnforcement]:
    enforcement = MpsEnforcement(
        dev_root=dev_root,
        state_root=tmp_path / "state",
        mps_control=fake_control,
        command_timeout_s=5,
        ready_timeout_s=5,
    )
    yield enforcement
    for child in (tmp_path / "state").glob("*"):
        if (child / "pipe").exists():
            enforcement.release(allocation_id=child.name)


def calls(record: Path) -> list[dict[str, object]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


def commands_sent(record: Path) -> list[str]:
    out: list[str] = []
    for call in calls(record):
        if call["argv"] == ["-d"]:
            out.append("-d")
        out.extend(call.get("commands", []))  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------- grant


def test_a_share_is_granted_its_card_the_driver_nodes_and_its_own_pipe_directory(
    mps: MpsEnforcement, dev_root: Path, tmp_path: Path
) -> None:
    grant = mps.grant(allocation_id="pod-a.c1", shares=[share(0)])
    assert grant == Grant(
        envs={"NVIDIA_VISIBLE_DEVICES": UUID0, "CUDA_MPS_PIPE_DIRECTORY": "/tmp/nvidia-mps"},
        mounts=(
            Mount("/tmp/nvidia-mps", str(tmp_path / "state" / "pod-a.c1" / "pipe"), False),
            Mount("/dev/shm", str(tmp_path / "state" / "shm"), False),
        ),
        devices=(
            DeviceNode("/dev/nvidia0", str(dev_root / "nvidia0")),
            DeviceNode("/dev/nvidiactl", str(dev_root / "nvidiactl")),
            DeviceNode("/dev/nvidia-uvm", str(dev_root / "nvidia-uvm")),
        ),
    )


def test_no_limit_travels_in_the_containers_environment(mps: MpsEnforcement) -> None:
    # the limits live in the daemon; an environment holding them would invite raising them
    grant = mps.grant(allocation_id="a", shares=[share(0, cores=30, memory_mib=2048)])
    assert not [k for k in grant.envs if "THREAD" in k or "MEM_LIMIT" in k or "LIMIT" in k]
    assert (
        "CUDA_VISIBLE_DEVICES" not in grant.envs
    )  # NVIDIA: unset in clients of a remapping daemon


def test_the_pipe_directory_is_mounted_where_mps_looks_by_default(mps: MpsEnforcement) -> None:
    # a client that unsets CUDA_MPS_PIPE_DIRECTORY falls back to /tmp/nvidia-mps: the same daemon
    grant = mps.grant(allocation_id="a", shares=[share(0)])
    assert CONTAINER_PIPE_DIR == "/tmp/nvidia-mps"
    assert grant.envs["CUDA_MPS_PIPE_DIRECTORY"] == CONTAINER_PIPE_DIR
    assert next(m.container_path for m in grant.mounts) == CONTAINER_PIPE_DIR


def test_a_pipe_directory_too_long_for_unix_sockets_is_refused(
    dev_root: Path, tmp_path: Path
) -> None:
    deep = MpsEnforcement(dev_root=dev_root, state_root=tmp_path / ("d" * 60))
    with pytest.raises(EnforcementError, match="too long for the sockets"):
        deep.grant(allocation_id="x" * 40, shares=[share(0)])


def test_two_allocations_on_one_card_get_different_daemons(mps: MpsEnforcement) -> None:
    a = mps.grant(allocation_id="a", shares=[share(0, cores=30)])
    b = mps.grant(allocation_id="b", shares=[share(0, cores=70)])
    assert a.mounts[0].host_path != b.mounts[0].host_path


def test_whole_cards_are_visibility_only(mps: MpsEnforcement, dev_root: Path) -> None:
    shares = [share(0, cores=100, memory_mib=0), share(1, cores=100, memory_mib=0)]
    grant = mps.grant(allocation_id="a", shares=shares)
    assert grant.envs == {"NVIDIA_VISIBLE_DEVICES": f"{UUID0},{UUID1}"}
    assert grant.mounts == ()
    assert [d.container_path for d in grant.devices] == [
        "/dev/nvidia0",
        "/dev/nvidia1",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
    ]


def test_grant_has_no_side_effects(mps: MpsEnforcement, tmp_path: Path, record: Path) -> None:
    mps.grant(allocation_id="a", shares=[share(0)])
    assert not (tmp_path / "state").exists()
    assert calls(record) == []


def test_a_missing_card_node_is_refused_with_the_path(mps: MpsEnforcement, dev_root: Path) -> None:
    (dev_root / "nvidia1").unlink()
    with pytest.raises(EnforcementError, match=r"nvidia1 does not exist"):
        mps.grant(allocation_id="a", shares=[share(1)])


@pytest.mark.parametrize(
    "bad", ["", "..", ".", "../x", "a/b", "-a", "a b", "a\nb", "x" * 65, "é", "/abs"]
)
def test_unsafe_allocation_ids_are_refused(bad: str, mps: MpsEnforcement) -> None:
    with pytest.raises(EnforcementError, match="allocation id"):
        validate_allocation_id(bad)
    with pytest.raises(EnforcementError, match="allocation id"):
        mps.grant(allocation_id=bad, shares=[share(0)])
    with pytest.raises(EnforcementError, match="allocation id"):
        mps.release(allocation_id=bad)


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ([], "at least one card"),
        ([share(0, cores=0)], "1..100"),
        ([share(0, cores=101)], "1..100"),
        ([share(0, memory_mib=-1)], "< 0"),
        ([share(0), share(0)], "appears twice"),
        ([CardShare(0, "nvidia0", 0, 30, 0)], "not an NVML uuid"),
        ([CardShare(0, UUID0, -1, 30, 0)], "must not be negative"),
        ([share(0, cores=30), share(1, cores=50)], "one active-thread percentage"),
        ([share(0, cores=100), share(1, cores=50)], "one active-thread percentage"),
    ],
)
def test_invalid_shares_are_refused(
    shares: list[CardShare], message: str, mps: MpsEnforcement
) -> None:
    with pytest.raises(EnforcementError, match=message):
        mps.grant(allocation_id="a", shares=shares)


def test_mode_none_grants_whole_cards_and_refuses_shares(dev_root: Path) -> None:
    none = enforcement_from("none", dev_root=dev_root)
    assert isinstance(none, VisibilityOnly)
    grant = none.grant(allocation_id="a", shares=[share(0, cores=100, memory_mib=0)])
    assert grant.envs == {"NVIDIA_VISIBLE_DEVICES": UUID0} and grant.mounts == ()
    with pytest.raises(EnforcementError, match="enforces no shares"):
        none.grant(allocation_id="a", shares=[share(0, cores=50, memory_mib=0)])
    none.prepare(allocation_id="a", shares=[share(0, cores=100, memory_mib=0)])
    none.release(allocation_id="a")


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(EnforcementError, match="'mps' or 'none'"):
        enforcement_from("hami")


# ---------------------------------------------------------------- limits


def test_limits_are_one_thread_percentage_and_memory_per_device_ordinal() -> None:
    limits = mps_limits(
        [share(1, cores=25, memory_mib=4096), share(0, cores=25, memory_mib=0)],
        calibration=ThreadCalibration(),
    )
    assert limits.thread_percentage == 25
    # ordinals as the daemon sees them: its CUDA_VISIBLE_DEVICES lists the cards in grant order
    assert limits.visible_devices == (UUID1, UUID0)
    assert limits.memory_mib == ((0, 4096),)
    assert limits.commands() == (
        "set_default_active_thread_percentage 25",
        "set_default_device_pinned_mem_limit 0 4096M",
    )


def test_a_full_card_with_a_memory_limit_sets_only_memory() -> None:
    limits = mps_limits([share(0, cores=100, memory_mib=8192)], calibration=ThreadCalibration())
    assert limits.commands() == ("set_default_device_pinned_mem_limit 0 8192M",)


def test_a_calibration_table_maps_asked_cores_to_thread_percentages(tmp_path: Path) -> None:
    table = ThreadCalibration(points=((30, 20), (50, 38)))
    assert [table.percentage(c) for c in (1, 15, 30, 40, 50, 75, 100)] == [
        1,
        10,
        20,
        29,
        38,
        69,
        100,
    ]
    assert ThreadCalibration().percentage(30) == 30
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"NVIDIA H200": [[30, 20], [50, 38]]}))
    assert ThreadCalibration.load(path, gpu_name="NVIDIA H200") == table
    assert ThreadCalibration.load(path, gpu_name="Tesla T4") == ThreadCalibration()
    assert ThreadCalibration.load(tmp_path / "absent.json", gpu_name="x") == ThreadCalibration()


# ---------------------------------------------------------------- prepare / release


def test_prepare_starts_the_daemon_then_sets_its_defaults_before_any_client(
    mps: MpsEnforcement, record: Path, tmp_path: Path
) -> None:
    mps.prepare(allocation_id="a", shares=[share(0, cores=30, memory_mib=2048)])
    sent = commands_sent(record)
    assert sent[0] == "-d"
    assert "set_default_active_thread_percentage 30" in sent
    assert "set_default_device_pinned_mem_limit 0 2048M" in sent
    assert sent.index("set_default_active_thread_percentage 30") > 0
    start = calls(record)[0]
    env = start["env"]
    assert isinstance(env, dict)
    assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "state" / "a" / "pipe")
    assert env["CUDA_MPS_LOG_DIRECTORY"] == str(tmp_path / "state" / "a" / "log")
    assert env["CUDA_VISIBLE_DEVICES"] == UUID0
    # the daemon holds them (the fake's state is the real daemon's memory)
    state = json.loads((tmp_path / "state" / "a" / "pipe" / "fake-state.json").read_text())
    assert state == {"thread": 30.0, "memory": {"0": "2048M"}}
    assert mps.control("a", "get_default_active_thread_percentage") == "30.0"


def test_the_grant_mounts_the_directory_the_daemon_listens_on(mps: MpsEnforcement) -> None:
    shares = [share(0)]
    grant = mps.grant(allocation_id="a", shares=shares)
    mps.prepare(allocation_id="a", shares=shares)
    pipe = Path(grant.mounts[0].host_path)
    assert (pipe / "nvidia-cuda-mps-control.pid").exists()
    assert stat.S_IMODE(pipe.stat().st_mode) == 0o1777


def test_prepare_is_idempotent_and_starts_the_daemon_once(
    mps: MpsEnforcement, record: Path
) -> None:
    shares = [share(0)]
    mps.prepare(allocation_id="a", shares=shares)
    mps.prepare(allocation_id="a", shares=shares)
    sent = commands_sent(record)
    assert sent.count("-d") == 1
    assert sent.count("set_default_active_thread_percentage 30") == 1


def test_prepare_restarts_a_daemon_that_died(mps: MpsEnforcement, record: Path) -> None:
    shares = [share(0)]
    mps.prepare(allocation_id="a", shares=shares)
    pid = int((mps.pipe_dir("a") / "nvidia-cuda-mps-control.pid").read_text())
    mps.control("a", "quit")
    _wait_gone(pid)
    mps.prepare(allocation_id="a", shares=shares)
    assert commands_sent(record).count("-d") == 2
    assert mps.control("a", "get_default_active_thread_percentage") == "30.0"


def test_prepare_refuses_to_change_the_limits_of_a_running_allocation(mps: MpsEnforcement) -> None:
    mps.prepare(allocation_id="a", shares=[share(0, cores=30)])
    with pytest.raises(EnforcementError, match="cannot be changed; release the allocation first"):
        mps.prepare(allocation_id="a", shares=[share(0, cores=70)])


def test_whole_cards_start_no_daemon(mps: MpsEnforcement, record: Path, tmp_path: Path) -> None:
    mps.prepare(allocation_id="a", shares=[share(0, cores=100, memory_mib=0)])
    assert calls(record) == []
    assert not (tmp_path / "state" / "a").exists()


def test_a_refused_limit_fails_prepare_with_the_daemons_reply(
    mps: MpsEnforcement, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAKE_MPS_REFUSE", "pinned_mem_limit")
    with pytest.raises(EnforcementError, match=r"refused 'set_default_device_pinned_mem_limit 0"):
        mps.prepare(allocation_id="a", shares=[share(0)])
    # nothing recorded as prepared: the next prepare starts from the beginning
    assert not (tmp_path / "state" / "a" / "limits.json").exists()


def test_a_daemon_that_does_not_start_fails_prepare_clearly(
    mps: MpsEnforcement, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_NO_START", "1")
    with pytest.raises(EnforcementError, match=r"did not start .* exited 1"):
        mps.prepare(allocation_id="a", shares=[share(0)])


def test_a_missing_control_program_says_what_to_install(
    mps: MpsEnforcement, tmp_path: Path
) -> None:
    absent = MpsEnforcement(
        dev_root=mps.dev_root, state_root=tmp_path / "s2", mps_control=str(tmp_path / "nope")
    )
    with pytest.raises(EnforcementError, match="not found: install the NVIDIA driver's MPS tools"):
        absent.prepare(allocation_id="a", shares=[share(0)])


def test_release_quits_the_daemon_and_removes_its_directory(
    mps: MpsEnforcement, record: Path, tmp_path: Path
) -> None:
    mps.prepare(allocation_id="a", shares=[share(0)])
    pid = int((mps.pipe_dir("a") / "nvidia-cuda-mps-control.pid").read_text())
    mps.release(allocation_id="a")
    assert commands_sent(record)[-1] == "quit"
    assert not (tmp_path / "state" / "a").exists()
    _wait_gone(pid)
    mps.release(allocation_id="a")  # idempotent: nothing left, nothing sent
    assert commands_sent(record)[-1] == "quit"
    assert commands_sent(record).count("quit") == 1


def test_release_kills_a_daemon_that_ignores_quit(
    mps: MpsEnforcement, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_IGNORE_QUIT", "1")
    quick = MpsEnforcement(
        dev_root=mps.dev_root,
        state_root=mps.state_root,
        mps_control=mps.mps_control,
        command_timeout_s=1,
    )
    quick.prepare(allocation_id="a", shares=[share(0)])
    pid = int((quick.pipe_dir("a") / "nvidia-cuda-mps-control.pid").read_text())
    quick.release(allocation_id="a")
    _wait_gone(pid)


def test_allocations_are_independent(mps: MpsEnforcement, tmp_path: Path) -> None:
    mps.prepare(allocation_id="a", shares=[share(0, cores=30, memory_mib=2048)])
    mps.prepare(allocation_id="b", shares=[share(0, cores=70, memory_mib=0)])
    assert mps.control("a", "get_default_active_thread_percentage") == "30.0"
    assert mps.control("b", "get_default_active_thread_percentage") == "70.0"
    mps.release(allocation_id="a")
    assert mps.control("b", "get_default_active_thread_percentage") == "70.0"


def _wait_gone(pid: int) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rpartition(")")[2].split()[0] == "Z"

    eventually(gone, f"MPS daemon {pid} gone", timeout_s=10)


# ---------------------------------------------------------------- audit


def test_audit_finds_and_undoes_a_limit_raised_through_the_control_socket(
    mps: MpsEnforcement,
) -> None:
    mps.prepare(allocation_id="a", shares=[share(0, cores=30, memory_mib=2048)])
    assert mps.audit("a") == ()
    # what a container holding nvidia-cuda-mps-control can do through its mounted pipe directory
    mps.control("a", "set_default_active_thread_percentage 100")
    mps.control("a", "set_default_device_pinned_mem_limit 0 64G")
    found = mps.audit("a")
    assert found == (
        "get_default_active_thread_percentage: 100, set 30",
        "get_default_device_pinned_mem_limit 0: 65536 MiB, set 2048",
    )
    assert mps.control("a", "get_default_active_thread_percentage") == "30.0"
    assert mps.control("a", "get_default_device_pinned_mem_limit 0") == "2048M"
    assert mps.audit("a") == ()


def test_audit_of_an_allocation_not_prepared_finds_nothing(mps: MpsEnforcement) -> None:
    assert mps.audit("never") == ()


@pytest.mark.parametrize(
    ("reply", "mib"),
    [("2G", 2048.0), ("2048M", 2048.0), ("2147483648", 2048.0), ("1.5 GB", 1536.0), ("n/a", None)],
)
def test_memory_limits_are_read_in_the_units_the_control_program_prints(
    reply: str, mib: float | None
) -> None:
    from gaia.node.vgpu import _mebibytes

    assert _mebibytes(reply) == mib


# ---------------------------------------------------------------- stray contexts


class FakeNvml:
    """A FAKE NVML: two cards; on card 0 an MPS server (pid 10), an MPS client (pid 11) and a
    process with a plain context (pid 12); on card 1, not shared, another plain one (pid 20)."""

    def __init__(self, *, mps_list_supported: bool = True) -> None:
        self.mps_list_supported = mps_list_supported
        self.shut = False

    def nvmlInit(self) -> None:
        return None

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return (UUID0, UUID1)[handle].encode()

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[object]:
        from types import SimpleNamespace

        pids = {0: [10, 11, 12], 1: [20]}[handle]
        return [SimpleNamespace(pid=p, usedGpuMemory=3 << 30) for p in pids]

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: int) -> list[object]:
        from types import SimpleNamespace

        if not self.mps_list_supported:
            raise RuntimeError("Not Supported")
        return [SimpleNamespace(pid=11, usedGpuMemory=None)] if handle == 0 else []


def test_a_plain_context_on_a_shared_card_is_found(tmp_path: Path) -> None:
    from gaia.node.vgpu import StrayContext, stray_contexts

    proc = tmp_path / "proc"
    for pid, comm in ((10, "nvidia-cuda-mps"), (11, "python3"), (12, "python3"), (20, "x")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
    nvml = FakeNvml()
    found = stray_contexts(shared_uuids={UUID0}, nvml=nvml, proc_root=proc)
    assert found == (StrayContext(uuid=UUID0, pid=12, used_mib=3072),)
    assert nvml.shut
