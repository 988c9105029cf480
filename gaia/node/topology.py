"""Reading this machine's GPU topology: ``nvidia-smi topo -m`` or NVML, on a GPU node.

What flows in is the machine itself (the ``nvidia-smi`` binary, or the NVML library through
``nvidia-ml-py``, the ``gpu`` extra); what flows out is a ``GpuTopology``
(``gaia.scheduler.links``), or None on a machine without GPUs or whose tool fails (the reason is
logged). Both readers take their system calls as arguments, so tests drive them with recorded
output and a fake NVML, named as such; nothing here runs on the platform's side.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from gaia.scheduler.links import SELF, GpuTopology, parse_nvidia_smi_topo

log = logging.getLogger(__name__)


def read_local_topology(
    *,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    which: Callable[[str], str | None] = shutil.which,
) -> GpuTopology | None:
    """This machine's topology from ``nvidia-smi topo -m``; None without nvidia-smi or when it
    fails (the reason is logged: a node without GPUs is normal, one whose tool fails is not)."""
    binary = which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = run([binary, "topo", "-m"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi topo -m could not run: %s", exc)
        return None
    if done.returncode != 0:
        log.warning("nvidia-smi topo -m exited %s: %s", done.returncode, done.stderr.strip())
        return None
    try:
        return parse_nvidia_smi_topo(done.stdout)
    except ValueError as exc:
        log.warning("nvidia-smi topo -m printed a table Gaia cannot read: %s", exc)
        return None


# NVML's nvmlGpuTopologyLevel_t (nvml.h) and the nvidia-smi label of each level.
_NVML_LEVELS = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
_NVML_SWITCH = 2  # nvmlIntNvLinkDeviceType_t: NVML_NVLINK_DEVICE_TYPE_SWITCH
_NVML_ENABLED = 1  # nvmlEnableState_t: NVML_FEATURE_ENABLED


def read_nvml_topology(nvml: Any = None) -> GpuTopology | None:
    """This machine's topology read through NVML (``nvidia-ml-py``, imported as ``pynvml``), as
    ``nvidia-smi topo -m`` would print it; None without NVML or GPUs (the reason is logged).

    The PCIe path of each pair is ``nvmlDeviceGetTopologyCommonAncestor``. NVLinks are counted per
    pair from each active link's remote end: a link to another GPU's PCI bus id joins that pair;
    links to NVSwitches join every two GPUs that both reach switches, with as many links as the
    one with fewer (an A100 board's twelve links to its six switches read NV12). CPU affinity is
    ``nvmlDeviceGetCpuAffinity`` (a bitmask of cores), the NUMA node ``nvmlDeviceGetNumaNodeId``
    where the driver has it. ``nvml`` is the module to use (a test passes a fake one)."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found, no-redef]
        except ImportError:
            log.info("no NVML bindings (pip install nvidia-ml-py): reading nvidia-smi instead")
            return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver, no GPU
        log.info("NVML is not available here: %s", exc)
        return None
    try:
        return _read_nvml(nvml)
    except Exception as exc:
        log.warning("NVML answered in a way Gaia cannot read: %s", exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _read_nvml(nvml: Any) -> GpuTopology | None:
    count = int(nvml.nvmlDeviceGetCount())
    if count == 0:
        return None
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    bus_ids = [bus_id(nvml.nvmlDeviceGetPciInfo(h).busId) for h in handles]
    index_of = {bus: i for i, bus in enumerate(bus_ids)}
    nvlinks = [[0] * count for _ in range(count)]
    to_switch = [0] * count
    for i, handle in enumerate(handles):
        for link in range(int(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18))):
            if not _link_enabled(nvml, handle, link):
                continue
            try:
                kind = nvml.nvmlDeviceGetNvLinkRemoteDeviceType(handle, link)
            except Exception:
                kind = None
            if kind == _NVML_SWITCH:
                to_switch[i] += 1
                continue
            remote = bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
            j = index_of.get(remote)
            if j is not None and j != i:
                nvlinks[i][j] += 1
    links: list[list[str]] = []
    for i in range(count):
        row = []
        for j in range(count):
            if i == j:
                row.append(SELF)
                continue
            direct = min(nvlinks[i][j], nvlinks[j][i]) or max(nvlinks[i][j], nvlinks[j][i])
            through_switch = min(to_switch[i], to_switch[j])
            bonded = direct + through_switch
            if bonded:
                row.append(f"NV{bonded}")
            else:
                level = int(nvml.nvmlDeviceGetTopologyCommonAncestor(handles[i], handles[j]))
                row.append(_NVML_LEVELS.get(level, "SYS"))
        links.append(row)
    affinity = []
    numa: list[int | None] = []
    for handle in handles:
        affinity.append(_cpu_affinity(nvml, handle))
        try:
            numa.append(int(nvml.nvmlDeviceGetNumaNodeId(handle)))
        except Exception:  # older drivers and bindings
            numa.append(None)
    return GpuTopology(
        links=tuple(tuple(row) for row in links),
        cpu_affinity=tuple(affinity),
        numa_node=tuple(numa),
    )


def _link_enabled(nvml: Any, handle: Any, link: int) -> bool:
    try:
        return bool(nvml.nvmlDeviceGetNvLinkState(handle, link) == _NVML_ENABLED)
    except Exception:  # NVMLError_NotSupported / InvalidArgument: the GPU has no such link
        return False


def bus_id(raw: bytes | str) -> str:
    """``00000000:07:00.0`` and ``0000:07:00.0`` (NVML uses both domain widths) alike."""
    text = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip().lower()
    domain, colon, rest = text.partition(":")
    if not colon:
        return text
    try:
        return f"{int(domain, 16):04x}:{rest}"
    except ValueError:
        return text


def _cpu_affinity(nvml: Any, handle: Any) -> tuple[int, ...]:
    words = 8  # 8 x 64 bits: machines up to 512 cores
    try:
        masks = nvml.nvmlDeviceGetCpuAffinity(handle, words)
    except Exception:
        return ()
    return tuple(
        word * 64 + bit for word, mask in enumerate(masks) for bit in range(64) if mask >> bit & 1
    )
