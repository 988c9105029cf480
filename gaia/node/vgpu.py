"""GPU shares on a node: what a container gets (cards, environment, mounts) and how its limits are
made real, for the device plugin's Allocate and PreStartContainer (``gaia/node/deviceplugin``).

The scheduler grants a container a share of a card: ``gaia.io/gpu-core`` in hundredths of the
card and ``gaia.io/gpu-memory`` in MiB. What flows in here is that grant per card
(``CardShare``); what flows out is a ``Grant`` (environment, mounts, device nodes: exactly what
Allocate answers the kubelet) and, before the container starts, the enforcement itself::

    Allocate           ->  Enforcement.grant(...)    pure: envs, mounts, device nodes
    PreStartContainer  ->  Enforcement.prepare(...)  start this allocation's MPS control daemon,
                                                     set its default limits, before any client
    container gone     ->  Enforcement.release(...)  quit the daemon, remove its directory

**Mechanism: NVIDIA MPS, one control daemon per allocation** (``docs/gpu-enforcement.md`` has the
facts and sources). Each allocation gets its own ``CUDA_MPS_PIPE_DIRECTORY`` under
``state_root/<allocation_id>/pipe``; the agent starts ``nvidia-cuda-mps-control -d`` there with
``CUDA_VISIBLE_DEVICES`` = the allocation's cards and sends ``set_default_active_thread_percentage``
and ``set_default_device_pinned_mem_limit`` before the container exists. The MPS server that the
container's first CUDA call spawns inherits those defaults, so the limits live in a host process,
not in the container's environment: a client's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` or
``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` can only lower them (NVIDIA's documented rule), and the
container is given neither. The pipe directory is mounted at MPS's default path
(``/tmp/nvidia-mps``), so unsetting ``CUDA_MPS_PIPE_DIRECTORY`` still reaches the daemon.
Whole cards (100 cores, no memory limit, on every card) need no MPS at all: visibility only.

Why per allocation and not one daemon per card (NVIDIA's device plugin): a server's limits are
the same for all its clients, and a share's limits must differ per container (30 and 70 on one
card). The price: two allocations on one card are two MPS servers, which the GPU time-slices
between them (each capped at its own thread percentage while it runs); what is measured on a real
card (``scripts/gpu-check.sh``, ``bench/vgpu.py``) says what that costs.

What MPS on driver 580 does not stop, and the answer here: the container holds its daemon's
control socket (it must, to reach the server), so with ``nvidia-cuda-mps-control`` it can send
``set_*`` commands to its own daemon; ``MpsEnforcement.audit`` finds and undoes such a change
(the node agent runs it periodically). A process that points ``CUDA_MPS_PIPE_DIRECTORY`` at an
empty directory runs without MPS on the card (compute mode DEFAULT, which several servers per
card need); ``stray_contexts`` finds such processes through NVML, for the agent to report or
end them.

The daemon is driven by ``nvidia-cuda-mps-control`` with commands on its stdin, one process per
command (no shell), the binary's path injectable: the tests run a fake control program.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

WHOLE_CARD_CORES = 100
# MPS's default pipe directory: a client that loses CUDA_MPS_PIPE_DIRECTORY looks here, so the
# allocation's pipe directory is mounted here too
CONTAINER_PIPE_DIR = "/tmp/nvidia-mps"  # noqa: S108 (a path inside the container)
CONTAINER_SHM_DIR = "/dev/shm"  # noqa: S108 (a path inside the container)
# the driver's shared nodes; the per-card node is /dev/nvidia<minor>
SHARED_DEVICE_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
_ALLOCATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# a Unix socket path holds at most 107 bytes; MPS puts its sockets in the pipe directory under
# names of up to about 24 characters (room kept for them)
_SOCKET_PATH_MAX = 107 - 24
_UUID = re.compile(r"(GPU|MIG)-[0-9A-Za-z-]+")
# words the control program prints when it refuses a command (its exit code is not always set)
_REFUSAL = re.compile(r"error|invalid|unknown|cannot|failed|not supported|usage", re.IGNORECASE)


class EnforcementError(Exception):
    """The share cannot be granted or its limits cannot be made real; the message says why and
    what to do (the device plugin fails the container's start with it)."""


@dataclass(frozen=True, slots=True)
class CardShare:
    """One card of a container's grant."""

    index: int  # the card's NVML index
    uuid: str  # "GPU-..."
    minor: int  # its /dev/nvidia<minor>
    cores: int  # hundredths of this card granted, 1..100
    memory_mib: int  # MiB of this card granted; 0 = no memory limit asked (the whole card)

    @property
    def whole(self) -> bool:
        return self.cores == WHOLE_CARD_CORES and self.memory_mib == 0


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True, slots=True)
class DeviceNode:
    container_path: str
    host_path: str
    permissions: str = "rw"


@dataclass(frozen=True, slots=True)
class Grant:
    """What Allocate answers for one container."""

    envs: Mapping[str, str]
    mounts: tuple[Mount, ...]
    devices: tuple[DeviceNode, ...]


@dataclass(frozen=True, slots=True)
class MpsLimits:
    """The limits one allocation's MPS daemon sets as its defaults: one active-thread percentage
    per server (MPS has no per-device one), a pinned-memory limit per device ordinal as the
    daemon sees it (its ``CUDA_VISIBLE_DEVICES`` lists the allocation's cards in grant order)."""

    thread_percentage: int  # 100: no compute limit
    memory_mib: tuple[tuple[int, int], ...]  # (device ordinal, MiB); cards without a limit absent
    visible_devices: tuple[str, ...]  # uuids, the daemon's CUDA_VISIBLE_DEVICES

    def commands(self) -> tuple[str, ...]:
        """The control commands, in order, that make these the defaults of the next server."""
        out = []
        if self.thread_percentage < WHOLE_CARD_CORES:
            out.append(f"set_default_active_thread_percentage {self.thread_percentage}")
        out.extend(
            f"set_default_device_pinned_mem_limit {dev} {mib}M" for dev, mib in self.memory_mib
        )
        return tuple(out)

    def as_json(self) -> dict[str, object]:
        return {
            "thread_percentage": self.thread_percentage,
            "memory_mib": [list(pair) for pair in self.memory_mib],
            "visible_devices": list(self.visible_devices),
        }


@dataclass(frozen=True, slots=True)
class ThreadCalibration:
    """How asked cores map to MPS active-thread percentages on one GPU model.

    A capped MPS server's throughput is not linear in its percentage (H200, driver 580: 30 %
    alone gave 274 of 668 TFLOP/s, 41 %). Gaia's contract is relative: co-located shares get
    compute in the ratio of their cores under contention, which the cap gives directly. A table
    measured by ``bench/vgpu.py`` (pairs of asked cores and the percentage that yields that
    fraction of a full card when alone) makes the absolute share match too; between its points
    the percentage is interpolated linearly. The identity (no points) is the default.
    """

    points: tuple[tuple[int, int], ...] = ()  # (asked cores, thread percentage), ascending

    def percentage(self, cores: int) -> int:
        if not self.points or cores >= WHOLE_CARD_CORES:
            return cores
        table = [(0, 0), *sorted(self.points), (WHOLE_CARD_CORES, WHOLE_CARD_CORES)]
        for (x0, y0), (x1, y1) in itertools.pairwise(table):
            if x0 <= cores <= x1:
                if x1 == x0:
                    return max(1, y1)
                return max(1, min(100, math.ceil(y0 + (y1 - y0) * (cores - x0) / (x1 - x0))))
        return cores

    @classmethod
    def load(cls, path: Path, *, gpu_name: str) -> ThreadCalibration:
        """The table for ``gpu_name`` from a JSON file ``{"<gpu name>": [[cores, pct], ...]}``;
        the identity when the file or the model is absent (logged)."""
        try:
            tables = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("GPU calibration %s unreadable (%s): asked cores used as is", path, exc)
            return cls()
        raw = tables.get(gpu_name) if isinstance(tables, dict) else None
        if not raw:
            return cls()
        return cls(points=tuple((int(a), int(b)) for a, b in raw))


class Enforcement(Protocol):
    """The seam the device plugin calls; ``MpsEnforcement`` and ``VisibilityOnly`` implement it."""

    def grant(self, *, allocation_id: str, shares: Sequence[CardShare]) -> Grant:
        """What Allocate returns for the container (pure: no side effects)."""
        ...

    def prepare(self, *, allocation_id: str, shares: Sequence[CardShare]) -> None:
        """PreStartContainer: make the limits real before the container starts (idempotent);
        raises ``EnforcementError``."""
        ...

    def release(self, *, allocation_id: str) -> None:
        """The container is gone (idempotent)."""
        ...


def validate_allocation_id(allocation_id: str) -> str:
    """The id names a directory under the state root: letters, digits, ``.``, ``_`` and ``-``,
    starting with a letter or digit (so never ``..``), at most 64 characters."""
    if not isinstance(allocation_id, str) or _ALLOCATION_ID.fullmatch(allocation_id) is None:
        raise EnforcementError(
            f"allocation id {allocation_id!r} is not safe as a directory name: use 1-64 "
            "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return allocation_id


def validate_shares(shares: Sequence[CardShare]) -> tuple[CardShare, ...]:
    """Every card once, cores 1..100, memory not negative; under MPS one thread percentage per
    server, so the cards of one container with a compute limit must all have the same cores."""
    if not shares:
        raise EnforcementError("a GPU grant needs at least one card")
    seen_index: set[int] = set()
    seen_uuid: set[str] = set()
    for share in shares:
        if _UUID.fullmatch(share.uuid) is None:
            raise EnforcementError(
                f"card {share.index}: {share.uuid!r} is not an NVML uuid (GPU-...)"
            )
        if share.index < 0 or share.minor < 0:
            raise EnforcementError(f"card {share.uuid}: index and minor must not be negative")
        if share.index in seen_index or share.uuid in seen_uuid:
            raise EnforcementError(f"card {share.index} ({share.uuid}) appears twice in one grant")
        seen_index.add(share.index)
        seen_uuid.add(share.uuid)
        if not 1 <= share.cores <= WHOLE_CARD_CORES:
            raise EnforcementError(
                f"card {share.index}: {share.cores} cores; a card grants 1..100 hundredths"
            )
        if share.memory_mib < 0:
            raise EnforcementError(f"card {share.index}: memory {share.memory_mib} MiB < 0")
    cores = {s.cores for s in shares}
    if len(cores) > 1 and min(cores) < WHOLE_CARD_CORES:
        raise EnforcementError(
            "MPS sets one active-thread percentage per server: the cards of one container must "
            f"all be whole or all have the same share, not {sorted(cores)} hundredths"
        )
    return tuple(shares)


def mps_limits(shares: Sequence[CardShare], *, calibration: ThreadCalibration) -> MpsLimits:
    """The daemon defaults for a grant (pure)."""
    ordered = validate_shares(shares)
    cores = min(s.cores for s in ordered)
    return MpsLimits(
        thread_percentage=calibration.percentage(cores),
        memory_mib=tuple(
            (ordinal, s.memory_mib) for ordinal, s in enumerate(ordered) if s.memory_mib
        ),
        visible_devices=tuple(s.uuid for s in ordered),
    )


def device_nodes(shares: Sequence[CardShare], *, dev_root: Path) -> tuple[DeviceNode, ...]:
    """/dev/nvidia<minor> of each card (it must exist: a missing one is a card that is gone),
    then the driver's shared nodes that exist on this node."""
    nodes = []
    for share in shares:
        host = dev_root / f"nvidia{share.minor}"
        if not host.exists():
            raise EnforcementError(
                f"card {share.index} ({share.uuid}): {host} does not exist; is the driver loaded "
                "and the card's minor number right?"
            )
        nodes.append(DeviceNode(container_path=f"/dev/nvidia{share.minor}", host_path=str(host)))
    for name in SHARED_DEVICE_NODES:
        host = dev_root / name
        if host.exists():
            nodes.append(DeviceNode(container_path=f"/dev/{name}", host_path=str(host)))
    return tuple(nodes)


def visibility_envs(shares: Sequence[CardShare]) -> dict[str, str]:
    return {"NVIDIA_VISIBLE_DEVICES": ",".join(s.uuid for s in shares)}


@dataclass(frozen=True, slots=True)
class VisibilityOnly:
    """Mode ``none``: exclusive whole cards, nothing to enforce beyond which cards are seen. A
    share of a card is refused, so that no limit is ever silently unenforced."""

    dev_root: Path = Path("/dev")

    def grant(self, *, allocation_id: str, shares: Sequence[CardShare]) -> Grant:
        validate_allocation_id(allocation_id)
        ordered = validate_shares(shares)
        partial = [s.index for s in ordered if not s.whole]
        if partial:
            raise EnforcementError(
                f"cards {partial} are shares of a card, and this node enforces no shares (GPU "
                "sharing mode 'none'); run the node agent with mode 'mps'"
            )
        return Grant(
            envs=visibility_envs(ordered),
            mounts=(),
            devices=device_nodes(ordered, dev_root=self.dev_root),
        )

    def prepare(self, *, allocation_id: str, shares: Sequence[CardShare]) -> None:
        self.grant(allocation_id=allocation_id, shares=shares)

    def release(self, *, allocation_id: str) -> None:
        validate_allocation_id(allocation_id)


@dataclass(frozen=True, slots=True)
class MpsEnforcement:
    """Mode ``mps``: one MPS control daemon per allocation that shares a card (see the module
    docstring). State lives in ``state_root/<allocation_id>/``: ``pipe/`` (the daemon's pipe
    directory, mounted into the container), ``log/`` (its logs, not mounted) and
    ``limits.json`` (the limits set, written last: its presence means prepare completed)."""

    dev_root: Path = Path("/dev")
    state_root: Path = Path("/run/gaia/vgpu")
    mps_control: str = "nvidia-cuda-mps-control"
    # the host directory shared by the daemons and the containers as /dev/shm (MPS servers and
    # clients meet in POSIX shared memory); the agent must see it as its own /dev/shm
    shm_dir: Path | None = None
    calibration: ThreadCalibration = field(default_factory=ThreadCalibration)
    command_timeout_s: float = 10.0
    ready_timeout_s: float = 10.0

    def allocation_dir(self, allocation_id: str) -> Path:
        return self.state_root / validate_allocation_id(allocation_id)

    def pipe_dir(self, allocation_id: str) -> Path:
        return self.allocation_dir(allocation_id) / "pipe"

    def log_dir(self, allocation_id: str) -> Path:
        return self.allocation_dir(allocation_id) / "log"

    def grant(self, *, allocation_id: str, shares: Sequence[CardShare]) -> Grant:
        validate_allocation_id(allocation_id)
        ordered = validate_shares(shares)
        devices = device_nodes(ordered, dev_root=self.dev_root)
        envs = visibility_envs(ordered)
        if all(s.whole for s in ordered):
            return Grant(envs=envs, mounts=(), devices=devices)
        pipe = str(self.pipe_dir(allocation_id))
        if len(pipe.encode()) > _SOCKET_PATH_MAX:
            raise EnforcementError(
                f"the MPS pipe directory {pipe} is too long for the sockets MPS makes in it "
                f"(at most {_SOCKET_PATH_MAX} bytes): use a shorter state root or allocation id"
            )
        # No limit travels in the environment: the daemon holds them. CUDA_VISIBLE_DEVICES stays
        # unset, as NVIDIA asks of MPS clients when the daemon has it (the server remaps).
        envs["CUDA_MPS_PIPE_DIRECTORY"] = CONTAINER_PIPE_DIR
        shm = self.shm_dir if self.shm_dir is not None else self.state_root / "shm"
        mounts = (
            Mount(
                container_path=CONTAINER_PIPE_DIR,
                host_path=str(self.pipe_dir(allocation_id)),
                read_only=False,  # clients connect to the daemon's sockets in it
            ),
            Mount(container_path=CONTAINER_SHM_DIR, host_path=str(shm), read_only=False),
        )
        return Grant(envs=envs, mounts=mounts, devices=devices)

    def limits(self, shares: Sequence[CardShare]) -> MpsLimits:
        return mps_limits(shares, calibration=self.calibration)

    def prepare(self, *, allocation_id: str, shares: Sequence[CardShare]) -> None:
        self.grant(allocation_id=allocation_id, shares=shares)  # validates, checks the nodes
        if all(s.whole for s in shares):
            return
        wanted = self.limits(shares)
        record = self.allocation_dir(allocation_id) / "limits.json"
        if record.exists():
            recorded = _read_json(record)
            if recorded != wanted.as_json():
                raise EnforcementError(
                    f"allocation {allocation_id} is already running with limits {recorded}, not "
                    f"{wanted.as_json()}: a running MPS server's limits cannot be changed; "
                    "release the allocation first"
                )
            if self._daemon_answers(allocation_id):
                return  # prepared before, daemon alive: nothing to do
            log.warning("allocation %s: its MPS daemon is gone; starting it again", allocation_id)
            self._stop(allocation_id)
        self._start(allocation_id, wanted)
        # written last, so that a prepare that failed half-way is redone from the start
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(wanted.as_json()))
        tmp.replace(record)

    def release(self, *, allocation_id: str) -> None:
        if not self.allocation_dir(allocation_id).exists():
            return
        self._stop(allocation_id)

    # ------------------------------------------------------------------ the daemon

    def _environment(self, allocation_id: str, limits: MpsLimits | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUDA_MPS_")}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.pipe_dir(allocation_id))
        env["CUDA_MPS_LOG_DIRECTORY"] = str(self.log_dir(allocation_id))
        if limits is not None:
            # the daemon and its servers touch only this allocation's cards
            env["CUDA_VISIBLE_DEVICES"] = ",".join(limits.visible_devices)
        return env

    def _start(self, allocation_id: str, limits: MpsLimits) -> None:
        pipe, logs = self.pipe_dir(allocation_id), self.log_dir(allocation_id)
        for path in (pipe, logs):
            path.mkdir(parents=True, exist_ok=True)
            # The MPS server runs as the container's user (the daemon spawns it with the UID of
            # the first client) and writes its pipes and log here; like /tmp: anyone may create,
            # no one may remove another's (the daemon's sockets stay root's)
            path.chmod(0o1777)
        if self.shm_dir is None:
            (self.state_root / "shm").mkdir(parents=True, exist_ok=True)
        # -d forks the daemon and returns; the daemon may keep the descriptors it was given, so
        # its output goes to a file, never to a pipe this process would wait on for ever
        started = logs / "start.out"
        try:
            with started.open("w") as out:
                done = subprocess.run(  # noqa: S603 (argv of the configured binary, no shell)
                    [self.mps_control, "-d"],
                    env=self._environment(allocation_id, limits),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=self.command_timeout_s,
                    check=False,
                )
        except FileNotFoundError as exc:
            raise EnforcementError(
                f"{self.mps_control} not found: install the NVIDIA driver's MPS tools on this node "
                "or run the node agent with GPU sharing mode 'none'"
            ) from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise EnforcementError(f"{self.mps_control} -d could not run: {exc}") from exc
        if done.returncode != 0:
            raise EnforcementError(
                f"the MPS control daemon for allocation {allocation_id} did not start "
                f"({self.mps_control} -d exited {done.returncode}: "
                f"{started.read_text().strip()[:500]}); see {logs}/control.log"
            )
        self._wait_ready(allocation_id)
        for command in limits.commands():
            self.control(allocation_id, command)
        self._check_thread_percentage(allocation_id, limits.thread_percentage)

    def _wait_ready(self, allocation_id: str) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            try:
                self.control(allocation_id, "get_default_active_thread_percentage")
                return
            except EnforcementError as exc:
                if time.monotonic() >= deadline:
                    raise EnforcementError(
                        f"the MPS control daemon for allocation {allocation_id} does not answer "
                        f"after {self.ready_timeout_s:.0f} s: {exc}"
                    ) from exc
            time.sleep(0.1)

    def _check_thread_percentage(self, allocation_id: str, wanted: int) -> None:
        reply = self.control(allocation_id, "get_default_active_thread_percentage")
        try:
            value = float(reply.split()[0])
        except (ValueError, IndexError):
            log.warning(
                "allocation %s: thread percentage reply %r not a number", allocation_id, reply
            )
            return
        if abs(value - wanted) > 0.5:
            raise EnforcementError(
                f"allocation {allocation_id}: the MPS daemon reports an active-thread percentage "
                f"of {value}, {wanted} was set"
            )

    def audit(self, allocation_id: str) -> tuple[str, ...]:
        """Compare the daemon's limits with those prepare set, set again any that drifted, and
        say what drifted (for an event). The pipe directory the container needs holds the
        daemon's control socket, so a container with ``nvidia-cuda-mps-control`` can send it
        commands; this is how such a change is undone (what a client started in between got is
        not). The node agent runs it periodically; nothing when the allocation is not prepared.
        """
        recorded = _read_json(self.allocation_dir(allocation_id) / "limits.json")
        if not isinstance(recorded, dict):
            return ()
        wanted = MpsLimits(
            thread_percentage=int(recorded["thread_percentage"]),
            memory_mib=tuple((int(d), int(m)) for d, m in recorded["memory_mib"]),
            visible_devices=tuple(recorded["visible_devices"]),
        )
        drift: list[str] = []
        servers = [w for w in self.control(allocation_id, "get_server_list").split() if w.isdigit()]
        thread_targets = [("", "get_default_active_thread_percentage")] + [
            (pid, f"get_active_thread_percentage {pid}") for pid in servers
        ]
        for pid, query in thread_targets:
            value = _number(self.control(allocation_id, query))
            if value is not None and abs(value - wanted.thread_percentage) > 0.5:
                drift.append(f"{query}: {value:g}, set {wanted.thread_percentage}")
                verb = (
                    f"set_active_thread_percentage {pid}"
                    if pid
                    else "set_default_active_thread_percentage"
                )
                self.control(allocation_id, f"{verb} {wanted.thread_percentage}")
        for device, mib in wanted.memory_mib:
            targets = [("", f"get_default_device_pinned_mem_limit {device}")] + [
                (pid, f"get_device_pinned_mem_limit {pid} {device}") for pid in servers
            ]
            for pid, query in targets:
                value = _mebibytes(self.control(allocation_id, query))
                if value is not None and abs(value - mib) > 1:
                    drift.append(f"{query}: {value:g} MiB, set {mib}")
                    verb = (
                        f"set_device_pinned_mem_limit {pid}"
                        if pid
                        else "set_default_device_pinned_mem_limit"
                    )
                    self.control(allocation_id, f"{verb} {device} {mib}M")
        for finding in drift:
            log.warning("allocation %s: MPS limit changed behind Gaia: %s", allocation_id, finding)
        return tuple(drift)

    def _daemon_answers(self, allocation_id: str) -> bool:
        try:
            self.control(allocation_id, "get_default_active_thread_percentage")
        except EnforcementError:
            return False
        return True

    def control(self, allocation_id: str, command: str) -> str:
        """Send one command to the allocation's daemon; its reply, or ``EnforcementError``."""
        try:
            done = subprocess.run(  # noqa: S603 (argv of the configured binary, no shell)
                [self.mps_control],
                input=command + "\n",
                env=self._environment(allocation_id),
                capture_output=True,
                text=True,
                timeout=self.command_timeout_s,
                check=False,
            )
        except FileNotFoundError as exc:
            raise EnforcementError(f"{self.mps_control} not found on this node") from exc
        except (OSError, subprocess.SubprocessError) as exc:
            raise EnforcementError(f"MPS command {command!r} could not run: {exc}") from exc
        reply = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or _REFUSAL.search(reply):
            raise EnforcementError(
                f"allocation {allocation_id}: the MPS control daemon refused {command!r} "
                f"(exit {done.returncode}): {reply or 'no reply'}"
            )
        return reply

    def _stop(self, allocation_id: str) -> None:
        pid = _daemon_pid(self.pipe_dir(allocation_id))
        try:
            self.control(allocation_id, "quit")
        except EnforcementError as exc:
            log.info("allocation %s: quit not answered (%s)", allocation_id, exc)
        if pid is not None and not _wait_gone(pid, timeout_s=self.command_timeout_s):
            log.warning("allocation %s: MPS daemon %s ignored quit; killing it", allocation_id, pid)
            _kill(pid)
        shutil.rmtree(self.allocation_dir(allocation_id), ignore_errors=True)


@dataclass(frozen=True, slots=True)
class StrayContext:
    """A process with a plain CUDA context on a card shared through MPS: it left MPS (another
    ``CUDA_MPS_PIPE_DIRECTORY``) and runs without any limit."""

    uuid: str
    pid: int  # as NVML reports it: the host's pid namespace when the agent runs there
    used_mib: int | None


# an MPS server's command name as /proc/<pid>/comm shows it (15 characters)
_MPS_SERVER_COMM = "nvidia-cuda-mps"


def stray_contexts(
    *, shared_uuids: Collection[str], nvml: Any = None, proc_root: Path = Path("/proc")
) -> tuple[StrayContext, ...]:
    """The processes on the shared cards that hold a compute context which is neither an MPS
    server nor an MPS client (NVML lists the clients apart, in
    ``nvmlDeviceGetMPSComputeRunningProcesses``); the node agent reports them (an event) or ends
    them. Empty without NVML. ``nvml`` is the module to use (a test passes a fake one)."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found, no-redef]
        except ImportError:
            log.info("no NVML bindings: stray GPU contexts cannot be looked for")
            return ()
    wanted = set(shared_uuids)
    found: list[StrayContext] = []
    try:
        nvml.nvmlInit()
    except Exception as exc:
        log.info("NVML is not available here: %s", exc)
        return ()
    try:
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            if uuid not in wanted:
                continue
            clients = {p.pid for p in _nvml_processes(nvml, handle, mps=True)}
            for process in _nvml_processes(nvml, handle, mps=False):
                if process.pid in clients or _comm(proc_root, process.pid) == _MPS_SERVER_COMM:
                    continue
                used = getattr(process, "usedGpuMemory", None)
                found.append(
                    StrayContext(
                        uuid=uuid,
                        pid=int(process.pid),
                        used_mib=int(used) >> 20 if isinstance(used, int) else None,
                    )
                )
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
    return tuple(found)


def _nvml_processes(nvml: Any, handle: Any, *, mps: bool) -> list[Any]:
    call = (
        "nvmlDeviceGetMPSComputeRunningProcesses" if mps else "nvmlDeviceGetComputeRunningProcesses"
    )
    try:
        return list(getattr(nvml, call)(handle))
    except Exception as exc:  # NotSupported on old drivers, or bindings without the call
        log.info("NVML %s: %s", call, exc)
        return []


def _comm(proc_root: Path, pid: int) -> str:
    try:
        return (proc_root / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def enforcement_from(
    mode: str,
    *,
    dev_root: Path = Path("/dev"),
    state_root: Path = Path("/run/gaia/vgpu"),
    mps_control: str = "nvidia-cuda-mps-control",
    shm_dir: Path | None = None,
    calibration: ThreadCalibration | None = None,
) -> Enforcement:
    """The enforcement of a GPU sharing mode: ``mps`` (the default on GPU nodes) or ``none``
    (exclusive whole cards, visibility only)."""
    if mode == "mps":
        return MpsEnforcement(
            dev_root=dev_root,
            state_root=state_root,
            mps_control=mps_control,
            shm_dir=shm_dir,
            calibration=calibration or ThreadCalibration(),
        )
    if mode == "none":
        return VisibilityOnly(dev_root=dev_root)
    raise EnforcementError(f"unknown GPU sharing mode {mode!r}: use 'mps' or 'none'")


def _number(reply: str) -> float | None:
    try:
        return float(reply.split()[0])
    except (ValueError, IndexError):
        return None


def _mebibytes(reply: str) -> float | None:
    """A memory limit as the control program prints it (``2G``, ``2048M``, ``2147483648``), in
    MiB; None when it is not one of those (the reply is then not judged)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", reply.split("\n")[0], re.IGNORECASE)
    if match is None:
        return None
    scale = {"": 1 / (1 << 20), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1 << 20}
    return float(match.group(1)) * scale[match.group(2).upper()]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _daemon_pid(pipe: Path) -> int | None:
    """The control daemon writes its pid to ``nvidia-cuda-mps-control.pid`` in its pipe dir."""
    try:
        return int((pipe / "nvidia-cuda-mps-control.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie has exited; where PID 1 does not reap (a container's), it would look alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _wait_gone(pid: int, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(pid: int) -> None:
    """Kill the daemon that ignored quit, only if that pid is still an MPS control program (a
    pid read from a file may have been reused since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return
    if b"mps-control" not in cmdline and b"mps_control" not in cmdline:
        log.warning("pid %s is no longer an MPS control daemon (%r); not killed", pid, cmdline)
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
