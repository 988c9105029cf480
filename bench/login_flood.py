"""A legitimate login while one address floods ``POST /auth/login`` with wrong passwords.

Run ``.venv/bin/python bench/login_flood.py`` from the repository root (``--quick`` for a smoke
run, ``--help`` for the options). For each backend (SQLite, PostgreSQL) the benchmark:

1. starts the real server as a subprocess, as ``bench/api.py`` does (``gaia up --no-demo`` on a
   free port, with ``GAIA_ADMIN_PASSWORD``; for PostgreSQL a private server from
   ``tests.support.postgres``), with ``GAIA_TRUSTED_PROXIES=127.0.0.1/32``: every client here
   connects from 127.0.0.1, and ``X-Forwarded-For`` names the client the way a reverse proxy
   in front of Gaia would. Address **A** (203.0.113.1) is the attacker, **B** (198.51.100.2)
   the real admin. The server hashes with argon2's production cost (``bench/`` never calls
   ``use_cheap_password_hashing``), so each verified login costs what it costs in production;
2. **baseline**: B logs in as ``admin`` with the right password ``--logins`` times, one at a
   time, with nothing else running: p50 and p99;
3. **under the flood**: ``--threads`` clients send ``--flood`` logins as ``admin`` with wrong
   passwords from A, as fast as the server answers, while B logs in exactly as in the baseline,
   over and over until the flood is done: p50 and p99 of B's logins during the flood, how many
   of A's attempts were verified (401) and how many were refused before argon2 (429), and the
   flood's rate.

Every answer's status is checked: B must always get 200 (an attacker must not lock the admin
out), A only 401 or 429. The two figures are printed side by side; nothing is asserted about
their values. Client and server share the machine: during the flood, A's clients compete with
the server for the CPUs too, as a flood's requests would compete with real work.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from api import (  # bench/api.py: the same server handling and measurements
    BACKEND_TITLES,
    ROOT,
    Run,
    free_port,
    machine_line,
    new_client,
    on_each_backend,
    wait_healthy,
)

ADMIN_PASSWORD = "bench-admin-password-1"
ATTACKER = "203.0.113.1"
ADMIN_ADDRESS = "198.51.100.2"


@dataclass
class BackendResult:
    backend: str
    baseline: Run
    flooded: Run
    flood_codes: Counter[int] = field(default_factory=Counter)
    flood_wall_s: float = 0.0


@contextlib.contextmanager
def gaia_server(*, database_url: str | None) -> Iterator[str]:
    """``gaia up`` of this checkout in a subprocess, behind a "proxy" at 127.0.0.1."""
    data_dir = Path(tempfile.mkdtemp(prefix="gaia-bench-login-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    env.update(
        GAIA_ADMIN_PASSWORD=ADMIN_PASSWORD,
        GAIA_TRUSTED_PROXIES="127.0.0.1/32",
        PYTHONPATH=str(ROOT),
    )
    if database_url:
        from cryptography.fernet import Fernet

        env["GAIA_DATABASE_URL"] = database_url
        env["GAIA_SECRET_KEY"] = Fernet.generate_key().decode()
    log_path = data_dir / "server.log"
    base_url = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gaia", "up", "--no-demo"),
                    *("--port", str(port), "--data-dir", str(data_dir)),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(data_dir),
            )
        wait_healthy(base_url=base_url, proc=proc, log_path=log_path, timeout=90.0)
        yield base_url
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
        shutil.rmtree(data_dir, ignore_errors=True)


def admin_login(client: httpx.Client, run: Run) -> None:
    """One login of the real admin from B, timed into ``run``."""
    t0 = time.perf_counter()
    response = client.post(
        "/api/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"X-Forwarded-For": ADMIN_ADDRESS},
    )
    run.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
    if response.status_code != 200:
        run.errors += 1
        if not run.first_error:
            run.first_error = f"{response.status_code} {response.text[:300]}"


def baseline(*, base_url: str, logins: int, warmup: int) -> Run:
    run = Run()
    with new_client(base_url=base_url, token=None) as client:
        for _ in range(warmup):
            admin_login(client, Run())
        started = time.perf_counter()
        for _ in range(logins):
            admin_login(client, run)
        run.wall_s = time.perf_counter() - started
    return run


def under_flood(
    *, base_url: str, flood: int, threads: int, warmup: int
) -> tuple[Run, Counter[int], float]:
    """B's logins while ``threads`` clients send ``flood`` wrong-password logins from A."""
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    remaining = [flood]
    done = threading.Event()
    failures: list[BaseException] = []

    def attacker() -> None:
        try:
            with new_client(base_url=base_url, token=None) as client:
                while True:
                    with lock:
                        if remaining[0] <= 0:
                            return
                        remaining[0] -= 1
                    response = client.post(
                        "/api/v1/auth/login",
                        json={"username": "admin", "password": "not-the-password"},
                        headers={"X-Forwarded-For": ATTACKER},
                    )
                    with lock:
                        codes[response.status_code] += 1
        except BaseException as exc:  # a dead server must end the run, not hang it
            with lock:
                failures.append(exc)

    run = Run()
    with new_client(base_url=base_url, token=None) as client:
        for _ in range(warmup):
            admin_login(client, Run())
        pool = [threading.Thread(target=attacker, daemon=True) for _ in range(threads)]
        started = time.perf_counter()
        for thread in pool:
            thread.start()

        def wait_for_the_flood() -> None:
            for thread in pool:
                thread.join()
            done.set()

        threading.Thread(target=wait_for_the_flood, daemon=True).start()
        while not done.is_set():
            admin_login(client, run)
        flood_wall = time.perf_counter() - started
        run.wall_s = flood_wall
    if failures:
        raise RuntimeError("an attacker client failed") from failures[0]
    return run, codes, flood_wall


def bench_backend(
    *, backend: str, database_url: str | None, options: argparse.Namespace
) -> BackendResult:
    title = BACKEND_TITLES[backend]
    with gaia_server(database_url=database_url) as base_url:
        base = baseline(base_url=base_url, logins=options.logins, warmup=options.warmup)
        print(
            f"[{title}] baseline: B's login p50 {base.percentile(0.5):.1f} ms, "
            f"p99 {base.percentile(0.99):.1f} ms ({base.count} logins)",
            flush=True,
        )
        flooded, codes, wall = under_flood(
            base_url=base_url, flood=options.flood, threads=options.threads, warmup=options.warmup
        )
        print(
            f"[{title}] during the flood: B's login p50 {flooded.percentile(0.5):.1f} ms, "
            f"p99 {flooded.percentile(0.99):.1f} ms ({flooded.count} logins); "
            f"A: {dict(sorted(codes.items()))} in {wall:.1f} s",
            flush=True,
        )
    return BackendResult(
        backend=backend, baseline=base, flooded=flooded, flood_codes=codes, flood_wall_s=wall
    )


def render(*, results: list[BackendResult], options: argparse.Namespace) -> str:
    head = ["B (the real admin) logs in", "p50 ms", "p99 ms", "max ms", "logins", "not 200"]
    rows = [head]
    for result in results:
        title = BACKEND_TITLES[result.backend]
        for label, run in (
            (f"{title}: no load (baseline)", result.baseline),
            (f"{title}: during A's flood", result.flooded),
        ):
            rows.append(
                [
                    label,
                    f"{run.percentile(0.5):.1f}",
                    f"{run.percentile(0.99):.1f}",
                    f"{run.percentile(1.0):.1f}",
                    str(run.count),
                    str(run.errors),
                ]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line(rows[0]), rule] + [line(r) for r in rows[1:]]
    out += ["", f"machine: {machine_line()}; {load_line()}"]
    for result in results:
        codes = result.flood_codes
        total = sum(codes.values())
        out.append(
            f"{BACKEND_TITLES[result.backend]} flood: {total} wrong-password logins as admin "
            f"from A by {options.threads} clients in {result.flood_wall_s:.1f} s "
            f"({total / result.flood_wall_s:.0f} req/s): {codes.get(401, 0)} verified (401), "
            f"{codes.get(429, 0)} refused before argon2 (429)"
            + (
                f", other: { ({k: v for k, v in codes.items() if k not in (401, 429)}) }"
                if set(codes) - {401, 429}
                else ""
            )
        )
        for run in (result.baseline, result.flooded):
            if run.first_error:
                out.append(f"  first error of B: {run.first_error}")
    out.append(
        f"B: {options.logins} sequential logins for the baseline, as many as fit in the flood "
        f"for the other row (after {options.warmup} warmup logins each); every client connects "
        "from 127.0.0.1 (GAIA_TRUSTED_PROXIES=127.0.0.1/32) and names its address in "
        "X-Forwarded-For. Client and server share the machine."
    )
    return "\n".join(out)


def load_line() -> str:
    """The machine's load averages: on a shared machine, other work moves both figures."""
    one, five, fifteen = os.getloadavg()
    return f"load average at the end {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument("--logins", type=int, default=100, help="B's logins for the baseline")
    parser.add_argument("--flood", type=int, default=10_000, help="A's wrong-password logins")
    parser.add_argument("--threads", type=int, default=4, help="A's concurrent clients")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted logins of B per run")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    options = parser.parse_args(argv)
    if options.quick:
        options.logins, options.flood, options.warmup = 20, 500, 2
    backends = [b.strip() for b in options.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKEND_TITLES for b in backends):
        parser.error(f"--backends: choose from {', '.join(BACKEND_TITLES)}")
    if min(options.logins, options.flood, options.threads) < 1:
        parser.error("--logins, --flood and --threads must be positive")
    options.backend_list = backends
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # A plain SIGTERM would skip the cleanup and leave the server and PostgreSQL running.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    started = time.perf_counter()
    results = on_each_backend(
        options.backend_list,
        lambda backend, url: bench_backend(backend=backend, database_url=url, options=options),
    )
    print()
    print(
        f"Gaia login under a flood, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, "
        f"took {time.perf_counter() - started:.0f} s"
    )
    print(render(results=results, options=options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
