"""A FAKE NVML: the ``pynvml`` module (``nvidia-ml-py``) as Gaia's node side calls it, with no GPU.

No machine that runs these tests has a GPU, so the node agent's readers (``gaia.node.topology``,
``gaia.node.gpus``) are driven by this stand-in. It is a fake, not NVIDIA's library: it answers
only the calls Gaia makes, from facts recorded on real machines, and whatever it does not model
it answers the way the real library does when a driver lacks a feature (``NVMLError_NotSupported``).

**Where its facts come from.** A machine is a real ``nvidia-smi -q`` text
(``tests/fixtures/gpus/<machine>.txt``, each citing its source: product name, UUID, minor number,
PCI bus id, memory, volatile ECC counters, temperatures and slowdown temperature per card) and,
optionally, a real ``nvidia-smi topo -m`` table (``tests/fixtures/topology``) for the links, CPU
affinity and NUMA node. ``FakeNvml.machine("dgx_h100", topology=...)`` builds one;
``FakeNvml(topology)`` alone makes synthetic cards (UUIDs ``GPU-fake-…``) for topology tests.

**The calls and their failures** follow ``pynvml``: functions named ``nvmlDevice…`` taking opaque
handles, constants such as ``nvmlEventTypeXidCriticalError`` and ``NVML_TEMPERATURE_GPU``, and
errors raised as ``NVMLError`` subclasses named the library's way (``NVMLError_NotSupported``,
``NVMLError_Timeout``, ``NVMLError_GpuIsLost``) whose ``value`` is NVML's return code. Names in
``unsupported`` answer NotSupported (the H200 of ``/work/shared/design/TESTBED.md`` does for
``nvmlDeviceGetNumaNodeId`` and ``nvmlDeviceGetNvLinkState``). ``nvmlInit``/``nvmlShutdown`` are
reference-counted as in the real bindings. Handles are objects, not indexes, so a reader that
confuses the two fails here as it would on a machine.

**Changing the machine while a test runs** (what a GPU does to a node agent):
``xid(index, 79)`` posts an XID critical event (79 "fallen off the bus" also makes every later
call on that card raise ``NVMLError_GpuIsLost``), ``ecc(index, uncorrected=n)`` adds uncorrected
volatile ECC errors (and posts XID 48, the double-bit ECC error, as the driver does),
``set_temperature(index, c)``, ``add_process(index, pid=…, used_mib=…)`` and
``remove_process(index, pid)``. Events reach an event set only once registered, as in NVML, and
``nvmlEventSetWait`` raises ``NVMLError_Timeout`` when none is pending.

**In another process.** Give ``state_path``: the state (cards, processes, events) then lives in
that JSON file; every call re-reads it when it changed and every change writes it, so a test can
change the machine under a node agent that runs in a separate process. That process imports
``pynvml`` from ``tests/support/fake_pynvml`` (put that folder first on ``PYTHONPATH`` and name
the file in ``GAIA_FAKE_NVML_STATE``): a module whose attributes are those of a ``FakeNvml`` on
that file. Each process keeps its own event sets, as each holds its own NVML session.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gaia.scheduler.links import GpuTopology
from tests.support.paths import FIXTURES

GPU_FIXTURES = FIXTURES / "gpus"
MIB = 1024 * 1024

# nvml.h return codes (nvmlReturn_t) and the names pynvml gives their exception classes.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_GPU_IS_LOST = 15


class NVMLError(Exception):
    """As pynvml's: ``value`` is the nvmlReturn_t; ``str()`` is NVML's error string."""

    MESSAGES = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    }

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return self.MESSAGES.get(self.value, f"Unknown Error {self.value}")


class NVMLError_Uninitialized(NVMLError):  # pynvml names its error classes so
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_UNINITIALIZED)


class NVMLError_InvalidArgument(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_INVALID_ARGUMENT)


class NVMLError_NotSupported(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_NotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_NOT_FOUND)


class NVMLError_DriverNotLoaded(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_DRIVER_NOT_LOADED)


class NVMLError_Timeout(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_TIMEOUT)


class NVMLError_GpuIsLost(NVMLError):
    def __init__(self) -> None:
        super().__init__(NVML_ERROR_GPU_IS_LOST)


@dataclass
class FakeCard:
    """One card's state; the JSON of ``state_path`` holds a list of these."""

    uuid: str
    name: str
    memory_total_mib: int
    minor: int
    bus_id: str  # as NVML prints it: 00000000:18:00.0
    temperature_c: int = 30
    slowdown_c: int | None = None  # None: the card reports no absolute slowdown temperature
    ecc_uncorrected_volatile: int = 0
    ecc_uncorrected_aggregate: int = 0
    processes: dict[str, int] = field(default_factory=dict)  # pid (as text, for JSON) -> MiB
    lost: bool = False  # fallen off the bus: every call on it raises NVMLError_GpuIsLost


@dataclass
class _Event:
    seq: int
    index: int
    event_type: int
    data: int


class _Handle:
    """An opaque device handle, as NVML's ``nvmlDevice_t`` is."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<fake nvmlDevice_t {self.index}>"


@dataclass
class _EventSet:
    registered: dict[int, int] = field(default_factory=dict)  # card index -> event type mask
    seen: int = 0  # the last event sequence number this set delivered or skipped
    freed: bool = False


@dataclass
class EventData:
    """pynvml's ``c_nvmlEventData_t`` fields."""

    device: _Handle
    eventType: int  # NVML's field names
    eventData: int
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


@dataclass
class PciInfo:
    busId: str
    busIdLegacy: str


@dataclass
class MemoryInfo:
    total: int
    free: int
    used: int


@dataclass
class ProcessInfo:
    pid: int
    usedGpuMemory: int | None  # bytes; None when NVML cannot tell


def read_smi_cards(text: str) -> list[FakeCard]:
    """The cards of a recorded ``nvidia-smi -q`` text (this fake's own small reader, kept apart
    from ``gaia.node.gpus`` so that a bug there cannot hide here)."""
    cards: list[FakeCard] = []
    blocks = re.split(r"^GPU (?=[0-9A-Fa-f]{8}:)", text, flags=re.M)[1:]
    for block in blocks:
        bus_id = block.splitlines()[0].strip()

        def value(pattern: str, where: str = block) -> str:
            found = re.search(pattern + r"\s*:\s*(.*)$", where, re.M)
            return found.group(1).strip() if found else ""

        fb = block.split("FB Memory Usage", 1)[1] if "FB Memory Usage" in block else ""
        ecc = block.split("ECC Errors", 1)[1] if "ECC Errors" in block else ""
        volatile = ecc.split("Volatile", 1)[1].split("Aggregate", 1)[0] if "Volatile" in ecc else ""
        aggregate = ecc.split("Aggregate", 1)[1] if "Aggregate" in ecc else ""
        slowdown = value(r"GPU Slowdown Temp")  # absolute on A100; H100 prints "T.Limit" ones
        cards.append(
            FakeCard(
                uuid=value(r"GPU UUID"),
                name=value(r"Product Name"),
                memory_total_mib=int(value(r"Total", fb).split()[0]),
                minor=int(value(r"Minor Number")),
                bus_id=bus_id,
                temperature_c=int(value(r"GPU Current Temp").split()[0]),
                slowdown_c=int(slowdown.split()[0]) if slowdown[:1].isdigit() else None,
                ecc_uncorrected_volatile=_uncorrected(volatile),
                ecc_uncorrected_aggregate=_uncorrected(aggregate),
            )
        )
    return cards


def _uncorrected(section: str) -> int:
    return sum(
        int(n) for n in re.findall(r"Uncorrectable[^:\n]*:\s*(\d+)", section.split("Threshold")[0])
    )


def machine_text(name: str) -> str:
    return (GPU_FIXTURES / f"{name}.txt").read_text()


class FakeNvml:
    """A FAKE ``pynvml`` module (see the module docstring). Use it where Gaia takes ``nvml``."""

    # pynvml's constants that Gaia reads.
    NVML_NVLINK_MAX_LINKS = 18
    NVML_TEMPERATURE_GPU = 0
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
    NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_AGGREGATE_ECC = 1
    nvmlEventTypeSingleBitEccError = 0x1
    nvmlEventTypeDoubleBitEccError = 0x2
    nvmlEventTypePState = 0x4
    nvmlEventTypeXidCriticalError = 0x8
    nvmlEventTypeNone = 0x0
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_ERROR_TIMEOUT = NVML_ERROR_TIMEOUT
    NVML_ERROR_GPU_IS_LOST = NVML_ERROR_GPU_IS_LOST
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_Timeout = NVMLError_Timeout
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_InvalidArgument = NVMLError_InvalidArgument

    LEVELS = {"PIX": 10, "PXB": 20, "PHB": 30, "NODE": 40, "SYS": 50, "SOC": 50}
    Error = NVMLError  # the name the topology tests knew

    def __init__(
        self,
        topology: GpuTopology | None = None,
        *,
        cards: list[FakeCard] | None = None,
        nvswitch: int = 0,
        init_fails: bool = False,
        unsupported: frozenset[str] | set[str] = frozenset(),
        state_path: Path | None = None,
    ) -> None:
        if cards is None:
            if topology is None:
                raise ValueError("a FakeNvml needs cards, a topology or both")
            cards = [
                FakeCard(
                    uuid=f"GPU-fake-{i:04d}",
                    name="FAKE GPU",
                    memory_total_mib=16384,
                    minor=i,
                    bus_id=f"00000000:{0x10 + i:02X}:00.0",
                )
                for i in range(topology.count)
            ]
        if topology is not None and topology.count != len(cards):
            raise ValueError(f"topology has {topology.count} GPUs, the cards {len(cards)}")
        self.topology = topology
        self.nvswitch = nvswitch
        self.init_fails = init_fails
        self.unsupported = frozenset(unsupported)
        self.state_path = state_path
        self.cards = cards
        self.events: list[_Event] = []
        self.calls: list[str] = []  # every NVML function called, in order
        self._inits = 0
        self.shut = False
        self._event_sets: list[_EventSet] = []
        # NVML hands out the same handle for a device every time (a pointer to its own record)
        self._handles = [_Handle(i) for i in range(len(cards))]
        self._state_stamp: int | None = None
        count = len(cards)
        self.links: list[list[tuple[str, int]]] = [[] for _ in range(count)]  # (remote, type)
        if topology is not None:
            for i in range(count):
                if nvswitch:
                    self.links[i] = [("switch", 2)] * nvswitch
                    continue
                for j in range(count):
                    label = topology.links[i][j]
                    if label.startswith("NV"):
                        self.links[i] += [(cards[j].bus_id, 1)] * int(label[2:] or 1)
        if state_path is not None:
            if state_path.exists():
                self._reload(force=True)
            else:
                self._save()

    # ----------------------------------------------------------------- building one

    @classmethod
    def machine(
        cls,
        name: str,
        *,
        topology: GpuTopology | None = None,
        nvswitch: int = 0,
        unsupported: frozenset[str] | set[str] = frozenset(),
        state_path: Path | None = None,
    ) -> FakeNvml:
        """The machine recorded in ``tests/fixtures/gpus/<name>.txt`` (real ``nvidia-smi -q``),
        with ``topology`` (a real ``nvidia-smi topo -m`` table) if given."""
        return cls(
            topology,
            cards=read_smi_cards(machine_text(name)),
            nvswitch=nvswitch,
            unsupported=unsupported,
            state_path=state_path,
        )

    @classmethod
    def attach(cls, state_path: Path) -> FakeNvml:
        """The fake whose state another process wrote to ``state_path`` (``fake_pynvml``)."""
        doc = json.loads(state_path.read_text())
        topology = None
        if doc.get("topology") is not None:
            t = doc["topology"]
            topology = GpuTopology(
                links=tuple(tuple(row) for row in t["links"]),
                cpu_affinity=tuple(tuple(c) for c in t["cpu_affinity"]),
                numa_node=tuple(t["numa_node"]),
            )
        return cls(
            topology,
            cards=[FakeCard(**c) for c in doc["cards"]],
            nvswitch=doc.get("nvswitch", 0),
            unsupported=frozenset(doc.get("unsupported", ())),
            state_path=state_path,
        )

    # -------------------------------------------------------- changing it under a test

    def xid(self, index: int, code: int) -> None:
        """Post an XID critical error on card ``index``; 79 (fallen off the bus) also loses it."""
        with self._changing():
            if code == 79:
                self.cards[index].lost = True
            self._post(index, self.nvmlEventTypeXidCriticalError, code)

    def ecc(self, index: int, *, uncorrected: int) -> None:
        """``uncorrected`` more uncorrected (double-bit) ECC errors on card ``index``; the driver
        reports them as XID 48 too."""
        with self._changing():
            card = self.cards[index]
            card.ecc_uncorrected_volatile += uncorrected
            card.ecc_uncorrected_aggregate += uncorrected
            self._post(index, self.nvmlEventTypeDoubleBitEccError, 0)
            self._post(index, self.nvmlEventTypeXidCriticalError, 48)

    def set_temperature(self, index: int, celsius: int) -> None:
        with self._changing():
            self.cards[index].temperature_c = celsius

    def add_process(self, index: int, *, pid: int, used_mib: int) -> None:
        with self._changing():
            self.cards[index].processes[str(pid)] = used_mib

    def remove_process(self, index: int, pid: int) -> None:
        with self._changing():
            self.cards[index].processes.pop(str(pid), None)

    def _post(self, index: int, event_type: int, data: int) -> None:
        seq = (self.events[-1].seq if self.events else 0) + 1
        self.events.append(_Event(seq=seq, index=index, event_type=event_type, data=data))

    @contextlib.contextmanager
    def _changing(self) -> Any:
        self._reload()
        yield
        self._save()

    # ---------------------------------------------------------------- the state file

    def _save(self) -> None:
        if self.state_path is None:
            return
        t = self.topology
        doc = {
            "cards": [asdict(c) for c in self.cards],
            "events": [asdict(e) for e in self.events],
            "nvswitch": self.nvswitch,
            "unsupported": sorted(self.unsupported),
            "topology": None
            if t is None
            else {
                "links": [list(r) for r in t.links],
                "cpu_affinity": [list(c) for c in t.cpu_affinity],
                "numa_node": list(t.numa_node),
            },
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.state_path)  # readers never see half a file
        self._state_stamp = self.state_path.stat().st_mtime_ns

    def _reload(self, *, force: bool = False) -> None:
        if self.state_path is None:
            return
        stamp = self.state_path.stat().st_mtime_ns
        if not force and stamp == self._state_stamp:
            return
        doc = json.loads(self.state_path.read_text())
        self.cards = [FakeCard(**c) for c in doc["cards"]]
        self.events = [_Event(**e) for e in doc["events"]]
        self._state_stamp = stamp

    # ---------------------------------------------------------------- NVML: plumbing

    def _call(self, name: str) -> None:
        self.calls.append(name)
        self._reload()
        if name in self.unsupported:
            raise NVMLError_NotSupported()
        if not self._inits and name not in ("nvmlInit", "nvmlShutdown"):
            raise NVMLError_Uninitialized()

    def _card(self, handle: Any) -> FakeCard:
        if not isinstance(handle, _Handle):
            raise NVMLError_InvalidArgument()
        card = self.cards[handle.index]
        if card.lost:
            raise NVMLError_GpuIsLost()
        return card

    def nvmlInit(self) -> None:
        self._call("nvmlInit")
        if self.init_fails:
            raise NVMLError_DriverNotLoaded()
        self._inits += 1
        self.shut = False

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        if not self._inits:
            raise NVMLError_Uninitialized()
        self._inits -= 1
        self.shut = self._inits == 0

    @property
    def initialised(self) -> bool:
        return self._inits > 0

    # ---------------------------------------------------------------- NVML: devices

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._call("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.cards):
            raise NVMLError_InvalidArgument()
        return self._handles[index]

    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        self._call("nvmlDeviceGetIndex")
        self._card(handle)
        return int(handle.index)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        self._call("nvmlDeviceGetUUID")
        return self._card(handle).uuid

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._call("nvmlDeviceGetName")
        return self._card(handle).name

    def nvmlDeviceGetMinorNumber(self, handle: Any) -> int:
        self._call("nvmlDeviceGetMinorNumber")
        return self._card(handle).minor

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo:
        self._call("nvmlDeviceGetMemoryInfo")
        card = self._card(handle)
        used = sum(card.processes.values()) * MIB
        total = card.memory_total_mib * MIB
        return MemoryInfo(total=total, free=total - used, used=used)

    def nvmlDeviceGetPciInfo(self, handle: Any) -> PciInfo:
        self._call("nvmlDeviceGetPciInfo")
        bus = self._card(handle).bus_id
        # pynvml decodes busId to str; the legacy field has the short domain
        return PciInfo(busId=bus, busIdLegacy=bus.replace("00000000:", "0000:"))

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._call("nvmlDeviceGetTemperature")
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise NVMLError_InvalidArgument()
        return self._card(handle).temperature_c

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        self._call("nvmlDeviceGetTemperatureThreshold")
        card = self._card(handle)
        if threshold != self.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN or card.slowdown_c is None:
            raise NVMLError_NotSupported()
        return card.slowdown_c

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int:
        self._call("nvmlDeviceGetTotalEccErrors")
        card = self._card(handle)
        if error_type != self.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            raise NVMLError_NotSupported()  # corrected counts are not modelled
        if counter == self.NVML_VOLATILE_ECC:
            return card.ecc_uncorrected_volatile
        return card.ecc_uncorrected_aggregate

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[ProcessInfo]:
        self._call("nvmlDeviceGetComputeRunningProcesses")
        card = self._card(handle)
        return [ProcessInfo(pid=int(p), usedGpuMemory=m * MIB) for p, m in card.processes.items()]

    # ---------------------------------------------------------------- NVML: topology

    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int:
        self._call("nvmlDeviceGetNvLinkState")
        self._card(handle)
        if link >= len(self.links[handle.index]):
            raise NVMLError_NotSupported()
        return 1

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, handle: Any, link: int) -> int:
        self._call("nvmlDeviceGetNvLinkRemoteDeviceType")
        self._card(handle)
        return int(self.links[handle.index][link][1])

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: Any, link: int) -> PciInfo:
        self._call("nvmlDeviceGetNvLinkRemotePciInfo")
        self._card(handle)
        # NVML gives the short domain here: the reader must not care
        remote = self.links[handle.index][link][0].replace("00000000:", "0000:")
        return PciInfo(busId=remote, busIdLegacy=remote)

    def nvmlDeviceGetTopologyCommonAncestor(self, a: Any, b: Any) -> int:
        self._call("nvmlDeviceGetTopologyCommonAncestor")
        self._card(a)
        self._card(b)
        if self.topology is None:
            return self.LEVELS["SYS"]
        return self.LEVELS.get(self.topology.links[a.index][b.index], 50)

    def nvmlDeviceGetCpuAffinity(self, handle: Any, words: int) -> list[int]:
        self._call("nvmlDeviceGetCpuAffinity")
        self._card(handle)
        if self.topology is None:
            raise NVMLError_NotSupported()
        masks = [0] * words
        for core in self.topology.cpu_affinity[handle.index]:
            masks[core // 64] |= 1 << (core % 64)
        return masks

    def nvmlDeviceGetNumaNodeId(self, handle: Any) -> int:
        self._call("nvmlDeviceGetNumaNodeId")
        self._card(handle)
        node = None if self.topology is None else self.topology.numa_node[handle.index]
        if node is None:
            raise NVMLError_NotSupported()
        return int(node)

    # ---------------------------------------------------------------- NVML: events

    def nvmlEventSetCreate(self) -> _EventSet:
        self._call("nvmlEventSetCreate")
        event_set = _EventSet(seen=self.events[-1].seq if self.events else 0)
        self._event_sets.append(event_set)
        return event_set

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        self._call("nvmlDeviceGetSupportedEventTypes")
        self._card(handle)
        return (
            self.nvmlEventTypeSingleBitEccError
            | self.nvmlEventTypeDoubleBitEccError
            | self.nvmlEventTypePState
            | self.nvmlEventTypeXidCriticalError
        )

    def nvmlDeviceRegisterEvents(self, handle: Any, event_types: int, event_set: Any) -> None:
        self._call("nvmlDeviceRegisterEvents")
        self._card(handle)
        event_set.registered[handle.index] = event_set.registered.get(handle.index, 0) | int(
            event_types
        )

    def nvmlEventSetWait(self, event_set: Any, timeoutms: int) -> EventData:
        """The next event registered in ``event_set``; ``NVMLError_Timeout`` after ``timeoutms``
        without one (the fake polls its state, so another process's ``xid`` arrives too)."""
        self._call("nvmlEventSetWait")
        deadline = time.monotonic() + max(0, timeoutms) / 1000
        for attempt in itertools.count():
            if attempt:
                self._reload()
            for event in self.events:
                if event.seq <= event_set.seen:
                    continue
                event_set.seen = event.seq
                if event_set.registered.get(event.index, 0) & event.event_type:
                    return EventData(
                        device=self._handles[event.index],
                        eventType=event.event_type,
                        eventData=event.data,
                    )
            if time.monotonic() >= deadline:
                raise NVMLError_Timeout()
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        raise AssertionError("unreachable")

    def nvmlEventSetFree(self, event_set: Any) -> None:
        self._call("nvmlEventSetFree")
        event_set.freed = True
