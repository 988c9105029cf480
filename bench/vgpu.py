"""GPU sharing: throughput of one fixed PyTorch workload natively and under Gaia's enforcement.

Run ``python3 bench/vgpu.py`` from the repository root on a machine with an NVIDIA GPU
(``--json PATH`` to keep the figures, ``--seconds`` for the window, ``--no-calibration`` to skip
the solo points). Without a GPU it says so and exits 0. It takes about 3 minutes.

**Workload.** ``vgpu_worker.py``: a loop of bf16 8192³ matrix products on one card, each worker
its own process; all workers of a case warm up, then measure over the same wall-clock window
(``--seconds``, default 6). Figures are TFLOP/s.

**Cases** (the enforcement is ``gaia.node.vgpu.MpsEnforcement``: one MPS control daemon per
allocation, its limits set before the worker starts; each worker gets exactly the grant's
environment, ``vgpu_harness``):

- ``native``: one worker, no MPS: the baseline every share is measured against.
- ``time-slicing 2x``: two native workers at once (what the stock device plugin's time slicing
  gives), a baseline for sharing.
- ``enforced 100 %``: one allocation of the whole card through MPS (100 cores, the card's memory
  as the limit): the overhead of the enforcement, goal ≤ 0.44 % (GaiaGPU's worst case), against
  the mean of ``native`` measured just before and just after it (their difference is printed as
  the noise of the figure).
- ``enforced 2 x 50``, ``30/70``, ``4 x 25``: allocations of those cores on one card at once.
  *Achieved share* is a worker's part of the case's total throughput (what it got relative to
  its neighbours; asked: its cores / 100); *of native* is its throughput over ``native``.
- ``cooperative 30/70`` (baseline, not enforcement): one shared MPS daemon, the percentages set
  by each client's own ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (the issue's 203 + 447 TFLOP/s
  measurement): what one server would give if containers could be trusted with their limits.
- ``memory``: over-limit allocations tried under MPS memory limits (3 GiB under 2 GiB, the same
  with the limit raised in the client's environment, 5 GiB under 4 GiB) and one within its limit
  (1 GiB under 2 GiB, which must succeed): violations caught / tried.
- ``calibration`` (solo points): one allocation of 25, 30, 50 and 70 cores alone on the card; its
  throughput over native, the curve from which a ``ThreadCalibration`` table is derived.

The claim checked (exit 1 when it fails): 30/70 within 10 points, every violation caught, the
within-limit allocation not refused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import vgpu_harness as h
from vgpu_harness import Worker, container_env, run_case, share_of, tflops

GIB_MIB = 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--no-calibration", action="store_true")
    parser.add_argument("--budget-s", type=float, default=280, help="stop starting cases after")
    parser.add_argument("--dev-root", type=Path, default=Path("/dev"), help="the device nodes")
    args = parser.parse_args()
    reason = h.no_gpu_reason()
    if reason is not None:
        print(f"bench/vgpu.py: {reason}; nothing to measure (exit 0)")
        return 0
    started = time.monotonic()
    h.set_budget(args.budget_s)
    card = h.cards()[0]
    s = args.seconds
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "gpu": card.name,
        "card_memory_mib": card.memory_mib,
        **h.card_facts(card),
        "window_s": s,
        "rows": rows,
    }
    ok = True
    try:
        with h.lab(dev_root=args.dev_root) as lab:
            native = tflops(
                run_case([Worker("n", lab.native_env(card))], root=lab.root, seconds=s)["n"]
            )
            out["native_tflops"] = native

            def row(case: str, asked: list[int], got: dict[str, dict[str, Any]]) -> dict[str, Any]:
                values = [tflops(got[k]) for k in sorted(got)]
                total = sum(values)
                r = {
                    "case": case,
                    "asked": asked,
                    "tflops": values,
                    "total_tflops": total,
                    "achieved_share": [v / total if total > 0 else math.nan for v in values],
                    "of_native": [v / native if native > 0 else math.nan for v in values],
                    "errors": [g["error"] for g in got.values() if "error" in g],
                }
                rows.append(r)
                return r

            full = lab.allocate(
                [share_of(card, cores=100, memory_mib=card.memory_mib)], label="full"
            )
            r100 = row(
                "enforced 100 %",
                [100],
                run_case([Worker("a", container_env(full))], root=lab.root, seconds=s),
            )
            lab.release_all()
            # native again right after: the overhead is against the mean of the two natives
            # around it, and their difference is the noise floor of the figure
            again = tflops(
                run_case([Worker("n", lab.native_env(card))], root=lab.root, seconds=s)["n"]
            )
            bracket = (native + again) / 2
            out["native_tflops_after"] = again
            out["native_drift_pct"] = abs(native - again) / bracket * 100 if bracket else math.nan
            out["overhead_pct"] = (
                (bracket - r100["total_tflops"]) / bracket * 100 if bracket > 0 else math.nan
            )
            env = lab.native_env(card)
            row(
                "time-slicing 2x",
                [100, 100],
                run_case([Worker("a", env), Worker("b", env)], root=lab.root, seconds=s),
            )
            for case, cores in (
                ("enforced 2 x 50", [50, 50]),
                ("enforced 30/70", [30, 70]),
                ("enforced 4 x 25", [25] * 4),
            ):
                grants = [
                    lab.allocate([share_of(card, cores=c, memory_mib=0)], label=f"c{c}")
                    for c in cores
                ]
                workers = [Worker(f"w{i}", container_env(g)) for i, g in enumerate(grants)]
                r = row(case, cores, run_case(workers, root=lab.root, seconds=s))
                if case.endswith("30/70"):
                    ok &= abs(r["achieved_share"][0] - 0.30) <= 0.10
                lab.release_all()
            shared = lab.allocate(
                [share_of(card, cores=100, memory_mib=card.memory_mib)], label="coop"
            )
            coop = [
                Worker(
                    f"w{i}",
                    container_env(shared, extra={"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(p)}),
                )
                for i, p in enumerate((30, 70))
            ]
            row(
                "cooperative 30/70 (not enforced)",
                [30, 70],
                run_case(coop, root=lab.root, seconds=s),
            )
            lab.release_all()
            out["memory"] = memory = measure_memory(lab, card)
            ok &= memory["caught"] == memory["tried"] and memory["within_limit_ok"]
            lab.release_all()
            if not args.no_calibration:
                points = []
                for cores in (25, 30, 50, 70):
                    g = lab.allocate(
                        [share_of(card, cores=cores, memory_mib=0)], label=f"solo{cores}"
                    )
                    t = tflops(
                        run_case([Worker("a", container_env(g))], root=lab.root, seconds=s)["a"]
                    )
                    points.append(
                        {
                            "cores": cores,
                            "tflops": t,
                            "of_native": t / native if native > 0 else math.nan,
                        }
                    )
                    lab.release_all()
                out["calibration"] = points
    except Exception as exc:
        # keep what was measured: one run on the card must say as much as it can
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["trace"] = traceback.format_exc()[-3000:]
        ok = False
    finally:
        out["elapsed_s"] = round(time.monotonic() - started, 1)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2, default=str))
    print_report(out)
    return 0 if ok else 1


def measure_memory(lab: h.Lab, card: h.Card) -> dict[str, Any]:
    two = lab.allocate([share_of(card, cores=25, memory_mib=2 * GIB_MIB)], label="m2")
    four = lab.allocate([share_of(card, cores=25, memory_mib=4 * GIB_MIB)], label="m4")
    raise_env = {"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=64G"}
    got = run_case(
        [
            Worker("over_2g", container_env(two), mode="alloc", gib=3),
            Worker("over_2g_env", container_env(two, extra=raise_env), mode="alloc", gib=3),
            Worker("over_4g", container_env(four), mode="alloc", gib=5),
            Worker("within_2g", container_env(two), mode="alloc", gib=1),
        ],
        root=lab.root,
        seconds=0,
    )
    tries = ("over_2g", "over_2g_env", "over_4g")
    return {
        "tried": len(tries),
        "caught": sum(1 for k in tries if got[k].get("big_ok") is False and got[k].get("small_ok")),
        "within_limit_ok": got["within_2g"].get("big_ok") is True,
        "results": got,
    }


def print_report(out: dict[str, Any]) -> None:
    native = out.get("native_tflops", math.nan)
    print(f"# bench/vgpu.py: {out['gpu']}, {out['date']}, window {out['window_s']:g} s")
    print(f"native (one process, no MPS): {native:.1f} TFLOP/s")
    print(f"{'case':<34} {'asked %':<14} {'TFLOP/s':<24} {'achieved share %':<22} {'of native %'}")
    for r in out["rows"]:
        asked = "/".join(str(a) for a in r["asked"])
        vals = " + ".join(f"{v:.0f}" for v in r["tflops"])
        shares = "/".join(f"{v * 100:.0f}" for v in r["achieved_share"])
        of_native = "/".join(f"{v * 100:.0f}" for v in r["of_native"])
        print(f"{r['case']:<34} {asked:<14} {vals:<24} {shares:<22} {of_native}")
        for e in r["errors"]:
            print(f"    error: {str(e)[:200]}")
    if "overhead_pct" in out:
        print(
            f"overhead of the enforcement at 100 %: {out['overhead_pct']:+.2f} % (goal <= 0.44 %; "
            f"native before {native:.1f}, after {out['native_tflops_after']:.1f} TFLOP/s: "
            f"noise {out['native_drift_pct']:.2f} %)"
        )
    if "memory" in out:
        m = out["memory"]
        print(
            f"memory-limit violations caught / tried: {m['caught']} / {m['tried']}; "
            f"within-limit allocation {'succeeded' if m['within_limit_ok'] else 'REFUSED'}"
        )
    for p in out.get("calibration", []):
        print(f"calibration: {p['cores']} cores alone -> {p['of_native'] * 100:.0f} % of native")
    if "error" in out:
        print(f"ERROR: {out['error']}")
    print(f"({out['elapsed_s']} s)")


if __name__ == "__main__":
    sys.exit(main())
