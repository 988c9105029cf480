"""What ``bench/gpu_check.py`` and ``bench/vgpu.py`` share: find the GPU, make allocations with
Gaia's own ``Enforcement`` (``gaia.node.vgpu``), and run worker processes (``vgpu_worker.py``)
with exactly the environment Allocate returns, all at once over one measurement window.

There is no container and no kubelet here, so the harness plays the container runtime in the
one way the grant needs: a mount's container path that appears in an environment value is
replaced by its host path (``CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps`` becomes the allocation's
pipe directory); ``/dev/shm`` is the host's for daemons and workers alike (``shm_dir``). Nothing
else is added to a worker's environment but what a case asks for on purpose (an override a
container might try). A native worker gets an empty pipe directory, so that no MPS daemon of the
machine's own can catch it.

Everything is bounded in time: a case that does not finish is killed and reported, and every
allocation is released (its daemon quit) whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gaia.node.vgpu import CardShare, EnforcementError, Grant, MpsEnforcement  # noqa: E402

WORKER = Path(__file__).resolve().with_name("vgpu_worker.py")
# the whole run's end (time.monotonic()): a case never waits past it, so a hung card costs the
# budget once, not once per case
_deadline = math.inf


def set_budget(seconds: float) -> None:
    global _deadline
    _deadline = time.monotonic() + seconds


@dataclass(frozen=True, slots=True)
class Card:
    index: int
    uuid: str
    minor: int
    name: str
    memory_mib: int


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the GPU checks, or None when it can."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU here (nvidia-smi not found)"
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no NVIDIA GPU here (nvidia-smi -L failed: {exc})"
    if done.returncode != 0 or "GPU " not in done.stdout:
        return f"no NVIDIA GPU here (nvidia-smi -L: {(done.stdout + done.stderr).strip()[:200]})"
    return None


def cards() -> list[Card]:
    """The machine's cards from nvidia-smi (index, uuid, name, memory; the minor number where it
    prints one, else NVML's, else the index)."""
    done = subprocess.run(
        [
            shutil.which("nvidia-smi") or "nvidia-smi",
            "--query-gpu=index,uuid,name,memory.total",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    minors = _nvml_minors()
    out = []
    for line in done.stdout.strip().splitlines():
        index, uuid, name, memory = (part.strip() for part in line.split(","))
        i = int(index)
        out.append(Card(i, uuid, minors.get(i, i), name, int(float(memory))))
    return out


def card_facts(card: Card) -> dict[str, str]:
    """The driver version and the card's compute mode (MPS servers of several allocations share
    a card only in the Default mode), for the record."""
    fields = ("driver_version", "compute_mode")
    try:
        done = subprocess.run(
            [
                shutil.which("nvidia-smi") or "nvidia-smi",
                "-i",
                str(card.index),
                f"--query-gpu={','.join(fields)}",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    return dict(zip(fields, (v.strip() for v in done.stdout.split(",")), strict=False))


def _nvml_minors() -> dict[int, int]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        return {
            i: int(pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(int(pynvml.nvmlDeviceGetCount()))
        }
    except Exception:
        return {}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def nvml_snapshot(card: Card) -> dict[str, Any]:
    """What NVML lists on the card now: compute processes, MPS client processes, and what
    ``stray_contexts`` makes of them (raw, for the record: how NVML shows MPS is unverified)."""
    from gaia.node.vgpu import stray_contexts

    snapshot: dict[str, Any] = {}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(card.index)
            for key, call in (
                ("compute", "nvmlDeviceGetComputeRunningProcesses"),
                ("mps_clients", "nvmlDeviceGetMPSComputeRunningProcesses"),
            ):
                try:
                    snapshot[key] = [int(p.pid) for p in getattr(pynvml, call)(handle)]
                except Exception as exc:
                    snapshot[key] = f"{type(exc).__name__}: {exc}"
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:
        snapshot["nvml"] = f"{type(exc).__name__}: {exc}"
    snapshot["stray"] = [
        {"pid": c.pid, "used_mib": c.used_mib} for c in stray_contexts(shared_uuids={card.uuid})
    ]
    return snapshot


def share_of(card: Card, *, cores: int, memory_mib: int) -> CardShare:
    return CardShare(
        index=card.index, uuid=card.uuid, minor=card.minor, cores=cores, memory_mib=memory_mib
    )


def container_env(grant: Grant, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: this process's, less any MPS or visibility variable of its
    own, plus the grant's envs with mount paths resolved, plus ``extra`` (an override a
    container might try)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CUDA_MPS_") and k not in ("CUDA_VISIBLE_DEVICES",)
    }
    for key, value in grant.envs.items():
        for mount in grant.mounts:
            if value == mount.container_path or value.startswith(mount.container_path + "/"):
                value = mount.host_path + value[len(mount.container_path) :]
        env[key] = value
    env.update(extra or {})
    return env


@dataclass(slots=True)
class Lab:
    """Allocations made through ``MpsEnforcement`` under a private state root, released on exit."""

    root: Path
    dev_root: Path = Path("/dev")
    enforcement: MpsEnforcement = field(init=False)
    live: set[str] = field(default_factory=set)
    serial: int = 0

    def __post_init__(self) -> None:
        self.enforcement = MpsEnforcement(
            dev_root=self.dev_root,
            state_root=self.root / "vgpu",
            shm_dir=Path("/dev/shm"),  # noqa: S108 (no container: the host's, shared as in a pod)
            mps_control=shutil.which("nvidia-cuda-mps-control") or "nvidia-cuda-mps-control",
            command_timeout_s=20,
            ready_timeout_s=20,
        )

    def allocate(self, shares: Sequence[CardShare], *, label: str) -> Grant:
        """Allocate + PreStartContainer, as the device plugin calls them."""
        self.serial += 1
        allocation_id = f"{label}-{self.serial}"
        grant = self.enforcement.grant(allocation_id=allocation_id, shares=shares)
        self.live.add(allocation_id)
        self.enforcement.prepare(allocation_id=allocation_id, shares=shares)
        return grant

    def allocation_id(self, grant: Grant) -> str:
        for mount in grant.mounts:
            path = Path(mount.host_path)
            if path.name == "pipe":
                return path.parent.name
        raise ValueError("a grant without an MPS pipe directory")

    def release_all(self) -> None:
        for allocation_id in sorted(self.live):
            try:
                self.enforcement.release(allocation_id=allocation_id)
            except EnforcementError as exc:
                print(f"warning: releasing {allocation_id}: {exc}", file=sys.stderr)
        self.live.clear()

    def native_env(self, card: Card) -> dict[str, str]:
        empty = self.root / "no-mps"
        empty.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUDA_MPS_")}
        env["CUDA_MPS_PIPE_DIRECTORY"] = str(empty)
        env["CUDA_VISIBLE_DEVICES"] = card.uuid
        return env


@contextlib.contextmanager
def lab(*, dev_root: Path = Path("/dev")) -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="gaia-vgpu-"))
    it = Lab(root=root, dev_root=dev_root)
    try:
        yield it
    finally:
        it.release_all()
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Worker:
    name: str
    env: Mapping[str, str]
    mode: str = "matmul"  # or "alloc"
    gib: float = 3.0


def run_case(
    workers: Sequence[Worker],
    *,
    root: Path,
    seconds: float,
    timeout_s: float = 90,
    during: Callable[[], Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Start every worker, wait until all are warm (an ``alloc`` worker: has tried and holds its
    memory), call ``during`` (its value under ``"_during"``), open one window of ``seconds`` for
    all, and return each worker's result with its pid (``{"error": ...}`` for one that failed
    or hung)."""
    left = _deadline - time.monotonic()
    if left < seconds + 5:
        return {w.name: {"error": "skipped: the run's time budget is spent"} for w in workers}
    timeout_s = min(timeout_s, left - seconds)
    case = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    procs = {}
    for w in workers:
        procs[w.name] = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                "--mode",
                w.mode,
                "--dir",
                str(case),
                "--name",
                w.name,
                "--gib",
                str(w.gib),
            ],
            env=dict(w.env),
            stdout=subprocess.DEVNULL,
            stderr=open(case / f"{w.name}.err", "w"),  # noqa: SIM115 (closed with the process)
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(
        (case / f"{w.name}.ready").exists() or procs[w.name].poll() is not None for w in workers
    ):
        time.sleep(0.02)
    results: dict[str, dict[str, Any]] = {}
    if during is not None:
        try:
            results["_during"] = {"value": during()}
        except Exception as exc:
            results["_during"] = {"error": f"{type(exc).__name__}: {exc}"}
    (case / "go.tmp").write_text(repr(time.time() + seconds))
    (case / "go.tmp").replace(case / "go")
    for w in workers:
        proc = procs[w.name]
        try:
            proc.wait(timeout=max(1.0, deadline + seconds - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            results[w.name] = {"error": f"timed out after {timeout_s:.0f} s"}
            continue
        out = case / f"{w.name}.json"
        if out.exists():
            results[w.name] = {**json.loads(out.read_text()), "pid": proc.pid}
        else:
            err = (case / f"{w.name}.err").read_text()[-1500:]
            results[w.name] = {"error": f"exited {proc.returncode}: {err}"}
    return results


def tflops(result: Mapping[str, Any]) -> float:
    value = result.get("tflops")
    return float(value) if isinstance(value, int | float) else float("nan")


def control(lab_: Lab, grant: Grant, commands: Sequence[str]) -> str:
    """Run ``nvidia-cuda-mps-control`` with the container's environment (as a container that
    has the binary would), the commands on its stdin; its reply and exit code."""
    try:
        done = subprocess.run(
            [lab_.enforcement.mps_control],
            input="".join(c + "\n" for c in commands),
            env=container_env(grant),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not run: {exc}"
    return f"exit {done.returncode}: {(done.stdout + done.stderr).strip()}"
