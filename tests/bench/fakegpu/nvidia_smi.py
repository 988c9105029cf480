"""A FAKE ``nvidia-smi`` for one card (see README.md): ``-L``, ``--query-gpu`` and ``topo -m``
(the recorded output of a driver-580 one-GPU machine)."""

from __future__ import annotations

import sys
from pathlib import Path

UUID = "GPU-fa4e0000-0000-0000-0000-000000000000"
TOPO = Path(__file__).resolve().parents[2] / "fixtures" / "topology" / "driver580_one_gpu_ansi.txt"

if __name__ == "__main__":
    args = sys.argv[1:]
    if args == ["-L"]:
        print(f"GPU 0: NVIDIA H200 (UUID: {UUID})")
    elif args and args[0].startswith("--query-gpu="):
        print(f"0, {UUID}, NVIDIA H200, 143771")
    elif args == ["topo", "-m"]:
        sys.stdout.write(TOPO.read_text())
    else:
        print(f"fake nvidia-smi: {args} not modelled", file=sys.stderr)
        sys.exit(2)
