"""Where a request's time goes in the real server: ``gaia up`` under py-spy, one phase at a time.

Run ``.venv/bin/python bench/api_profile.py`` from the repository root (``--help`` for the
sizes). It is the profile behind the SQLite-writer and principal-cache changes
(docs/benchmarks.md, "API: writers and authentication"); ``bench/api.py`` measures the latency.

Each phase starts its own server (``bench.api.gaia_server`` on SQLite, wrapped in
``py-spy record --idle --format raw``), creates the businesses it needs, then drives one kind of
request, so the stacks py-spy keeps belong to that phase only:

- ``read``: one client sends ``GET /api/v1/businesses/{biz}`` one after another (one business,
  created through the API first);
- ``write``: four clients send ``POST /api/v1/businesses`` at the same time.

The report gives, per request, the thread time the server spent in a few places, found by the
frames on the stack (a sample counts once per place, whatever its depth):

- ``auth``: ``current_principal`` (token lookup, principal cache);
- ``writer wait``: the ``BEGIN`` of a write transaction (``_on_begin``): waiting for SQLite's
  write lock, in SQLite's busy handler or in Gaia's queue of writers;
- ``separate record``: ``append_record``, the operation record's own transaction;
- ``serving``: samples of the route threads (anyio's workers) and of the event loop's callbacks
  that are not idle, as a yardstick for the shares above (the one-off password hashing of the
  first admin and the login is left out everywhere).

Sampling is statistical (500 Hz): shares below a few percent are noise. Profiling slows the
server, so latencies from this run mean nothing; ``bench/api.py`` is the clock.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import shutil
import sys
import tempfile
import threading
from pathlib import Path

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

RATE_HZ = 500
PLACES = {
    "auth": ("current_principal",),
    "writer wait": ("_on_begin",),
    "separate record": ("append_record",),
}
# a thread parked here is idle, not serving a request
IDLE_LEAVES = {"_worker", "Condition.wait", "Event.wait", "Runner.run", "select", "sleep"}
# one-offs of a phase's start (the first admin's password hash, the login): not per request
ONE_OFFS = {"hash_secret", "verify_secret"}


def drive_read(*, base_url: str, token: str, businesses: int, requests: int) -> None:
    """One client, one request at a time."""
    with new_client(base_url=base_url, token=token) as client:
        for i in range(requests):
            r = client.get(f"/api/v1/businesses/{business_name(i % businesses)}")
            r.raise_for_status()


def drive_write(*, base_url: str, token: str, requests: int, clients: int) -> None:
    """``clients`` clients at once, sharing ``requests`` creates."""
    numbers = itertools.count()
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        with new_client(base_url=base_url, token=token) as client:
            while True:
                with lock:
                    n = next(numbers)
                if n >= requests:
                    return
                r = client.post("/api/v1/businesses", json={"name": f"profiled-{n}"})
                if r.status_code != 201:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    return

    pool = [threading.Thread(target=worker) for _ in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if failures:
        raise RuntimeError(f"a create failed: {failures[0]}")


def profile_phase(*, phase: str, options: argparse.Namespace, out: Path) -> int:
    """Run ``phase`` against a profiled server; the number of requests it sent."""
    wrapper = (
        shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy"),
        "record",
        "--idle",
        "--format",
        "raw",
        "--rate",
        str(RATE_HZ),
        "--output",
        str(out),
        "--",
    )
    with gaia_server(database_url=None, wrapper=wrapper) as (base_url, _data_dir):
        token = login(base_url=base_url)
        if phase == "read":
            # one business, read over and over: no writes in this phase's profile
            load_businesses(base_url=base_url, token=token, count=1, threads=1)
            drive_read(base_url=base_url, token=token, businesses=1, requests=options.requests)
        else:
            drive_write(
                base_url=base_url, token=token, requests=options.requests, clients=options.clients
            )
    return int(options.requests)


def report(*, path: Path, requests: int) -> dict[str, float]:
    """Thread milliseconds per request in each place, and the ``serving`` yardstick: samples of
    the route threads (anyio's workers) and of the event loop's callbacks that are not idle."""
    samples: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        names = set(frames)
        if not frames or names & ONE_OFFS:
            continue
        n = int(count)
        for place, marks in PLACES.items():
            if any(name.endswith(mark) for name in names for mark in marks):
                samples[place] += n
        if frames[-1] not in IDLE_LEAVES and names & {"WorkerThread.run", "Runner.run"}:
            samples["serving"] += n
    per_request_ms = 1000.0 / RATE_HZ / max(1, requests)
    return {place: samples[place] * per_request_ms for place in [*PLACES, "serving"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1500, help="requests per phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writers")
    parser.add_argument("--keep", type=Path, help="keep the raw py-spy profiles in this folder")
    options = parser.parse_args(argv)
    work = options.keep or Path(tempfile.mkdtemp(prefix="gaia-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(
            "thread time per request in ms (py-spy samples at 500 Hz, --idle), "
            "and its share of 'serving':"
        )
        for phase in ("read", "write"):
            out = work / f"{phase}.raw"
            sent = profile_phase(phase=phase, options=options, out=out)
            shares = report(path=out, requests=sent)
            print(
                f"  {phase:<5} ({sent} requests): "
                + ", ".join(
                    f"{place} {ms:.2f}"
                    + (f" ({100 * ms / shares['serving']:.0f} %)" if place != "serving" else "")
                    for place, ms in shares.items()
                    if shares["serving"] > 0
                ),
                flush=True,
            )
    finally:
        if options.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
