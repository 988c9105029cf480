"""One GPU worker process for ``bench/gpu_check.py`` and ``bench/vgpu.py`` (run by
``vgpu_harness``, never by hand): the same fixed PyTorch workload in every case, so that a case
differs from another only by the environment the harness gives the process.

``matmul``: a loop of bf16 ``size``³ matrix products on ``cuda:0``. After a warm-up the worker
writes ``<name>.ready`` in the case directory and waits for ``go`` (which holds the wall-clock
end of the window, the same for every worker of the case), counts the products finished until
then (synchronising every few products) and writes ``<name>.json`` with its TFLOP/s.

``alloc``: allocates 256 MiB (the process works at all), then tries ``--gib`` GiB in one tensor
and reports whether that succeeded or ran out of memory, with the error text; it holds the
memory until ``go``, so that the workers of a case hold theirs at the same time.

Only python3 and torch are needed: this file imports nothing of Gaia.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MIB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("matmul", "alloc"), required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--warmup-s", type=float, default=1.5)
    parser.add_argument("--gib", type=float, default=3.0)
    parser.add_argument("--wait-s", type=float, default=120.0)
    args = parser.parse_args()
    out = args.dir / f"{args.name}.json"
    try:
        result = matmul(args) if args.mode == "matmul" else alloc(args)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        (args.dir / f"{args.name}.ready").touch()
    out.write_text(json.dumps(result))
    return 0


def matmul(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device("cuda:0")
    a = torch.randn(args.size, args.size, device=device, dtype=torch.bfloat16)
    b = torch.randn(args.size, args.size, device=device, dtype=torch.bfloat16)
    c = torch.empty_like(a)
    flops = 2.0 * args.size**3
    start = time.monotonic()
    while time.monotonic() - start < args.warmup_s:
        for _ in range(4):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
    (args.dir / f"{args.name}.ready").touch()
    go = args.dir / "go"
    waited = time.monotonic()
    while not go.exists():
        if time.monotonic() - waited > args.wait_s:
            return {"error": "no go signal"}
        time.sleep(0.005)
    end_wall = float(go.read_text() or 0)
    t0 = time.time()
    done = 0
    while True:
        for _ in range(4):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        done += 4
        now = time.time()
        if now >= end_wall:
            break
    elapsed = now - t0
    return {
        "tflops": done * flops / elapsed / 1e12,
        "products": done,
        "seconds": elapsed,
        "device": torch.cuda.get_device_name(0),
    }


def alloc(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = torch.device("cuda:0")
    small = torch.empty(256 * MIB, dtype=torch.uint8, device=device)
    small.fill_(1)
    torch.cuda.synchronize()
    result: dict[str, Any] = {"small_ok": True, "gib": args.gib}
    big = None
    try:
        big = torch.empty(int(args.gib * 1024) * MIB, dtype=torch.uint8, device=device)
        big.fill_(1)  # touch it: the limit holds on use, not only on reservation
        torch.cuda.synchronize()
        result.update(big_ok=True, error="")
    except torch.cuda.OutOfMemoryError as exc:
        result.update(big_ok=False, error=str(exc).splitlines()[0][:300])
    except RuntimeError as exc:  # an MPS limit may surface as a plain CUDA error
        result.update(big_ok=False, error=str(exc).splitlines()[0][:300])
    # hold what was allocated until every worker of the case has tried: processes of one
    # allocation then hold their memory at the same time
    (args.dir / f"{args.name}.ready").touch()
    waited = time.monotonic()
    while not (args.dir / "go").exists() and time.monotonic() - waited < args.wait_s:
        time.sleep(0.01)
    del big
    return result


if __name__ == "__main__":
    sys.exit(main())
