"""Failover and availability of Gaia's replicas (issue 21).

Run ``.venv/bin/python bench/ha.py`` from the repository root (``--kills`` for the number of
failovers, default 20). It needs PostgreSQL and HAProxy from Debian (``scripts/test.sh``
installs both).

In one run, on one PostgreSQL server:

1. **Failover.** Three ``gaia up`` replicas (``tests/support/replicas.py``). ``--kills`` times:
   find the replica that leads the ``controllers`` loop group (its ``/metrics``), ``SIGKILL``
   it, and time until another replica says it leads; then start the killed one again. Beside it
   the same with a clean stop (``SIGTERM``: the leader releases its leases) and the bound the
   design promises (lease time to live + a follower's retry period, ``docs/ha.md``).
2. **Availability during a rolling restart.** HAProxy in front of the replicas, health-checking
   ``/api/readyz`` every 500 ms and retrying a refused connection on another server, as a
   platform team would run it. Four clients send authenticated reads (``GET
   /api/v1/businesses``) through it without pause while the replicas are restarted one at a
   time (stop, start, wait until ready). Beside it: the same with a single replica behind the
   same HAProxy, restarted once. Printed: requests sent, answered (2xx), share answered, and
   the longest time no request was answered (a refused request is answered at once, so the
   share alone flatters an outage).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from gaia.controllers.leadership import RETRY_S
from gaia.settings import Settings
from tests.support.postgres import PostgresServer, find_bin_dir
from tests.support.replicas import ReplicaSet, free_port

ADMIN_PASSWORD = "ha-bench-password-1"
METRICS_TOKEN = "ha-bench-metrics-1"
SECRET_KEY = "Z2FpYS1oYS1iZW5jaC1zZWNyZXQta2V5LTMyYnl0ZXM="


def replica_set(url: str, work: Path, count: int) -> ReplicaSet:
    env = {
        "GAIA_DATABASE_URL": url,
        "GAIA_SECRET_KEY": SECRET_KEY,
        "GAIA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GAIA_METRICS_TOKEN": METRICS_TOKEN,
    }
    rs = ReplicaSet(work=work, env=env, metrics_token=METRICS_TOKEN)
    first, *others = rs.add(count)
    first.start()
    first.wait_ready()
    for replica in others:
        replica.start()
    for replica in others:
        replica.wait_ready()
    return rs


def failovers(rs: ReplicaSet, kills: int, *, clean: bool) -> list[float]:
    took = []
    for _ in range(kills):
        leader = None
        deadline = time.monotonic() + 60
        while leader is None and time.monotonic() < deadline:
            leader = rs.leader_of("controllers")
            time.sleep(0.1)
        if leader is None:
            raise SystemExit("no replica leads the controllers")
        began = time.monotonic()
        leader.stop() if clean else leader.kill()
        while True:
            now = rs.leader_of("controllers")
            if now is not None and now is not leader:
                took.append(time.monotonic() - began)
                break
            if time.monotonic() - began > 120:
                raise SystemExit("no new leader within 120 s")
            time.sleep(0.05)
        leader.start()
        leader.wait_ready()
    return took


HAPROXY = """global
    maxconn 1000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    retry-on conn-failure empty-response response-timeout 503
frontend api
    bind 127.0.0.1:{port}
    default_backend gaia
backend gaia
    balance roundrobin
    option httpchk GET /api/readyz
    default-server inter 500ms fall 1 rise 1
{servers}
"""


def through_haproxy(rs: ReplicaSet, work: Path) -> tuple[int, int, float]:
    """Requests sent and answered while the replicas are restarted one at a time, and the
    longest time without an answered request."""
    port = free_port()
    servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port} check" for r in rs.replicas)
    config = work / f"haproxy-{len(rs.replicas)}.cfg"
    config.write_text(HAPROXY.format(port=port, servers=servers))
    haproxy = subprocess.Popen(["haproxy", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/api/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("HAProxy did not come up")
            time.sleep(0.2)
        time.sleep(1.5)  # every server checked up at least once
        token = httpx.post(
            f"{base}/api/v1/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            timeout=10,
        ).json()["token"]
        stop = threading.Event()
        counts = {"sent": 0, "ok": 0}
        last_ok = [time.monotonic()]
        gap = [0.0]
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
            ) as c:
                while not stop.is_set():
                    try:
                        ok = c.get("/api/v1/businesses").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    with lock:
                        counts["sent"] += 1
                        counts["ok"] += ok
                        if ok:
                            now = time.monotonic()
                            gap[0] = max(gap[0], now - last_ok[0])
                            last_ok[0] = now

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        for replica in rs.replicas:
            replica.stop()
            replica.start()
            replica.wait_ready()
            time.sleep(1.5)  # HAProxy sees it up again before the next one goes
        stop.set()
        for t in threads:
            t.join()
        return counts["sent"], counts["ok"], gap[0]
    finally:
        haproxy.terminate()
        haproxy.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args(argv)
    bin_dir = find_bin_dir()
    if bin_dir is None or shutil.which("haproxy") is None:
        raise SystemExit("bench/ha.py needs PostgreSQL and HAProxy (scripts/test.sh installs them)")
    ttl = Settings().leader_lease_seconds
    work = Path(tempfile.mkdtemp(prefix="gaia-ha-bench-"))
    pg = PostgresServer(bin_dir)
    pg.start()
    try:
        rs = replica_set(pg.create_database("gaia_ha"), work / "three", 3)
        try:
            killed = failovers(rs, args.kills, clean=False)
            stopped = failovers(rs, max(3, args.kills // 4), clean=True)
            three = through_haproxy(rs, work)
        finally:
            rs.stop()
        single = replica_set(pg.create_database("gaia_ha_single"), work / "one", 1)
        try:
            one = through_haproxy(single, work)
        finally:
            single.stop()
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Failover of the 'controllers' loop group, 3 replicas on PostgreSQL (lease {ttl:g} s)")
    print("| how the leader goes | runs | median s | max s | bound s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| SIGKILL | {len(killed)} | {statistics.median(killed):.1f} | {max(killed):.1f} "
        f"| {ttl + RETRY_S:g} (lease + retry) |"
    )
    print(
        f"| clean stop (SIGTERM) | {len(stopped)} | {statistics.median(stopped):.1f} "
        f"| {max(stopped):.1f} | {RETRY_S:g} (retry) |"
    )
    print()
    print("API reads through HAProxy while every replica is restarted in turn")
    print("| replicas | requests | answered | share answered | longest time unanswered |")
    print("|---|---:|---:|---:|---:|")
    for label, (sent, ok, gap) in (("3 (rolling)", three), ("1 (restarted)", one)):
        print(f"| {label} | {sent:,} | {ok:,} | {100 * ok / max(sent, 1):.2f} % | {gap:.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
