"""Server CPU per request of two checkouts of Gaia, measured interleaved on one machine.

A change to the API's per-request work (a worker hop, a middleware, a dependency) moves the
server's CPU per request by a few percent, less than ``bench/api.py`` varies from one run to the
next on a shared machine. So this runs both servers at once (``gaia up`` on SQLite, as
``bench/api.py`` starts it) and alternates them: per round, each gets the same number of
requests from one sequential keep-alive client, ABBA order, and its process CPU (every thread,
from /proc) is read before and after. The medians of the rounds are compared.

    git worktree add --detach /tmp/before <rev>     # or: git archive <rev> | tar -x -C /tmp/before
    .venv/bin/python bench/api_ab.py --before /tmp/before [--after .] [--kind create]

``--kind``: ``create`` (``POST /businesses``), ``read`` (``GET /businesses/{biz}``), ``floor``
(``GET /api/healthz``: no auth, no database). Both servers run this checkout's virtualenv; only
the ``gaia`` package differs (``PYTHONPATH``). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.api import gaia_server, login, new_client, process_cpu_s  # noqa: E402

WARMUP = 30


def call(client: httpx.Client, kind: str, name: str) -> None:
    if kind == "create":
        r = client.post("/api/v1/businesses", json={"name": name, "display_name": "A/B"})
    elif kind == "read":
        r = client.get("/api/v1/businesses/ab-read")
    else:
        r = client.get("/api/healthz")
    if r.status_code >= 300:
        raise SystemExit(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--after", type=Path, default=ROOT, help="checkout B (default: this one)")
    parser.add_argument("--kind", choices=("create", "read", "floor"), default="create")
    parser.add_argument("--requests", type=int, default=400, help="per server per round")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    for root in (args.before, args.after):
        if not (root / "gaia" / "__init__.py").is_file():
            parser.error(f"{root} holds no gaia package")
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    wall: dict[str, list[float]] = {"before": [], "after": []}
    with contextlib.ExitStack() as stack:
        servers: dict[str, tuple[int, httpx.Client]] = {}
        for tag, root in (("before", args.before), ("after", args.after)):
            pids: list[int] = []
            base, _ = stack.enter_context(
                gaia_server(database_url=None, pids=pids, root=root.resolve())
            )
            client = stack.enter_context(new_client(base_url=base, token=login(base_url=base)))
            call(client, "create", "ab-read")
            servers[tag] = (pids[0], client)
        for rnd in range(args.rounds):
            order = ("before", "after") if rnd % 2 == 0 else ("after", "before")
            for tag in order:
                pid, client = servers[tag]
                for i in range(WARMUP):
                    call(client, args.kind, f"warm-{rnd}-{i}")
                cpu0, wall0 = process_cpu_s(pid), time.perf_counter()
                for i in range(args.requests):
                    call(client, args.kind, f"{tag}-{rnd}-{i}")
                cpu[tag].append((process_cpu_s(pid) - cpu0) / args.requests * 1000)
                wall[tag].append((time.perf_counter() - wall0) / args.requests * 1000)
                print(
                    f"round {rnd} {tag:<6}: server CPU {cpu[tag][-1]:.3f} ms, "
                    f"client wall {wall[tag][-1]:.3f} ms per request",
                    flush=True,
                )
    print(f"\n{args.kind}, {args.rounds} rounds x {args.requests} requests per server, ABBA:")
    for tag, root in (("before", args.before), ("after", args.after)):
        mid_cpu, mid_wall = statistics.median(cpu[tag]), statistics.median(wall[tag])
        print(
            f"  {tag:<6} ({root}): server CPU per request median {mid_cpu:.3f} ms "
            f"(min {min(cpu[tag]):.3f}), client wall median {mid_wall:.3f} ms"
        )
    b, a = statistics.median(cpu["before"]), statistics.median(cpu["after"])
    print(f"  after / before: CPU {a / b:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
