#!/usr/bin/env bash
# The GPU node check of issue 16 (bench/gpu_check.py has the details): on a machine with an
# NVIDIA GPU, no kubelet needed, that NVML topology equals `nvidia-smi topo -m`, that MPS limits
# set through gaia.node.vgpu hold in worker processes run with exactly the environment Allocate
# returns (memory, 30/70 shares, a raised limit in the environment), and the overhead at 100 %.
#
#   scripts/gpu-check.sh [--json PATH] [--seconds S]
#
# Needs python3 and torch (pynvml for the NVML topology); Gaia runs from this checkout as source.
# Without a GPU it says so and exits 0. Under 5 minutes on one card.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
