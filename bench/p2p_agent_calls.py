"""The platform's CPU per P2P agent call, with the cluster lookup cached and without.

Run ``.venv/bin/python bench/p2p_agent_calls.py`` from the repository root (``--calls N``,
``--help``). Two real servers (``bench.api.gaia_server``: ``gaia up`` on SQLite), one after the
other, the same in all but ``GAIA_P2P_CLUSTER_CACHE_SECONDS``:

- baseline: ``0``, every agent call reads its cluster in a database session of its own (the
  code before the cache, through the same route);
- Gaia: the default (5 s), the cluster read once and kept.

Each registers a ``sim`` cluster through the API, fetches its cluster-wide agent token, then one
client sends ``--calls`` agent heartbeats (``POST .../p2p/agents``, the agents' commonest call
after ``schedule``, through the same authentication step as all of them) one after another over
a keep-alive connection, after ``--warmup`` uncounted ones. The figure is the server process's
CPU time (user + system, ``/proc/<pid>/stat``) over the counted calls, divided by their number.
``GET /api/healthz`` (the same stack, no authentication, no database) is measured the same way
as the floor. Client CPU is not counted; both run on the same cores, so wall times mean little.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api import gaia_server, login, machine_line  # noqa: E402  (the path above first)

TICK = os.sysconf("SC_CLK_TCK")


def server_pid(data_dir: Path) -> int:
    """The ``gaia up`` process serving ``data_dir`` (found by its command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"up" in cmdline and str(data_dir).encode() in cmdline:
            return int(entry.name)
    raise RuntimeError(f"no gaia up process for {data_dir}")


def cpu_seconds(pid: int) -> float:
    # the fields after the command's name, which is in parentheses and may hold spaces
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def per_call_ms(pid: int, call: Callable[[], None], *, calls: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    before = cpu_seconds(pid)
    for _ in range(calls):
        call()
    return (cpu_seconds(pid) - before) / calls * 1000


def measure(*, cache_seconds: str, calls: int, warmup: int) -> tuple[float, float]:
    """(ms of server CPU per heartbeat, per healthz) on a fresh server."""
    settings = {"GAIA_P2P_CLUSTER_CACHE_SECONDS": cache_seconds}
    with gaia_server(database_url=None, settings=settings) as (base_url, data_dir):
        pid = server_pid(data_dir)
        admin = {"Authorization": f"Bearer {login(base_url=base_url)}"}
        with httpx.Client(base_url=base_url, timeout=30) as client:
            r = client.post(
                "/api/v1/clusters", json={"name": "bench-1", "kind": "sim"}, headers=admin
            )
            r.raise_for_status()
            r = client.get("/api/v1/clusters/bench-1/p2p/agent-token", headers=admin)
            r.raise_for_status()
            agent = {"Authorization": f"Bearer {r.json()['token']}"}
            body = {"node": "n1", "zone": "z1", "address": "10.0.0.1:7001", "upload_slots": 4}

            def heartbeat() -> None:
                client.post(
                    "/api/v1/clusters/bench-1/p2p/agents", json=body, headers=agent
                ).raise_for_status()

            def healthz() -> None:
                client.get("/api/healthz").raise_for_status()

            agent_ms = per_call_ms(pid, heartbeat, calls=calls, warmup=warmup)
            floor_ms = per_call_ms(pid, healthz, calls=calls, warmup=warmup)
    return agent_ms, floor_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    options = parser.parse_args()
    base_agent, base_floor = measure(cache_seconds="0", calls=options.calls, warmup=options.warmup)
    gaia_agent, gaia_floor = measure(cache_seconds="5", calls=options.calls, warmup=options.warmup)
    print(machine_line())
    print(f"server CPU per call, {options.calls} sequential calls after {options.warmup} warmup")
    print(f"{'':34}{'baseline (no cache)':>22}{'Gaia (5 s cache)':>20}")
    print(f"{'POST .../p2p/agents (heartbeat)':34}{base_agent:>19.2f} ms{gaia_agent:>17.2f} ms")
    print(f"{'GET /api/healthz (floor)':34}{base_floor:>19.2f} ms{gaia_floor:>17.2f} ms")
    above = (base_agent - base_floor, gaia_agent - gaia_floor)
    print(f"{'heartbeat above the floor':34}{above[0]:>19.2f} ms{above[1]:>17.2f} ms")
    print(f"heartbeat: {base_agent / gaia_agent:.2f} x less CPU with the cache")


if __name__ == "__main__":
    main()
