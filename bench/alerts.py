"""Alert evaluation and delivery at scale: 10,000 policies over 2,000 series, every cycle.

Run ``.venv/bin/python bench/alerts.py`` from the repository root (``--quick`` for a smoke run,
``--help`` for the sizes). Everything is the platform's own code on SQLite in a temporary folder:

- the embedded metric store holds ``--series`` series of ``gaia_instance_cpu_usage_percent``
  (``--apps`` apps of equal size in one business); every cycle writes a new value for each;
- ``--policies`` enabled policies: 95 % scoped to one app (``business`` + ``app`` matchers,
  thresholds 80-95), 5 % business-wide (every series), for-duration 0 so a breach fires at once;
  each names one webhook channel whose receiver is an HTTP server in this process's threads;
- values sit around 30 %; each cycle ``--spikes`` random series jump to 99 % and the series that
  spiked the cycle before drop back, so every cycle fires and resolves alerts (each spike is
  seen by its app's policies and by every business-wide one).

Per cycle: the evaluator's pass (load policies and silences, one store query per metric, rule
evaluation, records and outbox rows written in one transaction), then delivery passes until the
outbox is empty, and the **ceiling**: a bare httpx client posting as many requests, 16 at a
time, to the same receiver (no database, rendering or signing), measured next to each cycle's
delivery so that a machine whose load changes weighs on both alike: after it in odd cycles,
before it in even ones, each window after a full garbage collection and a pause past the
database's background checkpoint (the evaluator's leftovers are billed to neither side).
Printed, with Gaia's share of the ceiling cycle by cycle and its median: cycle time
(evaluation), transitions, notifications delivered per second beside the ceiling, CPU time of
the process per notification beside the bare client's (the receiver runs in this process: its
share is on both sides), and delivery latency (from the evaluator queueing a notification to
the receiver reading it; median and p99). ``--profile N`` runs cProfile over the delivery
passes and prints the N functions with the most time of their own.

**Baseline**, measured in the same run on the same store and rules: evaluation the way a rule
engine without grouping does it — one store query per policy with that policy's matchers (the
shape of running each rule as its own PromQL query), then the same pure rule code. Only the
evaluation part is compared (no database writes on either side of that line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import gc
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.fernet import Fernet
from sqlalchemy import insert, select

from gaia.clock import RealClock
from gaia.domain.alerts import SeriesValue, evaluate_rule, series_key
from gaia.monitor.alerting.evaluator import AlertEvaluator, policy_rule
from gaia.monitor.metrics.series import Sample
from gaia.platform import Platform
from gaia.settings import Settings
from gaia.store.database import CHECKPOINT_INTERVAL_SECONDS
from gaia.store.models import AlertChannel, AlertNotification, AlertPolicy, Business

METRIC = "gaia_instance_cpu_usage_percent"


class Receiver:
    """Counts webhook calls and when each arrived, by idempotency key."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("X-Gaia-Idempotency-Key", "")
                with receiver.lock:
                    receiver.arrived.setdefault(key, time.time())
                body = b'{"status":"ok"}'
                # one write for head and body: two small writes on a kept-alive connection
                # meet the client's delayed ACK (40 ms a request), which no real server has
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default listen backlog (5) resets bursts of connects

        self.http = Server(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hook"


def setup(platform: Platform, args: argparse.Namespace, receiver: Receiver) -> None:
    now = dt.datetime.now(dt.UTC)
    with platform.db.write_session() as session:
        business = Business(name="alpha")
        session.add(business)
        session.flush()
        channel = AlertChannel(
            business_id=business.id,
            name="hook",
            kind="webhook",
            config_encrypted=platform.secrets.encrypt(json.dumps({"url": receiver.url})),
            rate_limit_per_minute=0,
            enabled=True,
            created_at=now,
            updated_at=now,
        )
        session.add(channel)
        session.flush()
        rng = random.Random(7)
        rows = []
        for i in range(args.policies):
            wide = i % 20 == 0
            matchers = {"business": "alpha"}
            if not wide:
                matchers["app"] = f"app-{rng.randrange(args.apps)}"
            rows.append(
                {
                    "business_id": business.id,
                    "name": f"policy-{i}",
                    "scope": "business" if wide else "app",
                    "matchers": matchers,
                    "metric": METRIC,
                    "comparison": ">",
                    "threshold": float(rng.randrange(80, 96)),
                    "for_seconds": 0,
                    "severity": "warning",
                    "repeat_seconds": 0,
                    "enabled": True,
                    "receiver_ids": [],
                    "group_ids": [],
                    "channel_ids": [channel.id],
                    "templates": {},
                    "summary": "",
                    "description": "",
                    "builtin_key": "",
                    "created_by": "bench",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        session.execute(insert(AlertPolicy), rows)


def series_labels(args: argparse.Namespace) -> list[dict[str, str]]:
    per_app = args.series // args.apps
    return [
        {
            "cluster": "c1",
            "business": "alpha",
            "app": f"app-{i // per_app}",
            "instance": f"app-{i // per_app}-{i % per_app}",
            "node": f"node-{i % 97}",
        }
        for i in range(args.series)
    ]


async def naive_evaluation(platform: Platform, at: float) -> tuple[float, int]:
    """The baseline: one store query per policy, then the same rule code."""
    with platform.db.read_session() as session:
        rules = [policy_rule(p) for p in session.scalars(select(AlertPolicy))]
    started = time.perf_counter()
    transitions = 0
    for rule in rules:
        series = await platform.metric_store.latest(rule.metric, rule.matchers, at=at, lookback=60)
        values = [SeriesValue(series_key(s.labels), s.labels, s.points[-1][1]) for s in series]
        transitions += len(evaluate_rule(rule, values, {}, now=at).transitions)
    return time.perf_counter() - started, transitions


async def bare_http_rate(
    receiver: Receiver, *, count: int, body: bytes, per_sender: bool = False
) -> tuple[float, float]:
    """Requests per second a bare httpx client gets from the same receiver, 16 at a time: the
    ceiling of delivery on this machine (no database, no rendering, no signing); and the
    process's CPU seconds it took. Sixteen senders each post the next request when free, the
    shape of Gaia's delivery (not a task per request waiting on a semaphore, which costs the
    client more: the ceiling would be lower than a bare client can do).

    ``per_sender``: each sender posts on a client of its own instead of all sixteen sharing
    one, as Gaia's delivery does since issue 22 (httpcore's pool rescans every connection at
    every request's start and end, so a shared pool of sixteen costs far more per request).
    This second ceiling isolates Gaia's own work (database, payload, signing) from that."""
    import httpx

    run_tag = time.perf_counter_ns()  # keys unique across the runs of a benchmark
    pending = iter(range(count))  # shared: each request is posted by one sender
    async with contextlib.AsyncExitStack() as stack:
        shared = await stack.enter_async_context(httpx.AsyncClient())
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(limits=httpx.Limits(max_connections=4))
            )
            if per_sender
            else shared
            for _ in range(16)
        ]

        async def sender(client: httpx.AsyncClient) -> None:
            for i in pending:
                r = await client.post(
                    receiver.url,
                    content=body,
                    headers={"X-Gaia-Idempotency-Key": f"bare-{run_tag}-{i}"},
                )
                r.raise_for_status()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sender(c) for c in clients))
        return count / (time.perf_counter() - started), time.process_time() - cpu


async def ceilings(receiver: Receiver, *, count: int) -> list[tuple[float, float]]:
    """Both bare clients' (rate, CPU seconds) for ``count`` requests: one shared client (the
    ceiling), then a client per sender; each after ``settle``."""
    measured = []
    for per_sender in (False, True):
        await settle()
        measured.append(
            await bare_http_rate(receiver, count=count, body=b"x" * 1500, per_sender=per_sender)
        )
    return measured


def count_due(platform: Platform) -> int:
    """Notifications waiting in the outbox: what the next delivery will send."""
    with platform.db.read_session() as session:
        return len(
            session.scalars(
                select(AlertNotification.id).where(
                    AlertNotification.state.in_(("pending", "retrying"))
                )
            ).all()
        )


async def settle() -> None:
    """Let what came before a timed window finish outside it, for Gaia's delivery and the bare
    client alike: a full garbage collection now (the evaluator's pass leaves a heap of young
    objects that a collection inside the window would rescan) and a pause past the database's
    background checkpoint interval (the evaluator's commit wakes it)."""
    gc.collect()
    await asyncio.sleep(CHECKPOINT_INTERVAL_SECONDS + 0.2)


def deliver_s_bare_ratio(delivered: int, deliver_s: float, bare_rate: float) -> float:
    """Gaia's rate over the bare client's."""
    return (delivered / deliver_s) / bare_rate


async def run(args: argparse.Namespace) -> None:
    receiver = Receiver()
    # --profile: cProfile over the delivery passes only (the cycles after the warm-up)
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            secret_key=Fernet.generate_key().decode(),
            demo=False,
        )
        # (worker threads: the platform warns of SQLite writes on the event loop's thread)
        platform = await asyncio.to_thread(Platform.open, settings, clock=RealClock())
        await asyncio.to_thread(setup, platform, args, receiver)
        labels = series_labels(args)
        evaluator = AlertEvaluator(
            db=platform.db, store=platform.metric_store, clock=platform.clock, interval=15
        )
        delivery = platform.notification_delivery()
        delivery.batch = args.batch
        rng = random.Random(11)
        spiked: list[int] = []
        rows = []
        latencies: list[float] = []
        ceiling: list[tuple[int, float, float]] = []  # per cycle: requests, seconds, CPU seconds
        lean: list[tuple[int, float, float]] = []  # the same for the client-per-sender ceiling
        retried: list[str] = []
        naive: list[float] = []
        for cycle in range(args.cycles + 1):
            at = time.time()
            spiked = rng.sample(range(args.series), args.spikes)
            values = [30.0 + 5.0 * rng.random() for _ in labels]
            for i in spiked:
                values[i] = 99.0
            await platform.metric_store.write(
                [Sample(METRIC, lab, v, at) for lab, v in zip(labels, values, strict=True)]
            )
            started = time.perf_counter()
            await evaluator.run_once()
            eval_s = time.perf_counter() - started
            stats = evaluator.last_pass
            due = await asyncio.to_thread(count_due, platform)
            # the ceiling goes first in every other cycle: whichever side runs right after the
            # evaluator would otherwise always be the one its leftovers weigh on
            bare_first = cycle > 0 and cycle % 2 == 0
            if bare_first:
                measured = await ceilings(receiver, count=due)
            await settle()
            sent_before = len(receiver.arrived)
            started = time.perf_counter()
            cpu = time.process_time()
            if profiler is not None and cycle > 0:
                profiler.enable()
            while True:
                await delivery.run_once()
                with platform.db.read_session() as session:
                    left = session.scalar(
                        select(AlertNotification.id)
                        .where(AlertNotification.state.in_(("pending", "retrying", "sending")))
                        .limit(1)
                    )
                if left is None:
                    break
            deliver_s = time.perf_counter() - started
            if profiler is not None:
                profiler.disable()
            deliver_cpu = time.process_time() - cpu
            delivered = len(receiver.arrived) - sent_before
            if cycle == 0:
                continue  # warm-up: the first cycle has no resolves and cold caches
            # the ceiling, next to the cycle's delivery and as many requests, so that a machine
            # whose load changes during the run weighs on both alike
            if not bare_first:
                measured = await ceilings(receiver, count=delivered)
            assert due == delivered, (due, delivered)
            (bare_rate, bare_cpu), (lean_rate, lean_cpu) = measured
            ceiling.append((delivered, delivered / bare_rate, bare_cpu))
            lean.append((delivered, delivered / lean_rate, lean_cpu))
            with platform.db.read_session() as session:
                for key, created, state, attempts, error in session.execute(
                    select(
                        AlertNotification.idempotency_key,
                        AlertNotification.created_at,
                        AlertNotification.state,
                        AlertNotification.attempts,
                        AlertNotification.last_error,
                    ).where(AlertNotification.created_at >= dt.datetime.fromtimestamp(at, dt.UTC))
                ):
                    assert state == "sent", (state, error)
                    if not bare_first:  # else the ceilings' runs are in the wait
                        latencies.append(receiver.arrived[key] - created.timestamp())
                    if attempts > 1:
                        retried.append(error)
            naive_s, _ = await naive_evaluation(platform, at)
            naive.append(naive_s)
            rows.append((eval_s, stats, delivered, deliver_s, deliver_cpu))
            print(
                f"cycle {cycle}: evaluation pass {eval_s * 1000:5.0f} ms "
                f"(rules {stats.rule_seconds * 1000:.0f} ms), "
                f"{stats.transitions} transitions, {delivered} delivered in {deliver_s:.2f} s "
                f"(bare client{', first' if bare_first else ''}: {delivered / bare_rate:.2f} s, "
                f"Gaia at {100 * deliver_s_bare_ratio(delivered, deliver_s, bare_rate):.0f} %); "
                f"baseline evaluation {naive_s * 1000:.0f} ms",
                flush=True,
            )
        platform.db.dispose()
    receiver.http.shutdown()
    bare = sum(c[0] for c in ceiling) / sum(c[1] for c in ceiling)
    bare_cpu_ms = 1000 * sum(c[2] for c in ceiling) / sum(c[0] for c in ceiling)
    lean_all = sum(c[0] for c in lean) / sum(c[1] for c in lean)
    lean_cpu_ms = 1000 * sum(c[2] for c in lean) / sum(c[0] for c in lean)

    eval_med = statistics.median(r[0] for r in rows)
    delivered = sum(r[2] for r in rows)
    deliver_s = sum(r[3] for r in rows)
    transitions = statistics.median(r[1].transitions for r in rows)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    print()
    print(
        f"{args.policies:,} policies over {args.series:,} series ({args.apps} apps), "
        f"{args.spikes} spikes per cycle, {args.cycles} cycles"
    )
    print(f"{'':38} {'Gaia':>12} {'baseline':>12}")
    rules_med = statistics.median(r[1].rule_seconds for r in rows)
    print(
        f"{'rule evaluation per cycle, median':38} {rules_med * 1000:9.0f} ms "
        f"{statistics.median(naive) * 1000:9.0f} ms"
    )
    print(f"{'whole pass incl. records + outbox':38} {eval_med * 1000:9.0f} ms")
    print(f"{'transitions per cycle, median':38} {transitions:12.0f}")
    rate = delivered / deliver_s
    print(
        f"{'notifications delivered per second':38} {rate:12.0f} "
        f"{bare:9.0f}  (bare HTTP client, same receiver: the ceiling here; "
        f"Gaia at {100 * rate / bare:.0f} %)"
    )
    per_cycle = [
        deliver_s_bare_ratio(r[2], r[3], c[0] / c[1]) for r, c in zip(rows, ceiling, strict=True)
    ]
    print(
        f"{'Gaia % of the ceiling, cycle by cycle':38} "
        + ", ".join(f"{100 * x:.0f}" for x in per_cycle)
        + f" (median {100 * statistics.median(per_cycle):.0f} %)"
    )
    per_cycle_lean = [
        deliver_s_bare_ratio(r[2], r[3], c[0] / c[1]) for r, c in zip(rows, lean, strict=True)
    ]
    print(
        f"{'bare client, a client per sender':38} {'':12} {lean_all:9.0f}  "
        f"(Gaia at {100 * rate / lean_all:.0f} %; cycle by cycle "
        + ", ".join(f"{100 * x:.0f}" for x in per_cycle_lean)
        + f", median {100 * statistics.median(per_cycle_lean):.0f} %: Gaia's own work beside "
        "the HTTP client's)"
    )
    cpu_ms = 1000 * sum(r[4] for r in rows) / delivered
    print(
        f"{'CPU ms per notification (process)':38} {cpu_ms:12.2f} {bare_cpu_ms:9.2f}  "
        f"(a client per sender: {lean_cpu_ms:.2f}; receiver included on every side)"
    )
    print(
        f"{'delivery latency median / p99':38} "
        f"{statistics.median(latencies) * 1000:6.0f}/{p99 * 1000:.0f} ms  "
        "(cycles where delivery goes first)"
    )
    print(f"{'notifications sent more than once':38} {len(retried):12d}")
    if profiler is not None:
        print("\nprofile of the delivery passes (this process's threads are not in it):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    print(
        "(baseline: one store query per policy, then the same rule code; the whole pass adds "
        "loading policies and silences and writing records and outbox rows in one transaction)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--series", type=int, default=2_000)
    parser.add_argument("--apps", type=int, default=200)
    parser.add_argument("--spikes", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="1,000 policies, 2 cycles")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile the delivery passes (cProfile) and print the N functions with the most "
        "time of their own",
    )
    args = parser.parse_args()
    if args.quick:
        args.policies, args.cycles = 1_000, 2
    # the receiver listens on loopback, which the egress guard (gaia.egress) refuses unless a
    # platform admin allows it: allowed here, as an admin would, for this process only
    os.environ["GAIA_EGRESS_ALLOW_CIDRS"] = "127.0.0.1/32"
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
