"""Container network modes side by side (issue 19): TCP throughput (iperf3) and TCP request/response
latency between a client "node" namespace and a server, over a veth + bridge underlay on one kernel.

STATUS: partial. Only the bare path (namespace to namespace over the bridge, no plugin: the physical
limit here) is measured yet. The underlay, NAT and host modes through the real ``gaia-cni`` (as
``tests/node/test_cni_netns.py`` drives it, which needs Gaia's API served on the underlay) are
still to be wired in; see the report of the net-bench branch.

Run: ``python bench/network.py [--quick]`` as root. Every namespace and link it makes is removed on
exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid

PREFIX = f"gnb{uuid.uuid4().hex[:4]}"
ECHO = (
    "import socket\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind(('0.0.0.0',7007));s.listen(1);c,_=s.accept()\n"
    "c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\n"
    "while True:\n d=c.recv(64)\n if not d: break\n c.sendall(d)\n"
)


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def ns_run(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def setup() -> tuple[str, str]:
    client, server, br = f"{PREFIX}c", f"{PREFIX}s", f"{PREFIX}br"
    sh("ip", "link", "add", br, "type", "bridge")
    sh("ip", "link", "set", br, "up")
    for ns, ip in ((client, "10.81.0.2"), (server, "10.81.0.3")):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", f"{ns}h", "type", "veth", "peer", "name", f"{ns}n")
        sh("ip", "link", "set", f"{ns}n", "netns", ns)
        sh("ip", "link", "set", f"{ns}h", "master", br, "up")
        sh(*ns_run(ns, "ip", "addr", "add", f"{ip}/24", "dev", f"{ns}n"))
        sh(*ns_run(ns, "ip", "link", "set", f"{ns}n", "up"))
        sh(*ns_run(ns, "ip", "link", "set", "lo", "up"))
    return client, server


def cleanup() -> None:
    for ns in (f"{PREFIX}c", f"{PREFIX}s"):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", f"{PREFIX}br"], capture_output=True)


def throughput(client: str, server: str, ip: str, *, seconds: int, reps: int) -> float:
    srv = subprocess.Popen(ns_run(server, "iperf3", "-s", "-p", "5301"), stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        runs = []
        for _ in range(reps):
            out = sh(*ns_run(client, "iperf3", "-c", ip, "-p", "5301", "-t", str(seconds), "-J"))
            runs.append(float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9)
        return statistics.median(runs)
    finally:
        srv.terminate()
        srv.wait()


def latency(client: str, server: str, ip: str, *, n: int) -> tuple[float, float]:
    srv = subprocess.Popen(ns_run(server, sys.executable, "-c", ECHO))
    try:
        time.sleep(0.5)
        probe = (
            "import socket,time,json,sys\n"
            f"c=socket.create_connection(('{ip}',7007));"
            "c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\nr=[]\n"
            f"for _ in range({n}):\n t=time.perf_counter_ns();c.sendall(b'x');c.recv(64)\n"
            " r.append((time.perf_counter_ns()-t)/1000)\nprint(json.dumps(r))\n"
        )
        rtts = sorted(json.loads(sh(*ns_run(client, sys.executable, "-c", probe))))
        return rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)]
    finally:
        srv.kill()
        srv.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds, reps, n = (2, 1, 2000) if args.quick else (5, 3, 20000)
    try:
        client, server = setup()
        gbit = throughput(client, server, "10.81.0.3", seconds=seconds, reps=reps)
        p50, p99 = latency(client, server, "10.81.0.3", n=n)
        print(f"{'mode':<10} {'Gbit/s':>8} {'p50 us':>8} {'p99 us':>8}")
        print(f"{'bare':<10} {gbit:>8.2f} {p50:>8.1f} {p99:>8.1f}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
