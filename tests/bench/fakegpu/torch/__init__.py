"""A FAKE ``torch`` with just what ``bench/vgpu_worker.py`` calls (see README.md).

Memory: a process may hold up to its limit, the smaller of its MPS server's
(``set_default_device_pinned_mem_limit`` in the fake daemon's state, read through
``CUDA_MPS_PIPE_DIRECTORY``) and its own ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``; without a daemon,
the card (140 GiB). Compute: a product takes 1 ms divided by the thread fraction, the smaller of
the server's and the client's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

bfloat16 = "bfloat16"
uint8 = "uint8"
_CARD = 140 << 30
_held = 0


def device(name: str) -> str:
    return name


def _server_state() -> dict[str, Any] | None:
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    state = Path(pipe) / "fake-state.json"
    try:
        return dict(json.loads(state.read_text()))
    except (OSError, ValueError):
        return None


def _bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _limit() -> int:
    limit = _CARD
    state = _server_state()
    if state is not None and "0" in state.get("memory", {}):
        limit = min(limit, _bytes(state["memory"]["0"]))
    client = os.environ.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "")
    for part in client.split(","):
        dev, _, value = part.partition("=")
        if dev.strip() == "0" and value and state is not None:
            limit = min(limit, _bytes(value))  # the client can only lower it
    return limit


def _fraction() -> float:
    state = _server_state()
    if state is None:
        return 1.0
    pct = float(state.get("thread", 100.0))
    client = os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
    if client:
        pct = min(pct, float(client))
    return pct / 100


class Tensor:
    def __init__(self, nbytes: int) -> None:
        global _held
        self.nbytes = 0
        if _held + nbytes > _limit():
            raise cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {nbytes} bytes")
        _held += nbytes
        self.nbytes = nbytes

    def fill_(self, value: int) -> Tensor:
        return self

    def __del__(self) -> None:
        global _held
        _held -= self.nbytes


def randn(*shape: int, device: str = "", dtype: str = "") -> Tensor:
    return Tensor(shape[0] * shape[1] * 2)


def empty(n: int, *, dtype: str = "", device: str = "") -> Tensor:
    return Tensor(n)


def empty_like(t: Tensor) -> Tensor:
    return Tensor(t.nbytes)


def matmul(a: Tensor, b: Tensor, *, out: Tensor) -> Tensor:
    time.sleep(0.001 / _fraction())
    return out


class cuda:
    class OutOfMemoryError(RuntimeError):
        pass

    @staticmethod
    def synchronize() -> None:
        return None

    @staticmethod
    def get_device_name(index: int) -> str:
        return "NVIDIA H200 (fake)"
