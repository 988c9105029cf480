"""A FAKE ``pynvml`` for one card, matching ``nvidia_smi.py`` (see README.md)."""

from __future__ import annotations

from types import SimpleNamespace

NVML_NVLINK_MAX_LINKS = 18


class NVMLError(Exception):
    pass


def nvmlInit() -> None:
    return None


def nvmlShutdown() -> None:
    return None


def nvmlDeviceGetCount() -> int:
    return 1


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    return index


def nvmlDeviceGetPciInfo(handle: int) -> SimpleNamespace:
    return SimpleNamespace(busId=b"00000000:18:00.0")


def nvmlDeviceGetNvLinkState(handle: int, link: int) -> int:
    raise NVMLError("Not Supported")


def nvmlDeviceGetCpuAffinity(handle: int, words: int) -> list[int]:
    return [(1 << 32) - 1] + [0] * (words - 1)


def nvmlDeviceGetNumaNodeId(handle: int) -> int:
    return 0


def nvmlDeviceGetMinorNumber(handle: int) -> int:
    return 0


def nvmlDeviceGetUUID(handle: int) -> str:
    return "GPU-fa4e0000-0000-0000-0000-000000000000"


def nvmlDeviceGetComputeRunningProcesses(handle: int) -> list[object]:
    return []  # the fake card sees no process


def nvmlDeviceGetMPSComputeRunningProcesses(handle: int) -> list[object]:
    return []
