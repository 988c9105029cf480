"""A FAKE ``nvidia-smi`` for one card (see README.md): ``-L``, ``--query-gpu`` and ``topo -m``
(the recorded output of a driver-580 one-GPU machine)."""

from __future__ import annotations

import sys
from pathlib import Path

UUID = "GPU-fa4e0000-0000-0000-0000-000000000000"
TOPO = Path(__file__).resolve().parents[2] / "fixtures" / "topology" / "driver580_one_gpu_ansi.txt"

FIELDS = {
    "index": "0",
    "uuid": UUID,
    "name": "NVIDIA H200",
    "memory.total": "143771",
    "compute_mode": "Default",
    "driver_version": "580.95.05",
}

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:2] == ["-i", "0"]:
        args = args[2:]
    if args == ["-L"]:
        print(f"GPU 0: NVIDIA H200 (UUID: {UUID})")
    elif args and args[0].startswith("--query-gpu="):
        print(", ".join(FIELDS[f] for f in args[0].partition("=")[2].split(",")))
    elif args == ["topo", "-m"]:
        sys.stdout.write(TOPO.read_text())
    else:
        print(f"fake nvidia-smi: {args} not modelled", file=sys.stderr)
        sys.exit(2)
