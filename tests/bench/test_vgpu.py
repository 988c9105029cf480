"""``scripts/gpu-check.sh`` and ``bench/vgpu.py`` keep running: without a GPU they say so and exit
0; on a FAKE one-card machine (``fakegpu/``: an nvidia-smi, a pynvml and a torch that model MPS
limits as NVIDIA documents them, with the fake control daemon of ``tests/node``) their whole flow
runs, every allocation goes through ``MpsEnforcement`` and every daemon is quit at the end.

No figure of a real card is asserted here: the fakes only show that the plumbing (allocations,
the grant's environment reaching the workers, one window for all, the JSON and the table) is
right before the one short run on a real GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

FAKES = Path(__file__).resolve().with_name("fakegpu")
FAKE_MPS = REPO / "tests" / "node" / "fake_mps_control.py"


def _wrapper(path: Path, script: Path) -> None:
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _no_gpu_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    path = f"{empty}:/usr/bin:/bin"
    if shutil.which("nvidia-smi", path=path):
        pytest.skip("this machine has nvidia-smi: the no-GPU path is not what runs here")
    return {**os.environ, "PATH": path, "PYTHON": sys.executable}


@pytest.fixture
def fake_gpu(tmp_path: Path) -> dict[str, object]:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    _wrapper(bin_dir / "nvidia-smi", FAKES / "nvidia_smi.py")
    _wrapper(bin_dir / "nvidia-cuda-mps-control", FAKE_MPS)
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUDA_", "FAKE_MPS"))}
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        PYTHONPATH=f"{FAKES}:{REPO}",
        PYTHON=sys.executable,
        FAKE_MPS_RECORD=str(tmp_path / "mps-calls.jsonl"),
    )
    return {"env": env, "dev": dev, "record": tmp_path / "mps-calls.jsonl"}


def _daemons_quit(record: Path) -> None:
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    started = sum(1 for c in calls if c["argv"] == ["-d"])
    quits = sum(1 for c in calls if "quit" in c.get("commands", []))
    assert started > 0
    assert quits == started  # every allocation released, its daemon told to quit


def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "gpu-check.sh")],
        env=_no_gpu_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no NVIDIA GPU here" in done.stdout


def test_vgpu_bench_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "vgpu.py")],
        env=_no_gpu_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no NVIDIA GPU here" in done.stdout


def run_on_fake_card(
    command: list[str], fake_gpu: dict[str, object], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run a GPU script on the fake card with short windows; its output and its JSON result."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [*command, "--json", str(out), "--seconds", "0.5", "--dev-root", str(fake_gpu["dev"])],
        env=fake_gpu["env"],  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(out.read_text())


def test_gpu_check_runs_its_whole_flow_on_a_fake_card(
    fake_gpu: dict[str, object], tmp_path: Path
) -> None:
    done, result = run_on_fake_card([str(REPO / "scripts" / "gpu-check.sh")], fake_gpu, tmp_path)
    checks = result["checks"]
    assert result["gpu"] == "NVIDIA H200"
    assert set(checks) == {
        "topology",
        "memory",
        "override_memory",
        "escape_pipe_dir",
        "stray_found",
        "escape_control",
        "audit_restores",
        "memory_per_process",
        "overhead",
        "shares_30_70",
        "override_compute",
    }
    assert all(checks[name]["ok"] for name in checks if checks[name]["required"])
    # the fake models what NVIDIA documents: the limit holds against the client's environment
    assert checks["memory"]["limited"]["big_ok"] is False
    assert checks["memory"]["unlimited"]["big_ok"] is True
    assert 0.2 < checks["shares_30_70"]["part_30"] < 0.4
    # leaving MPS (another pipe directory) escapes in the fake as on a card in DEFAULT mode
    assert checks["escape_pipe_dir"]["ok"] is False
    assert checks["stray_found"]["nvml"]["value"] == {"compute": [], "mps_clients": [], "stray": []}
    # the fake control daemon takes commands from anyone with the pipe directory; audit undoes them
    assert checks["escape_control"]["ok"] is False
    assert checks["audit_restores"]["ok"] is True
    assert len(checks["audit_restores"]["findings"]) == 1
    for heading in ("topology", "shares_30_70", "overhead", "result:"):
        assert heading in done.stdout
    _daemons_quit(fake_gpu["record"])  # type: ignore[arg-type]


def test_vgpu_bench_prints_every_case_on_a_fake_card(
    fake_gpu: dict[str, object], tmp_path: Path
) -> None:
    done, figures = run_on_fake_card(
        [sys.executable, str(REPO / "bench" / "vgpu.py")], fake_gpu, tmp_path
    )
    cases = [r["case"] for r in figures["rows"]]
    assert cases == [
        "enforced 100 %",
        "time-slicing 2x",
        "enforced 2 x 50",
        "enforced 30/70",
        "enforced 4 x 25",
        "cooperative 30/70 (not enforced)",
    ]
    assert all(not r["errors"] for r in figures["rows"])
    assert figures["memory"]["caught"] == figures["memory"]["tried"] == 3
    assert [p["cores"] for p in figures["calibration"]] == [25, 30, 50, 70]
    for line in ("overhead of the enforcement", "violations caught / tried", "calibration:"):
        assert line in done.stdout
    _daemons_quit(fake_gpu["record"])  # type: ignore[arg-type]


def test_gpu_check_reports_a_daemon_that_will_not_start_and_goes_on(
    fake_gpu: dict[str, object], tmp_path: Path
) -> None:
    out = tmp_path / "check.json"
    env = {**fake_gpu["env"], "FAKE_MPS_NO_START": "1"}  # type: ignore[dict-item]
    done = subprocess.run(
        [
            str(REPO / "scripts" / "gpu-check.sh"),
            "--json",
            str(out),
            "--seconds",
            "0.2",
            "--dev-root",
            str(fake_gpu["dev"]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    checks = json.loads(out.read_text())["checks"]
    assert checks["topology"]["ok"] is True  # the groups after a failed one still ran
    assert "did not start" in checks["memory_error"]["detail"]
    assert "did not start" in checks["compute_error"]["detail"]
    assert "FAILED: memory_error, compute_error" in done.stdout
