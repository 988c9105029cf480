"""Where a slow request's time goes, request by request, in the real server on SQLite.

Run ``.venv/bin/python bench/api_trace.py`` from the repository root (``--help`` for the
sizes). ``bench/api.py`` gives the latency; ``bench/api_profile.py`` gives sampled thread time
(py-spy); this one follows each request: the server runs under ``bench/api_trace_hooks.py``,
which stamps every request (the ASGI call, each worker-thread hop, SQLite's writer turn, the
``COMMIT``, the SQL) plus garbage collections, the event loop's lateness and the background
loops' writes, and the client stamps each request's send and answer on the same clock. The
report joins them:

- per phase (1 client or ``--threads`` clients; creates and single reads, like
  ``bench/api.py``): the client's p50/p99, the server's own share (ASGI call to last byte) and
  what lies outside it (the client, the kernel, uvicorn's parsing);
- for creates: the mean of each part of a request over all of them and over the slowest 1 %:
  before the ASGI call, until it asks for the writer turn, waiting for it, holding it (split
  into the route's own thread, the hops back to the loop until the teardown's ``COMMIT``, and
  the ``COMMIT``), after giving it back; the waits for a worker thread and for the loop;
  the garbage collections and the loop's lateness during the request; the background loops'
  turns during its wait;
- the ten slowest creates under concurrency, part by part.

The hooks cost a little per request, so latencies here are a bit above ``bench/api.py``'s;
compare parts, not totals, across the two.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api import (  # noqa: E402  (the path above first)
    business_name,
    gaia_server,
    load_businesses,
    login,
    new_client,
)

HOOKS = ROOT / "bench" / "api_trace_hooks.py"


def drive(
    *,
    base_url: str,
    token: str,
    phase: str,
    clients: int,
    requests: int,
    make: Any,
    numbers: Any,
    warmup: int,
) -> list[dict[str, Any]]:
    """``clients`` clients share ``requests`` requests; each request's (id, send, answer)."""
    lock = threading.Lock()
    done: list[dict[str, Any]] = []
    failures: list[str] = []
    remaining = [requests]
    barrier = threading.Barrier(clients)

    def take() -> int | None:
        with lock:
            if remaining[0] <= 0 or failures:
                return None
            remaining[0] -= 1
            return int(next(numbers))

    def worker() -> None:
        with new_client(base_url=base_url, token=token) as client:
            for _ in range(max(1, warmup // clients)):
                with lock:
                    n = next(numbers)
                method, path, body = make(n)
                client.request(method, path, json=body)
            barrier.wait()
            while (n := take()) is not None:
                method, path, body = make(n)
                bench_id = f"{phase}-{n}"
                t0 = time.monotonic()
                r = client.request(method, path, json=body, headers={"x-bench-id": bench_id})
                t1 = time.monotonic()
                with lock:
                    done.append({"id": bench_id, "t0": t0, "t1": t1, "status": r.status_code})
                    if r.status_code >= 400:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failures:
        raise RuntimeError(f"{phase}: a request failed: {failures[0]}")
    return done


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def parts(
    client: dict[str, Any], server: dict[str, Any], trace: dict[str, Any]
) -> dict[str, float]:
    """One request's time, part by part, in ms (see the module's docstring)."""
    t0, t1 = client["t0"], client["t1"]
    out: dict[str, float] = {"total": t1 - t0}
    hops = [h for h in server["hops"] if "start" in h and "back" in h]
    out["to asgi"] = server["in"] - t0
    out["after sent"] = t1 - server.get("sent", t1)
    out["worker wait"] = sum(h["start"] - h["submit"] for h in hops)
    out["loop wait"] = sum(h["back"] - h["end"] for h in hops)
    out["in threads"] = sum(h["end"] - h["start"] for h in hops)
    out["sql"] = server["sql"]
    turns = [t for t in server["turns"] if "left" in t]
    if turns:
        turn = turns[0]
        ask, got, left = turn["ask"], turn["got"], turn["left"]
        out["until ask"] = ask - server["in"]
        out["turn wait"] = got - ask
        out["held"] = left - got
        holding = next((h for h in hops if h["start"] <= got <= h["end"]), None)
        commit = next((c for c in server["commits"] if got <= c["t0"] <= left), None)
        committing = (
            next((h for h in hops if h["start"] <= commit["t0"] <= h["end"]), None)
            if commit
            else None
        )
        if holding is not None and commit is not None and committing is holding:
            # committed in the route's own thread
            out["held: route"] = commit["t0"] - got
            out["held: hops"] = out["held: teardown"] = 0.0
            out["held: commit"] = commit["t1"] - commit["t0"]
        elif holding is not None and commit is not None and committing is not None:
            out["held: route"] = holding["end"] - got
            out["held: hops"] = committing["start"] - holding["end"]
            out["held: teardown"] = commit["t0"] - committing["start"]
            out["held: commit"] = commit["t1"] - commit["t0"]
        out["after turn"] = server.get("sent", left) - left
        out["ahead"] = float(turn["ahead"])
        out["background held"] = sum(
            overlap(ask, got, b["got"], b.get("left", got))
            for b in trace["background"]
            if b.get("kind") == "turn"
        )
        out["gc while held"] = sum(overlap(got, left, g[0], g[0] + g[1]) for g in trace["gc"])
    out["gc"] = sum(overlap(t0, t1, g[0], g[0] + g[1]) for g in trace["gc"])
    lates = [lag for at, lag in trace["lags"] if t0 <= at <= t1]
    out["loop late max"] = max(lates, default=0.0)
    return {k: (v if k == "ahead" else v * 1000.0) for k, v in out.items()}


def report(*, phases: dict[str, list[dict[str, Any]]], trace: dict[str, Any]) -> None:
    by_id = {r["id"]: r for r in trace["requests"]}
    print(
        f"server: switch interval {trace['switch_interval'] * 1000:.1f} ms; "
        f"{len(trace['gc'])} collections, gen2 {sum(1 for g in trace['gc'] if g[2] == 2)}, "
        f"longest {max((g[1] for g in trace['gc']), default=0) * 1000:.1f} ms; "
        f"loop lateness p99 {pct([x[1] for x in trace['lags']], 0.99) * 1000:.1f} ms"
    )
    heap = trace.get("heap")
    if heap:
        print(
            f"heap at exit: {heap['tracked']} objects tracked by the collector, "
            f"{heap['frozen']} frozen; commonest: "
            + ", ".join(f"{kind} {n}" for kind, n in heap["commonest"][:8])
        )
    long_gc = sorted(trace["gc"], key=lambda g: -g[1])[:5]
    print(
        "longest collections: "
        + ", ".join(f"{d * 1000:.0f} ms (gen {gen})" for _t, d, gen in long_gc)
    )
    bg_turns = [b for b in trace["background"] if b.get("kind") == "turn" and "left" in b]
    if bg_turns:
        holds = [(b["left"] - b["got"]) * 1000 for b in bg_turns]
        threads = sorted({b["thread"] for b in bg_turns})
        print(
            f"background writers: {len(bg_turns)} turns (threads {', '.join(threads)}), "
            f"held p50 {pct(holds, 0.5):.1f} ms, max {max(holds):.1f} ms"
        )
    slow_tables: dict[str, list[dict[str, float]]] = {}
    for phase, done in phases.items():
        rows = [parts(c, by_id[c["id"]], trace) for c in done if c["id"] in by_id]
        totals = [r["total"] for r in rows]
        server = [r["total"] - r["to asgi"] - r["after sent"] for r in rows]
        outside = [r["to asgi"] + r["after sent"] for r in rows]
        print(
            f"\n{phase}: {len(rows)} requests; client p50 {pct(totals, 0.5):.2f} ms, "
            f"p99 {pct(totals, 0.99):.2f} ms, max {max(totals):.1f} ms; server p50 "
            f"{pct(server, 0.5):.2f}, p99 {pct(server, 0.99):.2f} ms; outside the server p50 "
            f"{pct(outside, 0.5):.2f}, p99 {pct(outside, 0.99):.2f} ms"
        )
        rows.sort(key=lambda r: r["total"])
        tail = rows[-max(1, len(rows) // 100) :]
        keys = [k for k in rows[-1] if all(k in r for r in rows)]
        width = max(len(k) for k in keys)
        print(f"  {'part (mean ms)':<{width}}  {'all':>8}  {'slowest 1 %':>11}")
        for key in keys:
            every = statistics.fmean(r[key] for r in rows)
            worst = statistics.fmean(r[key] for r in tail)
            print(f"  {key:<{width}}  {every:8.2f}  {worst:11.2f}")
        slow_tables[phase] = rows[-10:]
    for phase, rows in slow_tables.items():
        if not phase.startswith("create") or phase.endswith("-1"):
            continue
        keys = [k for k in rows[-1] if all(k in r for r in rows)]
        print(f"\n{phase}: the ten slowest, ms")
        print("  " + " | ".join(f"{k[:12]:>12}" for k in keys))
        for r in reversed(rows):
            print("  " + " | ".join(f"{r[k]:12.1f}" for k in keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000, help="requests per phase")
    parser.add_argument("--threads", type=int, default=4, help="concurrent clients")
    parser.add_argument("--businesses", type=int, default=200, help="businesses to load")
    parser.add_argument("--warmup", type=int, default=50, help="uncounted requests per phase")
    parser.add_argument("--keep", type=Path, help="write the server's raw trace here (JSON)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="GAIA_NAME=VALUE",
        help="a setting for the server (repeatable)",
    )
    options = parser.parse_args(argv)
    trace_file = options.keep or Path(tempfile.mkdtemp(prefix="gaia-trace-")) / "trace.json"
    settings = dict(s.split("=", 1) for s in options.setting)
    run_id = f"{int(time.time()) % 100000:05d}"
    phases: dict[str, list[dict[str, Any]]] = {}
    os.environ["BENCH_TRACE_FILE"] = str(trace_file)
    with gaia_server(
        database_url=None, wrapper=(sys.executable, str(HOOKS)), settings=settings
    ) as (base_url, _):
        token = login(base_url=base_url)
        load_businesses(
            base_url=base_url, token=token, count=options.businesses, threads=options.threads
        )

        def read(n: int) -> tuple[str, str, None]:
            return "GET", f"/api/v1/businesses/{business_name(n % options.businesses)}", None

        def create(n: int) -> tuple[str, str, dict[str, str]]:
            body = {"name": f"trace-{run_id}-{n}", "display_name": f"Trace {n}"}
            return "POST", "/api/v1/businesses", body

        numbers = itertools.count()
        for name, make in (("get", read), ("create", create)):
            for clients in (1, options.threads):
                phase = f"{name}-{clients}"
                phases[phase] = drive(
                    base_url=base_url,
                    token=token,
                    phase=phase,
                    clients=clients,
                    requests=options.requests,
                    make=make,
                    numbers=numbers,
                    warmup=options.warmup,
                )
                print(f"[trace] {phase}: {len(phases[phase])} requests", flush=True)
    trace = json.loads(trace_file.read_text())
    report(phases=phases, trace=trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
