"""Bandwidth QoS (issue 19): Gaia's HTB plan against no QoS and static per-pod caps, real tc.

For 2, 4 and 8 instances behind one shaped uplink (``tests/support/qos_bed.py``: network
namespaces on a bridge, iperf3 per pod, Ethernet frame bytes counted where delivered: the unit
HTB and the CNI's TBF account a rate in), with guarantees in the proportion 1:2:3:4 (repeating)
that add up to 70 % of the link and two priority classes (even instances prio 1, odd prio 3),
two traces:

- **all**: everyone sends at once. Printed: guarantee held (min over instances of achieved /
  guaranteed), link use, spare split error (how far the capacity above the guarantees is from
  the split the talk's algorithm asks for: priority class first, then in proportion to
  guarantees; total variation, 0 % = exact), Jain's fairness of achieved / asked, and the
  simulator's prediction next to Gaia's HTB (max |HTB - sim| / link).
- **waves**: instance i starts at i x gap. Printed: guarantee held once each had 1 s to ramp
  up, link use while anyone sends, and the reaction time of each new sender (until a 0.1 s
  sample reaches 90 % of its guarantee; median and max; "never" counts those that did not).

Modes in the same run: ``gaia`` (gaia.node.qos on the uplink), ``none`` (one FIFO), ``static``
(the CNI bandwidth plugin's TBF at each pod's guarantee). Needs root, iproute2, iperf3.

    python -m bench.qos            # about 2.5 minutes (as root)
    python -m bench.qos --quick    # 2 and 4 instances, shorter traces, about 1 minute
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from gaia.domain.qos import QosInstance, jain_fairness, simulate
from tests.support.qos_bed import MODES, QosBed

MBIT = 125_000
SAMPLE_S = 0.1


def instances_for(n: int, bed: QosBed, link: int) -> list[QosInstance]:
    weights = [1 + i % 4 for i in range(n)]
    unit = 0.7 * link / sum(weights)
    return [
        QosInstance(f"p{i}", bed.pods[f"p{i}"].ip, round(w * unit), 1 if i % 2 == 0 else 3)
        for i, w in enumerate(weights)
    ]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def all_at_once(bed: QosBed, insts: list[QosInstance], link: int, seconds: float) -> dict[str, str]:
    rates = bed.run_trace({i.name: 0.0 for i in insts}, duration_s=seconds, sample_s=SAMPLE_S)
    skip = int(1.5 / SAMPLE_S)
    got = {n: mean(r[skip:]) for n, r in rates.items()}
    steps = len(next(iter(rates.values())))
    sim = simulate(
        link=link, instances=insts, demand={i.name: [float(link)] * steps for i in insts}
    )
    ideal = {n: mean(r[skip:]) for n, r in sim.rates.items()}
    g = {i.name: i.guarantee for i in insts}
    ideal_spare = sum(ideal[n] - g[n] for n in g)
    spare_err = sum(abs((got[n] - g[n]) - (ideal[n] - g[n])) for n in g) / (2 * ideal_spare)
    return {
        "held": f"{min(got[n] / g[n] for n in g):.0%}",
        "use": f"{sum(got.values()) / link:.0%}",
        "spare_err": f"{spare_err:.0%}",
        "jain": f"{jain_fairness([got[n] / ideal[n] for n in g]):.3f}",
        "sim_gap": f"{max(abs(got[n] - ideal[n]) for n in g) / link:.0%}",
    }


def waves(bed: QosBed, insts: list[QosInstance], link: int, gap: float) -> dict[str, str]:
    starts = {i.name: k * gap for k, i in enumerate(insts)}
    duration = len(insts) * gap + 2.0
    rates = bed.run_trace(starts, duration_s=duration, sample_s=SAMPLE_S)
    held, reactions, never = [], [], 0
    for inst in insts:
        first = int(starts[inst.name] / SAMPLE_S)
        series = rates[inst.name]
        held.append(mean(series[first + int(1.0 / SAMPLE_S) :]) / inst.guarantee)
        if first == 0:
            continue
        hit = next(
            (k for k in range(first, len(series)) if series[k] >= 0.9 * inst.guarantee), None
        )
        if hit is None:
            never += 1
        else:
            reactions.append((hit - first + 1) * SAMPLE_S)
    busy = range(int(0.5 / SAMPLE_S), len(next(iter(rates.values()))))
    use = mean([sum(r[k] for r in rates.values()) for k in busy]) / link
    react = (f"{statistics.median(reactions):.1f}/{max(reactions):.1f}s" if reactions else "-") + (
        f" never {never}" if never else ""
    )
    return {"held": f"{min(held):.0%}", "use": f"{use:.0%}", "react": react}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 and 4 instances, short traces")
    parser.add_argument("--link-mbit", type=int, default=40, help="the uplink (default 40)")
    args = parser.parse_args(argv)
    sizes = (2, 4) if args.quick else (2, 4, 8)
    seconds, gap = (4.0, 1.0) if args.quick else (6.0, 1.5)
    link = args.link_mbit * MBIT
    print(f"bench/qos.py: uplink {args.link_mbit} Mbit/s, guarantees 1:2:3:4.. = 70 % of it, "
          f"prio 1 (even) / 3 (odd); all at once {seconds:.0f} s (first 1.5 s skipped), "
          f"waves every {gap} s; frame bytes")  # fmt: skip
    header = (
        f"{'n':>2} {'mode':<7}| {'held':>5} {'use':>4} {'spare±':>6} {'Jain':>6} {'HTB-sim':>7} "
        f"| {'held':>5} {'use':>4} {'react med/max':<16}"
    )
    print(f"{'':11}| all at once{'':22}| waves")
    print(header)
    t0 = time.monotonic()
    for n in sizes:
        bed = QosBed("gqob", "10.82.0.1", link * 8).start([f"p{i}" for i in range(n)])
        try:
            insts = instances_for(n, bed, link)
            for mode in MODES:
                bed.shape(mode, insts)
                a = all_at_once(bed, insts, link, seconds)
                w = waves(bed, insts, link, gap)
                gap_text = a["sim_gap"] if mode == "gaia" else "-"
                print(
                    f"{n:>2} {mode:<7}| {a['held']:>5} {a['use']:>4} {a['spare_err']:>6} "
                    f"{a['jain']:>6} {gap_text:>7} | {w['held']:>5} {w['use']:>4} {w['react']:<16}",
                    flush=True,
                )
        finally:
            bed.stop()
    print(f"({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
