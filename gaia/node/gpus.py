"""This node's GPUs, as the node agent publishes them: the cards, their health, what runs on them.

What flows in is the machine: NVML through ``nvidia-ml-py`` (imported as ``pynvml``; a test
passes a FAKE one), else ``nvidia-smi -q`` when NVML cannot be loaded, plus sysfs for what NVML
does not answer. What flows out is a ``GpuSnapshot`` per call of ``GpuReader.snapshot()``:

- **cards** (read once, at ``open_gpus``): index, UUID, model (NVML's product name), memory in
  MiB, the minor number (``/dev/nvidia<minor>``, which is *not* always the index: the 4-card A100
  of ``tests/fixtures/gpus/hgx_a100_4.txt`` has minors 3..6), PCI bus id, and the NUMA node and
  CPU cores nearest the card. Those come from the topology (``read_nvml_topology``, else
  ``nvidia-smi topo -m``), else from sysfs (``/sys/bus/pci/devices/<bus>/numa_node`` and
  ``local_cpulist``): an H200 on driver 580 answers NotSupported for NVML's NUMA node while the
  kernel knows it.
- **health** per card: ``healthy`` and the reasons it is not. The rules:

  1. an XID critical error (NVML event ``nvmlEventTypeXidCriticalError``) makes the card
     unhealthy **until the agent restarts**, except the XIDs an application causes, which NVIDIA's
     device plugin ignores too (``IGNORED_XIDS``: 13, 31, 43, 45, 68, 109; its
     ``internal/rm/health.go``). NVML events are edge-triggered: a missed one is never repeated,
     so the reader remembers what it saw; a restarted agent starts clean, as the device plugin
     does, and the card is judged again by the level-triggered rules below;
  2. uncorrected ECC errors since the driver loaded (``NVML_VOLATILE_ECC``; the lifetime
     aggregate counts errors of pages already retired, which do not make a card unfit now);
  3. a temperature at or above the card's slowdown temperature
     (``nvmlDeviceGetTemperatureThreshold(SLOWDOWN)``), or ``temperature_limit_c`` where the
     card gives none (H100s report their limits relative to T.Limit in ``nvidia-smi -q``);
  4. a card NVML has lost (``NVMLError_GpuIsLost``, after XID 79) is unhealthy while it is lost.

- **processes**: each compute process and the GPU memory it holds, per card.

**Events are drained inside ``snapshot()``** (``nvmlEventSetWait`` with a zero timeout until it
times out), so there is no thread to own: a critical XID reaches the Node at the agent's next pass
(its interval is the latency). The publisher calls it through ``asyncio.to_thread``; a lock makes
concurrent callers (the device plugin asking for health too) take turns. One failing NVML call
never fails a snapshot: the fact is left out (None, empty) and logged once per card and call, so
NotSupported on an H200 or a card that fell off the bus costs that fact only.

The ``nvidia-smi -q`` fallback has no events (so no XID rule) and costs a process per snapshot;
it exists for nodes whose container cannot load ``libnvidia-ml`` but can run ``nvidia-smi``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gaia.kube.labels import parse_cpuset
from gaia.node.topology import bus_id, read_local_topology, read_nvml_topology
from gaia.scheduler.links import GpuTopology

log = logging.getLogger(__name__)

# Application-caused XIDs: the GPU is still fit (NVIDIA k8s-device-plugin, internal/rm/health.go)
IGNORED_XIDS = frozenset({13, 31, 43, 45, 68, 109})
DEFAULT_TEMPERATURE_LIMIT_C = 85  # an A100's "GPU Max Operating Temp"; used without a slowdown one

# What an operator reads next to the number (NVIDIA's XID catalogue).
XID_MEANINGS = {
    48: "double-bit ECC error",
    63: "ECC page retirement or row remapping",
    64: "ECC page retirement or row remapping failure",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "high single-bit ECC error rate",
    94: "contained ECC error",
    95: "uncontained ECC error",
    119: "GSP RPC timeout",
    120: "GSP error",
}

# nvml.h constants, so that a binding without them (or a fake) reads the same
_NVML_TEMPERATURE_GPU = 0
_NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
_NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
_NVML_VOLATILE_ECC = 0
_EVENT_DOUBLE_BIT_ECC = 0x2
_EVENT_XID_CRITICAL = 0x8
_NVML_ERROR_NOT_SUPPORTED = 3
_NVML_ERROR_TIMEOUT = 10
_NVML_ERROR_GPU_IS_LOST = 15
_MIB = 1024 * 1024
_MAX_EVENTS_PER_SNAPSHOT = 1024  # a storm of events must not hold the agent's pass forever


@dataclass(frozen=True, slots=True)
class GpuCard:
    """One card's fixed facts. ``numa_node`` None and ``cpus`` () when the machine cannot tell."""

    index: int
    uuid: str
    model: str
    memory_mib: int
    minor: int  # /dev/nvidia<minor>; -1 when unknown
    bus_id: str  # PCI address, domain of 4 digits, lower case: 0000:18:00.0
    numa_node: int | None
    cpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CardHealth:
    index: int
    healthy: bool
    reasons: tuple[str, ...]  # why it is not healthy; () when it is


@dataclass(frozen=True, slots=True)
class GpuProcess:
    index: int  # the card
    pid: int  # as the host sees it (NVML reports host pids)
    used_mib: int  # 0 when NVML cannot tell (no permission, or MIG)


@dataclass(frozen=True, slots=True)
class GpuSnapshot:
    cards: tuple[GpuCard, ...]
    topology: GpuTopology | None
    health: tuple[CardHealth, ...]
    processes: tuple[GpuProcess, ...]
    source: str = "nvml"  # "nvml" or "nvidia-smi": what the facts were read with

    def unhealthy(self) -> dict[int, tuple[str, ...]]:
        """Card index -> reasons, for the cards that are not healthy."""
        return {h.index: h.reasons for h in self.health if not h.healthy}

    def memory_used_mib(self) -> dict[int, int]:
        """Card index -> MiB its processes hold (every card, 0 when idle)."""
        used = dict.fromkeys((c.index for c in self.cards), 0)
        for p in self.processes:
            used[p.index] = used.get(p.index, 0) + p.used_mib
        return used


class GpuReader(Protocol):
    """This node's GPUs: a fresh snapshot on each call; ``close`` releases NVML."""

    def snapshot(self) -> GpuSnapshot: ...

    def close(self) -> None: ...


Run = Callable[..., subprocess.CompletedProcess[str]]


def open_gpus(
    *,
    nvml: Any = None,
    run: Run = subprocess.run,
    which: Callable[[str], str | None] = shutil.which,
    sysfs: Path = Path("/sys"),
    temperature_limit_c: int = DEFAULT_TEMPERATURE_LIMIT_C,
) -> GpuReader | None:
    """A reader of this node's GPUs: NVML (``nvml``, else the real ``pynvml``), else
    ``nvidia-smi -q``; None on a node without GPUs or either tool (the reason is logged)."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found, no-redef]
        except ImportError:
            log.info("no NVML bindings (pip install nvidia-ml-py): trying nvidia-smi")
            nvml = None
    if nvml is not None:
        reader = NvmlGpuReader.open(
            nvml, run=run, which=which, sysfs=sysfs, temperature_limit_c=temperature_limit_c
        )
        if reader is not None:
            return reader
    return SmiGpuReader.open(
        run=run, which=which, sysfs=sysfs, temperature_limit_c=temperature_limit_c
    )


# ------------------------------------------------------------------------------- NVML


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(raw: Any) -> str:
    """pynvml gives str since 11.5 and bytes before."""
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()


def _handle_key(handle: Any) -> int:
    """Which device a handle names: NVML's handles are pointers to its own per-device records,
    the same for every call, so their address tells two apart (a fake's objects: their id)."""
    try:
        address = ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)
    return address if address is not None else id(handle)


@dataclass
class _CardWatch:
    """What the reader keeps per card between snapshots."""

    handle: Any
    xids: list[str] = field(default_factory=list)  # sticky reasons from critical XIDs
    slowdown_c: int | None = None
    logged: set[str] = field(default_factory=set)  # NVML calls whose failure was logged


class NvmlGpuReader:
    """The NVML reader (see the module docstring); make one with ``open``."""

    def __init__(
        self,
        nvml: Any,
        *,
        cards: tuple[GpuCard, ...],
        topology: GpuTopology | None,
        watches: list[_CardWatch],
        event_set: Any,
        temperature_limit_c: int,
    ) -> None:
        self._nvml = nvml
        self._cards = cards
        self._topology = topology
        self._watches = watches
        self._event_set = event_set
        self._temperature_limit_c = temperature_limit_c
        self._index_of = {_handle_key(w.handle): i for i, w in enumerate(watches)}
        self._uuid_index = {c.uuid: c.index for c in cards}
        self._closed = False
        self._lock = threading.Lock()  # the XIDs seen and the event set are shared state

    @classmethod
    def open(
        cls,
        nvml: Any,
        *,
        run: Run = subprocess.run,
        which: Callable[[str], str | None] = shutil.which,
        sysfs: Path = Path("/sys"),
        temperature_limit_c: int = DEFAULT_TEMPERATURE_LIMIT_C,
    ) -> NvmlGpuReader | None:
        """Initialise NVML and read the cards; None without a driver or GPUs (logged)."""
        # The topology reader holds its own NVML session (init/shutdown are reference-counted)
        topology = read_nvml_topology(nvml)
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError: no driver, no GPU, no library
            log.info("NVML is not available here: %s", exc)
            return None
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            log.warning("NVML cannot list this node's GPUs: %s", exc)
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
            return None
        if count == 0:
            log.info("NVML sees no GPU on this node")
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()
            return None
        if topology is None:
            topology = read_local_topology(run=run, which=which)
        if topology is not None and topology.count != count:
            log.warning("the topology names %s GPUs, NVML %s: left out", topology.count, count)
            topology = None
        watches = [_CardWatch(handle=h) for h in handles]
        cards = tuple(
            _nvml_card(nvml, i, watches[i], topology=topology, sysfs=sysfs) for i in range(count)
        )
        for watch in watches:
            watch.slowdown_c = _try(
                nvml,
                watch,
                "nvmlDeviceGetTemperatureThreshold",
                watch.handle,
                getattr(
                    nvml,
                    "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN",
                    _NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
                ),
            )
        event_set = _watch_events(nvml, watches)
        return cls(
            nvml,
            cards=cards,
            topology=topology,
            watches=watches,
            event_set=event_set,
            temperature_limit_c=temperature_limit_c,
        )

    @property
    def cards(self) -> tuple[GpuCard, ...]:
        return self._cards

    def snapshot(self) -> GpuSnapshot:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> GpuSnapshot:
        if self._closed:
            raise RuntimeError("this GPU reader is closed")
        self._drain_events()
        health: list[CardHealth] = []
        processes: list[GpuProcess] = []
        for card, watch in zip(self._cards, self._watches, strict=True):
            card_health, card_processes = self._read_card(card, watch)
            health.append(card_health)
            processes += card_processes
        return GpuSnapshot(
            cards=self._cards,
            topology=self._topology,
            health=tuple(health),
            processes=tuple(processes),
            source="nvml",
        )

    def _read_card(self, card: GpuCard, watch: _CardWatch) -> tuple[CardHealth, list[GpuProcess]]:
        nvml = self._nvml
        lost = False

        def read(name: str, *args: Any) -> Any:
            nonlocal lost
            try:
                return getattr(nvml, name)(watch.handle, *args)
            except Exception as exc:
                if _code(exc) == _NVML_ERROR_GPU_IS_LOST:
                    lost = True
                elif name not in watch.logged:
                    watch.logged.add(name)
                    log.warning("GPU %s: %s failed: %s", card.index, name, exc)
                return None

        temperature = read(
            "nvmlDeviceGetTemperature", getattr(nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU)
        )
        ecc = read(
            "nvmlDeviceGetTotalEccErrors",
            getattr(
                nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", _NVML_MEMORY_ERROR_TYPE_UNCORRECTED
            ),
            getattr(nvml, "NVML_VOLATILE_ECC", _NVML_VOLATILE_ECC),
        )
        running = read("nvmlDeviceGetComputeRunningProcesses") or []
        reasons = list(watch.xids)
        if lost:
            reasons.append("NVML has lost the GPU (fallen off the bus?)")
        reasons += _level_reasons(
            temperature=temperature,
            slowdown_c=watch.slowdown_c,
            limit_c=self._temperature_limit_c,
            ecc_uncorrected=ecc,
        )
        processes = []
        for proc in running:
            used = getattr(proc, "usedGpuMemory", None)
            processes.append(
                GpuProcess(
                    index=card.index,
                    pid=int(proc.pid),
                    used_mib=int(used) // _MIB if isinstance(used, int) else 0,
                )
            )
        return CardHealth(index=card.index, healthy=not reasons, reasons=tuple(reasons)), processes

    def _drain_events(self) -> None:
        nvml = self._nvml
        if self._event_set is None:
            return
        for _ in range(_MAX_EVENTS_PER_SNAPSHOT):
            try:
                event = nvml.nvmlEventSetWait(self._event_set, 0)
            except Exception as exc:
                if _code(exc) != _NVML_ERROR_TIMEOUT:
                    log.warning("waiting for NVML events failed: %s", exc)
                return
            xid_type = getattr(nvml, "nvmlEventTypeXidCriticalError", _EVENT_XID_CRITICAL)
            if not int(event.eventType) & xid_type:
                continue  # ECC events arrive as XID 48 too; the counters are read each pass
            xid = int(event.eventData)
            if xid in IGNORED_XIDS:
                log.info("XID %s (an application error) ignored", xid)
                continue
            meaning = XID_MEANINGS.get(xid)
            reason = f"XID {xid}" + (f" ({meaning})" if meaning else "")
            for index in self._event_cards(event):
                if reason not in self._watches[index].xids:
                    self._watches[index].xids.append(reason)
                log.warning(
                    "GPU %s: critical %s; unhealthy until the agent restarts", index, reason
                )

    def _event_cards(self, event: Any) -> list[int]:
        """The card of an event; every card when NVML cannot say which (NVIDIA's rule)."""
        index = self._index_of.get(_handle_key(event.device))
        if index is not None:
            return [index]
        with contextlib.suppress(Exception):
            uuid = _text(self._nvml.nvmlDeviceGetUUID(event.device))
            if uuid in self._uuid_index:
                return [self._uuid_index[uuid]]
        return [c.index for c in self._cards]

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._event_set is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlEventSetFree(self._event_set)
        with contextlib.suppress(Exception):
            self._nvml.nvmlShutdown()


def _try(nvml: Any, watch: _CardWatch, name: str, *args: Any) -> Any:
    """``nvml.<name>(*args)``, or None when it fails (logged once per card and call)."""
    try:
        return getattr(nvml, name)(*args)
    except Exception as exc:
        if name not in watch.logged:
            watch.logged.add(name)
            quiet = _code(exc) == _NVML_ERROR_NOT_SUPPORTED
            (log.info if quiet else log.warning)("NVML %s failed: %s", name, exc)
        return None


def _nvml_card(
    nvml: Any, index: int, watch: _CardWatch, *, topology: GpuTopology | None, sysfs: Path
) -> GpuCard:
    h = watch.handle
    uuid = _try(nvml, watch, "nvmlDeviceGetUUID", h)
    name = _try(nvml, watch, "nvmlDeviceGetName", h)
    memory = _try(nvml, watch, "nvmlDeviceGetMemoryInfo", h)
    minor = _try(nvml, watch, "nvmlDeviceGetMinorNumber", h)
    pci = _try(nvml, watch, "nvmlDeviceGetPciInfo", h)
    bus_id = pci_address(pci.busId) if pci is not None else ""
    numa, cpus = _near(index, bus_id, topology=topology, sysfs=sysfs)
    return GpuCard(
        index=index,
        uuid=_text(uuid) if uuid is not None else "",
        model=_text(name) if name is not None else "",
        memory_mib=int(memory.total) // _MIB if memory is not None else 0,
        minor=int(minor) if minor is not None else -1,
        bus_id=bus_id,
        numa_node=numa,
        cpus=cpus,
    )


def _watch_events(nvml: Any, watches: list[_CardWatch]) -> Any:
    """An NVML event set with every card registered for XID critical and double-bit ECC events;
    None when NVML has no events. A card that cannot be registered is logged and stays healthy:
    it cannot report XIDs, which is not a fault (NVIDIA's plugin marks it unhealthy instead)."""
    try:
        event_set = nvml.nvmlEventSetCreate()
    except Exception as exc:
        log.warning("NVML cannot create an event set, XID errors go unseen: %s", exc)
        return None
    wanted = getattr(nvml, "nvmlEventTypeXidCriticalError", _EVENT_XID_CRITICAL) | getattr(
        nvml, "nvmlEventTypeDoubleBitEccError", _EVENT_DOUBLE_BIT_ECC
    )
    for index, watch in enumerate(watches):
        try:
            supported = int(nvml.nvmlDeviceGetSupportedEventTypes(watch.handle))
        except Exception:
            supported = wanted
        try:
            nvml.nvmlDeviceRegisterEvents(watch.handle, wanted & supported, event_set)
        except Exception as exc:
            log.warning("GPU %s: cannot watch for XID errors: %s", index, exc)
    return event_set


# ------------------------------------------------------------------------- shared rules


def _level_reasons(
    *, temperature: int | None, slowdown_c: int | None, limit_c: int, ecc_uncorrected: int | None
) -> list[str]:
    reasons = []
    if ecc_uncorrected:
        reasons.append(f"{ecc_uncorrected} uncorrected ECC error(s) since the driver loaded")
    if temperature is not None:
        limit, what = (slowdown_c, "slowdown") if slowdown_c else (limit_c, "limit")
        if temperature >= limit:
            reasons.append(f"temperature {temperature} C at or above its {what} of {limit} C")
    return reasons


def pci_address(raw: Any) -> str:
    """``00000000:18:00.0`` and ``0000:18:00.0`` alike as ``0000:18:00.0`` (sysfs's form)."""
    return bus_id(_text(raw))


def _near(
    index: int, bus_id: str, *, topology: GpuTopology | None, sysfs: Path
) -> tuple[int | None, tuple[int, ...]]:
    """The card's NUMA node and nearest cores: the topology's, else the kernel's."""
    numa = topology.numa_node[index] if topology is not None else None
    cpus = topology.cpu_affinity[index] if topology is not None else ()
    device = sysfs / "bus" / "pci" / "devices" / bus_id
    if numa is None and bus_id:
        with contextlib.suppress(OSError, ValueError):
            node = int((device / "numa_node").read_text().strip())
            numa = node if node >= 0 else None  # -1: the platform has no NUMA information
    if not cpus and bus_id:
        with contextlib.suppress(OSError, ValueError):
            cpus = parse_cpu_list((device / "local_cpulist").read_text())
    return numa, cpus


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """A kernel cpu list (``0-55,112-167``, sysfs's ``local_cpulist``) as core ids; ValueError
    when it is not one."""
    return parse_cpuset(text.strip())


# ------------------------------------------------------------------------- nvidia-smi -q


@dataclass(frozen=True, slots=True)
class SmiCard:
    """One card of ``nvidia-smi -q`` (the fields Gaia reads)."""

    bus_id: str
    name: str = ""
    uuid: str = ""
    minor: int = -1
    memory_mib: int = 0
    temperature_c: int | None = None
    slowdown_c: int | None = None  # absolute only; None where the driver prints T.Limit ones
    ecc_uncorrected: int | None = None  # volatile
    processes: tuple[tuple[int, int], ...] = ()  # (pid, MiB)


_GPU_LINE = re.compile(r"^GPU ([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$")


def _number(value: str) -> int | None:
    found = re.match(r"\s*(-?\d+)", value)
    return int(found.group(1)) if found else None


def parse_nvidia_smi_query(text: str) -> list[SmiCard]:
    """The cards of ``nvidia-smi -q`` in the order printed (which is NVML's index order)."""
    cards: list[SmiCard] = []
    fields: dict[str, Any] = {}
    stack: list[tuple[int, str]] = []
    processes: list[list[int]] = []

    def finish() -> None:
        if fields:
            fields["processes"] = tuple((p[0], p[1]) for p in processes)
            cards.append(SmiCard(**fields))

    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            finish()
            fields, stack, processes = {"bus_id": pci_address(gpu.group(1))}, [], []
            continue
        if not fields or not line.strip() or not line.startswith(" "):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, colon, value = line.strip().partition(":")
        key, value = key.strip(), value.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        if not colon or not value:
            stack.append((indent, key))
            continue
        if path == ("Product Name",):
            fields["name"] = value
        elif path == ("GPU UUID",):
            fields["uuid"] = value
        elif path == ("Minor Number",):
            fields["minor"] = _number(value) if _number(value) is not None else -1
        elif path == ("FB Memory Usage", "Total"):
            fields["memory_mib"] = _number(value) or 0
        elif path == ("Temperature", "GPU Current Temp"):
            fields["temperature_c"] = _number(value)
        elif path == ("Temperature", "GPU Slowdown Temp"):
            fields["slowdown_c"] = _number(value)
        elif path[:2] == ("ECC Errors", "Volatile") and "Uncorrectable" in key:
            n = _number(value)
            if n is not None:
                fields["ecc_uncorrected"] = (fields.get("ecc_uncorrected") or 0) + n
        elif path[:1] == ("Processes",) and key == "Process ID":
            pid = _number(value)
            if pid is not None:
                processes.append([pid, 0])
            stack.append((indent, key))  # its Type, Name and memory are nested under it
        elif path[:1] == ("Processes",) and key == "Used GPU Memory" and processes:
            processes[-1][1] = _number(value) or 0
    finish()
    return cards


class SmiGpuReader:
    """The ``nvidia-smi -q`` reader (no XID events); make one with ``open``."""

    def __init__(
        self,
        *,
        binary: str,
        run: Run,
        cards: tuple[GpuCard, ...],
        topology: GpuTopology | None,
        temperature_limit_c: int,
    ) -> None:
        self._binary = binary
        self._run = run
        self._cards = cards
        self._topology = topology
        self._temperature_limit_c = temperature_limit_c

    @classmethod
    def open(
        cls,
        *,
        run: Run = subprocess.run,
        which: Callable[[str], str | None] = shutil.which,
        sysfs: Path = Path("/sys"),
        temperature_limit_c: int = DEFAULT_TEMPERATURE_LIMIT_C,
    ) -> SmiGpuReader | None:
        binary = which("nvidia-smi")
        if binary is None:
            log.info("no nvidia-smi either: no GPUs to publish on this node")
            return None
        found = _query(run, binary)
        if not found:
            return None
        topology = read_local_topology(run=run, which=which)
        if topology is not None and topology.count != len(found):
            topology = None
        cards = []
        for index, smi in enumerate(found):
            numa, cpus = _near(index, smi.bus_id, topology=topology, sysfs=sysfs)
            cards.append(
                GpuCard(
                    index=index,
                    uuid=smi.uuid,
                    model=smi.name,
                    memory_mib=smi.memory_mib,
                    minor=smi.minor,
                    bus_id=smi.bus_id,
                    numa_node=numa,
                    cpus=cpus,
                )
            )
        return cls(
            binary=binary,
            run=run,
            cards=tuple(cards),
            topology=topology,
            temperature_limit_c=temperature_limit_c,
        )

    def snapshot(self) -> GpuSnapshot:
        found = {c.uuid: c for c in _query(self._run, self._binary)}
        health: list[CardHealth] = []
        processes: list[GpuProcess] = []
        for card in self._cards:
            smi = found.get(card.uuid)
            if smi is None:
                reasons = ["nvidia-smi no longer lists the GPU"]
            else:
                reasons = _level_reasons(
                    temperature=smi.temperature_c,
                    slowdown_c=smi.slowdown_c,
                    limit_c=self._temperature_limit_c,
                    ecc_uncorrected=smi.ecc_uncorrected,
                )
                processes += [
                    GpuProcess(index=card.index, pid=p, used_mib=m) for p, m in smi.processes
                ]
            health.append(CardHealth(index=card.index, healthy=not reasons, reasons=tuple(reasons)))
        return GpuSnapshot(
            cards=self._cards,
            topology=self._topology,
            health=tuple(health),
            processes=tuple(processes),
            source="nvidia-smi",
        )

    def close(self) -> None:
        pass


def _query(run: Run, binary: str) -> list[SmiCard]:
    try:
        done = run([binary, "-q"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi -q could not run: %s", exc)
        return []
    if done.returncode != 0:
        log.warning("nvidia-smi -q exited %s: %s", done.returncode, done.stderr.strip())
        return []
    return parse_nvidia_smi_query(done.stdout)
