"""``gaia node-agent`` as a process: its refusals, and on a node without GPUs (this machine) it
says so, keeps looking, and stops cleanly on SIGTERM (what a DaemonSet's rollout sends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.kube import ControlPlane


def gaia(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gaia", "node-agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_agent_refuses_what_it_cannot_run_with(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    done = subprocess.run(
        [sys.executable, "-m", "gaia", "node-agent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=bare,
    )
    assert done.returncode == 2 and "--node-name" in done.stderr
    done = gaia("--node-name", "n1", "--kubeconfig", str(tmp_path / "none"))
    assert done.returncode == 2 and "no kubeconfig at" in done.stderr
    done = gaia("--node-name", "n1", "--interval", "0.01")
    assert done.returncode == 2 and "--interval must be" in done.stderr


def test_without_gpus_the_agent_waits_and_stops_on_sigterm(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    with log.open("w") as out:
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gaia",
                "node-agent",
                "--node-name",
                "no-gpu-node",
                "--kubeconfig",
                str(control_plane.kubeconfig_path),
                "--state-dir",
                str(tmp_path / "state"),
                "--device-plugin-dir",
                str(tmp_path / "plugins"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            # no nvidia-smi and no NVML bindings on PATH: this machine has no GPU anyway
            env={**os.environ, "PATH": "/usr/bin:/bin"},
        )
    try:
        deadline = time.monotonic() + 30
        while "no NVIDIA GPU found" not in log.read_text():
            assert agent.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=10) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
    # nothing was served or registered: there is nothing to offer
    assert not (tmp_path / "plugins").exists()
