"""Gaia's three network modes side by side (issue 19): TCP throughput (iperf3, 1 and 4 streams)
and TCP request/response latency, each beside the host-to-host baseline, in one run.

The paths are made by the real ``gaia-cni`` exactly as ``tests/node/test_cni_netns.py`` makes
them: "nodes" are network namespaces joined by a bridge underlay (``tests/support/netns.py``),
each node's ``eth0`` sits in an underlay bridge ``ul0`` that holds the node's address, Gaia's API
is served on the underlay's gateway, and the plugin runs as a runtime runs it (a subprocess in
the node's namespace, the CNI variables in its environment, the configuration on stdin, a fresh
namespace per sandbox, Debian's bridge/static/host-local/portmap plugins under it)::

    baseline  node n2 ──underlay──► node n1                 (no container: the reference)
    underlay  pod on n2 ─ul0─underlay─ul0─► pod on n1       (floating IPs from Gaia's pool)
    nat       node n2 ──underlay──► n1:hostPort ─DNAT─► pod on n1's private bridge
    host      n2's network ──underlay──► n1's network       (gaia-cni ADD mode=host: nothing
                                                             plumbed, by design the baseline path)

Throughput: ``iperf3 -c`` TCP, the first second omitted (slow start), the receiver's rate.
Latency: a Python client sends 1 byte and waits for it back over one ``TCP_NODELAY``
connection, N times (not ICMP: this machine has no ping binary, and TCP is what services
see); p50 and p99 of those round trips. The bed's links are left unshaped: the bench measures
the path, not a shaper.

**Pairing.** On a busy machine the load drifts within seconds, so each mode's run is paired with
a baseline run made right before or after it (order alternating, modes rotated per round), and
"vs host" is the median over rounds of mode / baseline of its pair (Gbit/s and Gbit per
CPU-second: negative = slower or costlier; latency p50: positive = slower). The absolute
columns are medians over all runs (p50 and p99 over all round trips). The ``host`` row is the
baseline's path by construction (a host-mode instance *is* the node's network): its "vs host"
is the noise floor of the run. All modes live on the same two nodes at once (modes mix on a
node), so n1's netfilter rules (NAT's DNAT, its bridge's masquerade) are there for every path,
as on a real node.

Every sandbox is deleted through the plugin (its DNAT rules and addresses go with it), then
every namespace and link the bench made; ``ip``/``iptables`` are read back afterwards and the
last line says what is left (nothing, unless something is wrong). Ctrl-C and SIGTERM included.

    python bench/network.py            # 8 rounds, 2 s per iperf3 run: about 6 minutes (root)
    python bench/network.py --quick    # 1 round: under a minute, a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from cryptography.fernet import Fernet

from gaia.app import Platform
from gaia.security import hash_password, use_cheap_password_hashing
from gaia.settings import Settings
from gaia.store.models import User
from tests.support.live import serve
from tests.support.netns import Host, NetBed

REPO = Path(__file__).resolve().parents[1]
PREFIX = "gnet"  # not the tests' beds (gcni, gp2p, gp2t, gqos): they may run on this machine
GATEWAY = "10.83.0.1"  # nor their 10.77-10.82/16
SUBNET = "10.83.0.0/16"
CNI_PATH = "/usr/lib/cni"
IPERF_PORT, ECHO_PORT = 5201, 7007
HOST_IPERF_PORT, HOST_ECHO_PORT = 5202, 7008  # the host-mode instance's own ports on n1
PASSWORD = "bench-password"

ECHO = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(8)\n"
    "while True:\n"
    "    c,_=s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
    "    while (d := c.recv(64)): c.sendall(d)\n"
    "    c.close()\n"
)
# warm-up round trips first (ARP, conntrack, the first DNAT lookup), then the measured ones
PROBE = (
    "import json,socket,sys,time\n"
    "c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); out=[]\n"
    "for i in range(200 + int(sys.argv[3])):\n"
    "    t=time.perf_counter_ns(); c.sendall(b'x'); c.recv(64)\n"
    "    if i >= 200: out.append((time.perf_counter_ns()-t)/1000)\n"
    "print(json.dumps(out))\n"
)


class BenchError(RuntimeError):
    """A step of the set-up failed; the message names the step and what it answered."""


def in_ns(ns: str, *argv: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise BenchError(f"{ns}: {' '.join(argv)[:120]}: {done.stderr.strip()[-400:]}")
    return done.stdout


@dataclass(frozen=True, kw_only=True)
class ModePath:
    """One measured path: a client namespace, and the address and ports it dials."""

    mode: str
    how: str
    client_ns: str
    ip: str
    iperf_port: int
    echo_port: int


@dataclass
class Galaxy:
    """The bed: two nodes, Gaia's API on the underlay, the sandboxes the plugin has plumbed."""

    work: Path
    bed: NetBed = field(default_factory=lambda: NetBed(prefix=PREFIX, gateway=GATEWAY))
    nodes: dict[str, Host] = field(default_factory=dict)
    origin: str = ""
    sandboxes: list[tuple[Host, str, dict[str, str]]] = field(default_factory=list)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def conf(self, node: Host) -> dict[str, Any]:
        """``gaia-cni``'s configuration on ``node``, as the netns test writes it."""
        return {
            "cniVersion": "1.1.0",
            "name": "gaia",
            "type": "gaia-cni",
            "mode": "app",
            "dataDir": str(self.work / f"state-{node.name}"),
            "gaia": {
                "url": self.origin,
                "cluster": "sim-1",
                "tokenFile": str(self.work / "token"),
                "node": node.name,
                "timeoutSeconds": 20,
            },
            "underlay": {"bridge": "ul0", "subnet": SUBNET},
            "nat": {
                "bridge": "gnat0",
                "subnet": f"172.30.{node.name[1:]}.0/24",
                "nodeIP": node.ip,
                "hostPortRange": "31000-31999",
            },
        }

    def cni(self, node: Host, command: str, sandbox: str, args: dict[str, str]) -> dict[str, Any]:
        """Run the real plugin in ``node``'s namespace as a runtime does; its result, or raise."""
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(REPO),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": sandbox,
            "CNI_NETNS": f"/var/run/netns/{sandbox}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
            "CNI_ARGS": ";".join(
                [
                    "IgnoreUnknown=1",
                    "K8S_POD_NAMESPACE=alpha",
                    *(f"{k}={v}" for k, v in args.items()),
                ]
            ),
        }
        done = subprocess.run(
            ["ip", "netns", "exec", node.ns, sys.executable, "-P", "-m", "gaia.node.cni"],
            input=json.dumps(self.conf(node)).encode(),
            env=env,
            capture_output=True,
            cwd="/",
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchError(
                f"gaia-cni {command} {args} on {node.name}: {done.stdout!r} {done.stderr!r}"
            )
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def sandbox(self, node: Host, **args: str) -> tuple[str, dict[str, Any]]:
        """A fresh sandbox namespace (named with the bed's prefix, so the sweep finds it) and
        the plugin's ADD result for it."""
        name = f"{PREFIX}-s{uuid.uuid4().hex[:10]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        in_ns(name, "ip", "link", "set", "lo", "up")
        self.sandboxes.append((node, name, args))
        return name, self.cni(node, "ADD", name, args)

    def serve_in(self, ns: str, *, iperf_port: int, echo_port: int) -> None:
        for argv in (
            ["iperf3", "-s", "-p", str(iperf_port)],
            [sys.executable, "-c", ECHO, str(echo_port)],
        ):
            self.servers.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 10
        for port in (iperf_port, echo_port):
            while not in_ns(ns, "ss", "-Hltn", f"sport = :{port}").strip():
                if time.monotonic() > deadline:
                    raise BenchError(f"nothing listens on {ns}:{port}")
                time.sleep(0.05)


def _underlay(node: Host) -> None:
    """As the netns test prepares a node: its address moves from eth0 onto bridge ul0, which
    holds eth0; and the bed's HTB shaping goes (the bench measures paths, not a shaper)."""
    for argv in (
        ["ip", "link", "add", "ul0", "type", "bridge"],
        ["ip", "addr", "del", f"{node.ip}/16", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "master", "ul0"],
        ["ip", "addr", "add", f"{node.ip}/16", "dev", "ul0"],
        ["ip", "link", "set", "ul0", "up"],
        ["ip", "route", "add", "default", "via", GATEWAY],
        ["tc", "qdisc", "del", "dev", "eth0", "root"],
    ):
        in_ns(node.ns, *argv)
    subprocess.run(["tc", "qdisc", "del", "dev", node.outer, "root"], check=True)


def _gaia(origin: str, work: Path) -> None:
    """What the netns test's fixture sets up in Gaia: a business, a sim cluster, the underlay
    pool, a quota, and the cluster's IPAM token in the file the plugin reads."""
    with httpx.Client(base_url=origin, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"username": "admin", "password": PASSWORD})
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        quota = {"cpu": 10, "memory": 10240, "local_disk": 100, "bandwidth": 1000}
        for method, path, body in (
            ("POST", "/api/v1/businesses", {"name": "alpha"}),
            (
                "POST",
                "/api/v1/clusters",
                {"name": "sim-1", "kind": "sim", "region": "r", "zone": "z"},
            ),
            (
                "POST",
                "/api/v1/clusters/sim-1/ip-pools",
                {
                    "name": "underlay",
                    "subnet": SUBNET,
                    "gateway": GATEWAY,
                    "range_start": "10.83.100.1",
                    "range_end": "10.83.100.250",
                },
            ),
            ("PUT", "/api/v1/businesses/alpha/quotas/sim-1", {"hard": quota}),
        ):
            r = c.request(method, path, json=body)
            if r.status_code >= 300:
                raise BenchError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        (work / "token").write_text(c.get("/api/v1/clusters/sim-1/ipam/token").json()["token"])


def build(galaxy: Galaxy) -> list[ModePath]:
    """Plumb the three modes through gaia-cni; the paths to measure, baseline first."""
    n1, n2 = galaxy.nodes["n1"], galaxy.nodes["n2"]
    server_pod, a = galaxy.sandbox(n1, K8S_POD_NAME="web-0")  # mode app, no app: floating IP
    client_pod, b = galaxy.sandbox(n2, K8S_POD_NAME="web-1")
    nat_pod, nat = galaxy.sandbox(
        n1,
        K8S_POD_NAME="api-0",
        GAIA_NETWORK_MODE="nat",
        GAIA_PORTS=f"{IPERF_PORT}/tcp,{ECHO_PORT}/tcp",
    )
    for node, pod in ((n1, "probe-0"), (n2, "probe-1")):
        host = galaxy.sandbox(node, K8S_POD_NAME=pod, GAIA_NETWORK_MODE="host")[1]
        if host.get("ips") != []:
            raise BenchError(f"host mode plumbed something: {host}")
    server_ip = str(a["ips"][0]["address"]).split("/")[0]
    if not server_ip.startswith("10.83.100.") or not b["ips"]:
        raise BenchError(f"floating IPs not from the pool: {a} {b}")
    # the mapped host ports, read from the node's record as the plugin wrote it for Gaia
    saved = json.loads((galaxy.work / "state-n1" / "sandboxes" / f"{nat_pod}.json").read_text())
    mapped = {int(m["containerPort"]): int(m["hostPort"]) for m in saved["mappings"]}
    if not nat.get("ips") or set(mapped) != {IPERF_PORT, ECHO_PORT}:
        raise BenchError(f"NAT result or mappings unexpected: {nat} {saved}")

    galaxy.serve_in(n1.ns, iperf_port=IPERF_PORT, echo_port=ECHO_PORT)  # the baseline's server
    galaxy.serve_in(server_pod, iperf_port=IPERF_PORT, echo_port=ECHO_PORT)
    galaxy.serve_in(nat_pod, iperf_port=IPERF_PORT, echo_port=ECHO_PORT)
    galaxy.serve_in(n1.ns, iperf_port=HOST_IPERF_PORT, echo_port=HOST_ECHO_PORT)
    return [
        ModePath(mode="baseline", how="node n2 -> node n1 (no container)", client_ns=n2.ns,
                 ip=n1.ip, iperf_port=IPERF_PORT, echo_port=ECHO_PORT),
        ModePath(mode="underlay", how="pod on n2 -> pod on n1 (floating IPs)",
                 client_ns=client_pod, ip=server_ip, iperf_port=IPERF_PORT, echo_port=ECHO_PORT),
        ModePath(mode="nat", how="node n2 -> n1:hostPort -> DNAT -> pod", client_ns=n2.ns,
                 ip=n1.ip, iperf_port=mapped[IPERF_PORT], echo_port=mapped[ECHO_PORT]),
        ModePath(mode="host", how="host-mode n2 -> host-mode n1", client_ns=n2.ns, ip=n1.ip,
                 iperf_port=HOST_IPERF_PORT, echo_port=HOST_ECHO_PORT),
    ]  # fmt: skip


@dataclass(frozen=True)
class Run:
    gbit: float  # per second, what the receiver got
    gbit_per_cpu_s: float  # per CPU-second that iperf3's client and server spent (rusage)


def throughput(path: ModePath, *, streams: int, seconds: int) -> Run:
    """One iperf3 run, the first (slow-start) second omitted. The CPU figure is iperf3's own
    (user + system time of both ends, where the kernel does most of a veth path's work in the
    sender's and receiver's system calls): it falls less with the machine's load than Gbit/s."""
    argv = ["iperf3", "-c", path.ip, "-p", str(path.iperf_port), "-t", str(seconds), "-O", "1"]
    for attempt in range(3):  # iperf3's server takes one test at a time and a moment to reset
        try:
            out = in_ns(path.client_ns, *argv, "-P", str(streams), "-J", timeout=seconds + 30)
            end = json.loads(out)["end"]
            gbit = float(end["sum_received"]["bits_per_second"]) / 1e9
            cpu = end["cpu_utilization_percent"]
            busy = (float(cpu["host_total"]) + float(cpu["remote_total"])) / 100
            return Run(gbit, gbit / busy if busy else 0.0)
        except BenchError:
            if attempt == 2:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def round_trips(path: ModePath, *, n: int) -> list[float]:
    out = in_ns(path.client_ns, sys.executable, "-c", PROBE, path.ip, str(path.echo_port), str(n))
    return [float(x) for x in json.loads(out)]


def leftovers() -> list[str]:
    """What the bench made that still exists: namespaces, links, iptables rules of its subnet."""

    def read(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    left = [n for n in read("ip", "netns", "list").split() if n.startswith(f"{PREFIX}-")]
    for line in read("ip", "-o", "link", "show").splitlines():
        link = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if link.startswith(f"{PREFIX}-"):
            left.append(f"link {link}")
    for table in ("nat", "filter"):
        rules = read("iptables", "-t", table, "-S")
        left += [f"iptables {r}" for r in rules.splitlines() if "10.83." in r or "172.30." in r]
    return left


@contextlib.contextmanager
def galaxy_bed() -> Iterator[Galaxy]:
    """The bed with Gaia serving on it; on the way out, every sandbox DEL'd through the plugin,
    every process stopped, every namespace and link removed, whatever failed."""
    use_cheap_password_hashing()
    work = Path(tempfile.mkdtemp(prefix="gaia-net-bench-"))
    galaxy = Galaxy(work)
    platform = None
    try:
        galaxy.bed.start()
        for name in ("n1", "n2"):
            galaxy.nodes[name] = galaxy.bed.add(name, up_bps=10**10, down_bps=10**10)
            _underlay(galaxy.nodes[name])
        settings = Settings(
            data_dir=work / "data",
            database_url=f"sqlite:///{work / 'gaia.db'}",
            secret_key=Fernet.generate_key().decode(),
            demo=False,
        )
        platform = Platform.open(settings)
        with platform.db.write_session() as session:
            session.add(
                User(
                    username="admin", password_hash=hash_password(PASSWORD), is_platform_admin=True
                )
            )
        with serve(platform, host=GATEWAY) as origin:
            galaxy.origin = origin
            _gaia(origin, work)
            try:
                yield galaxy
            finally:
                for server in galaxy.servers:
                    server.kill()
                    server.wait()
                for node, sandbox, args in reversed(galaxy.sandboxes):
                    with contextlib.suppress(BenchError, subprocess.SubprocessError):
                        galaxy.cni(node, "DEL", sandbox, args)
    finally:
        galaxy.bed.stop()  # the sandboxes carry the prefix: the sweep takes them too
        if platform is not None:
            platform.db.dispose()
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Figures:
    """What the rounds measured. ``ratios`` pair each run of a mode with the baseline run made
    just before or after it (same stream count, same moment of the machine's load)."""

    gbit: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    ratios: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    per_cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    per_cpu_ratios: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    rtts: dict[str, list[float]] = field(default_factory=dict)
    p50_ratios: dict[str, list[float]] = field(default_factory=dict)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(
    paths: Sequence[ModePath],
    *,
    rounds: int,
    seconds: int,
    round_trips_n: int,
    streams: Sequence[int],
) -> Figures:
    """Each round measures every mode next to a fresh baseline run (A B, then B A in the next
    pair, modes in a rotated order): on a busy machine the load drifts within seconds, and a
    ratio of two runs made one after the other is what stays comparable."""
    base, modes = paths[0], list(paths[1:])
    got = Figures()
    for r in range(rounds):
        for i, path in enumerate(modes[r % len(modes) :] + modes[: r % len(modes)]):
            pair = (base, path) if (r + i) % 2 == 0 else (path, base)
            for s in streams:
                run = {p.mode: throughput(p, streams=s, seconds=seconds) for p in pair}
                for mode, one in run.items():
                    got.gbit.setdefault((mode, s), []).append(one.gbit)
                    got.per_cpu.setdefault((mode, s), []).append(one.gbit_per_cpu_s)
                mine, ref = run[path.mode], run[base.mode]
                got.ratios.setdefault((path.mode, s), []).append(mine.gbit / ref.gbit)
                got.per_cpu_ratios.setdefault((path.mode, s), []).append(
                    mine.gbit_per_cpu_s / ref.gbit_per_cpu_s
                )
            trips = {p.mode: round_trips(p, n=round_trips_n) for p in pair}
            for mode, rtts in trips.items():
                got.rtts.setdefault(mode, []).extend(rtts)
            p50 = quantile(trips[path.mode], 0.5) / quantile(trips[base.mode], 0.5)
            got.p50_ratios.setdefault(path.mode, []).append(p50)
    return got


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f} %"


def report(paths: Sequence[ModePath], got: Figures, streams: Sequence[int]) -> None:
    """One row per mode: median Gbit/s and p50/p99 round trip over all its runs; "vs host" is
    the median of its paired ratios to the baseline (the baseline's own row has none)."""
    head = [f"{'mode':<9}"]
    for s in streams:
        head += [f"{f'{s}-stream Gbit/s':>16}", f"{'vs host':>8}"]
        head += [f"{'Gbit/CPU-s':>10}", f"{'vs host':>8}"]
    head += [f"{'p50 RTT us':>11}", f"{'vs host':>8}", f"{'p99 RTT us':>11}", "  path"]
    print(" ".join(head))
    for path in paths:
        base = path is paths[0]
        row = [f"{path.mode:<9}"]
        for s in streams:
            ratio = "" if base else pct(statistics.median(got.ratios[path.mode, s]))
            row += [f"{statistics.median(got.gbit[path.mode, s]):>16.2f}", f"{ratio:>8}"]
            ratio = "" if base else pct(statistics.median(got.per_cpu_ratios[path.mode, s]))
            row += [f"{statistics.median(got.per_cpu[path.mode, s]):>10.2f}", f"{ratio:>8}"]
        ratio = "" if base else pct(statistics.median(got.p50_ratios[path.mode]))
        rtts = got.rtts[path.mode]
        row += [f"{quantile(rtts, 0.5):>11.1f}", f"{ratio:>8}", f"{quantile(rtts, 0.99):>11.1f}"]
        print(" ".join(row), f"  {path.how}")
    for s in streams:
        each = "; ".join(
            f"{p.mode} " + " ".join(f"{x:.2f}" for x in got.ratios[p.mode, s]) for p in paths[1:]
        )
        print(f"  {s}-stream paired ratios to the baseline, per round: {each}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round: a smoke run, not a figure")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=2, help="per iperf3 run (+1 s omitted)")
    parser.add_argument("--round-trips", type=int, default=5000, help="per run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.round_trips = 1, 3000
    if os.geteuid() != 0:
        sys.exit("bench/network.py needs root (network namespaces, iptables)")
    for tool in ("iperf3", "iptables", f"{CNI_PATH}/bridge", f"{CNI_PATH}/portmap"):
        if shutil.which(tool) is None and not Path(tool).is_file():
            sys.exit(
                f"{tool} is missing (apt-get install iperf3 iptables containernetworking-plugins)"
            )

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"signal {signum}")  # unwinds through the clean-up

    signal.signal(signal.SIGTERM, terminate)
    streams = (1, 4)
    started = time.monotonic()
    with galaxy_bed() as galaxy:
        paths = build(galaxy)
        got = measure(
            paths,
            rounds=args.rounds,
            seconds=args.seconds,
            round_trips_n=args.round_trips,
            streams=streams,
        )
        print(
            f"{args.rounds} round(s); iperf3 TCP {args.seconds} s (+1 s omitted) per run; "
            f"{args.round_trips} TCP 1-byte round trips per run; "
            f"loadavg {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        report(paths, got, streams)
    left = leftovers()
    took = time.monotonic() - started
    print(f"clean-up: {left or 'nothing left'} ({took:.0f} s in all)")


if __name__ == "__main__":
    main()
