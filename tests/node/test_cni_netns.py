"""``gaia-cni`` on "nodes" that are network namespaces joined by a bridge underlay (NetBed), run
as a runtime runs it: the real plugin as a subprocess in the node's namespace, the CNI variables
in its environment, the configuration on stdin, a fresh network namespace per sandbox, Debian's
``bridge``/``static``/``host-local``/``portmap`` plugins under it, and Gaia's API served on the
underlay's gateway.

Each node has an underlay bridge ``ul0`` holding its ``eth0`` (the node's address moves onto
the bridge), as a node prepared for floating IPs has. Floating IPs come from the pool of the
underlay subnet 10.80.0.0/16; NAT sandboxes sit on a node-private bridge behind the node's
address.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.platform import Platform
from tests.conftest import ADMIN_PASSWORD, QUOTA
from tests.support.live import serve
from tests.support.netns import Host, NetBed, NetBedUnavailable
from tests.support.paths import REPO

GATEWAY = "10.80.0.1"  # not the other beds' 10.77-10.79/16: they may run on this machine
SUBNET = "10.80.0.0/16"
CNI_PATH = "/usr/lib/cni"
PREFIX = "gcni"


@pytest.fixture
def database_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "gaia.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@dataclass
class Answer:
    code: int
    body: dict[str, Any] | None
    stderr: str

    @property
    def ip(self) -> str:
        assert self.code == 0 and self.body is not None, (self.body, self.stderr)
        return str(self.body["ips"][0]["address"]).split("/")[0]


@dataclass
class Galaxy:
    bed: NetBed
    nodes: dict[str, Host]
    origin: str
    admin: dict[str, str]
    work: Path

    def conf(self, node: Host, **over: Any) -> dict[str, Any]:
        index = int(node.name[1:])
        conf: dict[str, Any] = {
            "cniVersion": "1.1.0",
            "name": "gaia",
            "type": "gaia-cni",
            "mode": "app",  # the instance's app decides; pods of no app: floating-ip
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
                "subnet": f"172.31.{index}.0/24",
                "nodeIP": node.ip,
                "hostPortRange": "31000-31999",
            },
        }
        conf.update(over)
        return conf

    def start(
        self,
        node: Host,
        command: str,
        sandbox: str,
        *,
        pod: str | None = None,
        mode: str | None = None,
        ports: str = "",
        conf: dict[str, Any] | None = None,
    ) -> subprocess.Popen[bytes]:
        args = ["IgnoreUnknown=1"]
        if pod:
            args += ["K8S_POD_NAMESPACE=alpha", f"K8S_POD_NAME={pod}"]
        if mode:
            args.append(f"GAIA_NETWORK_MODE={mode}")
        if ports:
            args.append(f"GAIA_PORTS={ports}")
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(REPO),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": sandbox,
            "CNI_NETNS": f"/var/run/netns/{sandbox}" if command in ("ADD", "DEL", "CHECK") else "",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_PATH,
            "CNI_ARGS": ";".join(args),
        }
        process = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, sys.executable, "-P", "-m", "gaia.node.cni"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(conf or self.conf(node)).encode())
        process.stdin.close()
        return process

    def call(self, node: Host, command: str, sandbox: str, **kw: Any) -> Answer:
        return finish(self.start(node, command, sandbox, **kw))

    def sandbox(self) -> str:
        """A sandbox's network namespace, made as a runtime makes it (named with the bed's
        prefix, so the bed's sweep removes what a failed test leaves)."""
        name = f"{PREFIX}-s{uuid.uuid4().hex[:10]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        return name

    def add(self, node: Host, pod: str, **kw: Any) -> tuple[str, Answer]:
        sandbox = self.sandbox()
        return sandbox, self.call(node, "ADD", sandbox, pod=pod, **kw)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.origin, headers=self.admin, timeout=30)


def finish(process: subprocess.Popen[bytes]) -> Answer:
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.read(), process.stderr.read()
    code = process.wait(timeout=120)
    return Answer(code, json.loads(out) if out.strip() else None, err.decode())


def in_ns(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
    )


# ICMP echo over a raw socket (this machine has no ping binary): exit 0 when the reply came
PING = (
    "import os,socket,struct,sys\n"
    "def csum(b):\n"
    "    s=sum(struct.unpack('!%dH' % (len(b)//2), b)); s=(s>>16)+(s&0xffff); s+=s>>16\n"
    "    return ~s & 0xffff\n"
    "ident=os.getpid() & 0xffff\n"
    "body=struct.pack('!BBHHH',8,0,0,ident,1)+b'gaia-cni'\n"
    "packet=body[:2]+struct.pack('!H',csum(body))+body[4:]\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP); s.settimeout(2)\n"
    "s.sendto(packet,(sys.argv[1],0))\n"
    "while True:\n"
    "    data,(src,_)=s.recvfrom(2048); icmp=data[(data[0]&15)*4:]\n"
    "    if src==sys.argv[1] and icmp[0]==0 and struct.unpack('!H',icmp[4:6])[0]==ident:\n"
    "        sys.exit(0)\n"
)


def ping(ns: str, ip: str) -> bool:
    return in_ns(ns, sys.executable, "-c", PING, ip).returncode == 0


ECHO = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(8); print('ready', flush=True)\n"
    "while True:\n"
    "    c,_=s.accept(); c.sendall(sys.argv[2].encode()); c.close()\n"
)
CONNECT = (
    "import socket,sys\n"
    "c=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
    "print(c.recv(100).decode())\n"
)


def serve_tcp(ns: str, port: int, word: str) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", ECHO, str(port), word],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    return server


def tcp(ns: str, ip: str, port: int) -> str:
    done = in_ns(ns, sys.executable, "-c", CONNECT, ip, str(port))
    return done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr[-300:]}"


def _underlay(node: Host) -> None:
    """The node's address moves from eth0 onto bridge ul0, which holds eth0."""
    for argv in (
        ["ip", "link", "add", "ul0", "type", "bridge"],
        ["ip", "addr", "del", f"{node.ip}/16", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "master", "ul0"],
        ["ip", "addr", "add", f"{node.ip}/16", "dev", "ul0"],
        ["ip", "link", "set", "ul0", "up"],
        ["ip", "route", "add", "default", "via", GATEWAY],
    ):
        done = in_ns(node.ns, *argv)
        assert done.returncode == 0, (argv, done.stderr)


@pytest.fixture
def galaxy(platform: Platform, tmp_path: Path) -> Iterator[Galaxy]:
    if not Path(CNI_PATH, "bridge").is_file() or shutil.which("iptables") is None:
        pytest.fail(
            "needs containernetworking-plugins and iptables (scripts/test.sh installs them)"
        )
    try:
        bed = NetBed(prefix=PREFIX, gateway=GATEWAY).start()
    except NetBedUnavailable as exc:
        pytest.fail(f"the network test bed cannot start: {exc}")
    try:
        nodes = {}
        for name in ("n1", "n2", "n3"):
            nodes[name] = bed.add(name, up_bps=10**9, down_bps=10**9)
            _underlay(nodes[name])
        with serve(platform, host=GATEWAY) as origin, httpx.Client(base_url=origin) as c:
            r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            admin = {"Authorization": f"Bearer {r.json()['token']}"}
            for path, body in (
                ("/api/v1/businesses", {"name": "alpha"}),
                ("/api/v1/clusters", {"name": "sim-1", "kind": "sim", "region": "r", "zone": "z"}),
                (
                    "/api/v1/clusters/sim-1/ip-pools",
                    {
                        "name": "underlay",
                        "subnet": SUBNET,
                        "gateway": GATEWAY,
                        "range_start": "10.80.100.1",
                        "range_end": "10.80.101.250",
                    },
                ),
            ):
                r = c.post(path, json=body, headers=admin)
                assert r.status_code == 201, r.text
            r = c.put("/api/v1/businesses/alpha/quotas/sim-1", json={"hard": QUOTA}, headers=admin)
            assert r.status_code == 200, r.text
            token = c.get("/api/v1/clusters/sim-1/ipam/token", headers=admin).json()["token"]
            (tmp_path / "token").write_text(token)
            yield Galaxy(bed, nodes, origin, admin, tmp_path)
    finally:
        bed.stop()


def test_modes_mix_on_one_node_and_reach_each_other(galaxy: Galaxy) -> None:
    n1, n2, n3 = galaxy.nodes["n1"], galaxy.nodes["n2"], galaxy.nodes["n3"]
    with galaxy.api() as api:  # the NAT app, so that its instance's ports show on its page
        app = {
            "name": "api",
            "cluster": "sim-1",
            "templates": [
                {
                    "name": "v1",
                    "image": "shop/api:1",
                    "resources": {"cpu": 0.1, "memory": 64},
                    "network_mode": "nat",
                    "ports": [{"port": 8080, "name": "http"}],
                }
            ],
            "replicas": 1,
        }
        r = api.post("/api/v1/businesses/alpha/apps", json=app)
        assert r.status_code == 201, r.text
    web0, a = galaxy.add(n1, "web-0")
    web1, b = galaxy.add(n2, "web-1")
    api0, nat = galaxy.add(n1, "api-0")  # NAT with port 8080: what its app's template says
    host = galaxy.call(n1, "ADD", galaxy.sandbox(), pod="probe-0", mode="host")
    assert (a.code, b.code, nat.code, host.code) == (0, 0, 0, 0), (a, b, nat, host)
    assert a.body is not None and a.body["cniVersion"] == "1.1.0"
    assert a.ip.startswith("10.80.10") and b.ip.startswith("10.80.10") and a.ip != b.ip
    assert {i["name"] for i in a.body["interfaces"]} >= {"ul0", "eth0"}
    assert host.body is not None and host.body["ips"] == []
    # underlay to underlay, across nodes, and to the gateway where Gaia listens
    assert ping(web0, b.ip) and ping(web1, a.ip) and ping(web0, GATEWAY)
    # NAT: the mapped host port, reachable from outside the node and from an underlay instance
    with galaxy.api() as api:
        shown = api.get("/api/v1/businesses/alpha/apps/api/network").json()
    assert shown["mode"] == "nat"
    [instance] = shown["items"]
    assert (instance["pod"], instance["ip"], instance["node"]) == ("api-0", n1.ip, "n1")
    host_port = instance["ports"]["8080/tcp"]
    assert 31000 <= host_port <= 31999
    servers = [
        serve_tcp(api0, 8080, "nat"),
        serve_tcp(n1.ns, 9000, "host"),  # a host-mode instance: the node's own network
        serve_tcp(web1, 7000, "underlay"),
    ]
    try:
        assert tcp(n3.ns, n1.ip, host_port) == "nat"  # another node, outside n1
        assert tcp(web1, n1.ip, host_port) == "nat"  # an underlay instance on n2
        assert tcp(web0, n1.ip, 9000) == "host"  # underlay -> host mode
        assert tcp(api0, b.ip, 7000) == "underlay"  # NAT -> underlay (masqueraded)
        assert tcp(n1.ns, b.ip, 7000) == "underlay"  # host -> underlay
    finally:
        for server in servers:
            server.kill()
            server.wait()
    # CHECK with the ADD's result, then DEL twice: the second finds nothing and is no error
    conf = {**galaxy.conf(n1), "prevResult": a.body}
    assert galaxy.call(n1, "CHECK", web0, pod="web-0", conf=conf).code == 0
    for _ in range(2):
        gone = galaxy.call(n1, "DEL", web0, pod="web-0")
        assert (gone.code, gone.body) == (0, None), gone
    assert galaxy.call(n1, "CHECK", web0, pod="web-0", conf=conf).code == 1
    for _ in range(2):
        assert galaxy.call(n1, "DEL", api0, pod="api-0", mode="nat").code == 0
    assert tcp(n3.ns, n1.ip, host_port).startswith("failed")  # the DNAT rule went with it
    with galaxy.api() as api:
        assert api.get("/api/v1/businesses/alpha/apps/api/network").json()["items"] == []


def test_an_instance_moved_to_another_node_keeps_its_ip_and_is_reachable(galaxy: Galaxy) -> None:
    n1, n2, n3 = galaxy.nodes["n1"], galaxy.nodes["n2"], galaxy.nodes["n3"]
    old, first = galaxy.add(n1, "db-0")
    peer, other = galaxy.add(n2, "cache-0")
    assert first.code == other.code == 0
    assert ping(peer, first.ip)  # the peer has the old sandbox's MAC in its ARP cache now
    # the node loses the instance: its sandbox goes, and it starts again on n3
    assert galaxy.call(n1, "DEL", old, pod="db-0").code == 0
    subprocess.run(["ip", "netns", "del", old], check=True)
    new, moved = galaxy.add(n3, "db-0")
    assert moved.code == 0, moved
    assert moved.ip == first.ip
    server = serve_tcp(new, 5432, "moved")
    try:
        deadline = time.monotonic() + 10
        while not ping(peer, moved.ip):  # the gratuitous ARP told the peer the new MAC
            assert time.monotonic() < deadline, "the moved address does not answer"
        assert tcp(peer, moved.ip, 5432) == "moved"
    finally:
        server.kill()
        server.wait()
    with galaxy.api() as api:
        [row] = [
            a
            for a in api.get("/api/v1/clusters/sim-1/ip-pools/underlay/allocations").json()["items"]
            if a["pod"] == "db-0"
        ]
    assert (row["ip"], row["node"], row["held"]) == (first.ip, "n3", True)


def test_a_hundred_concurrent_adds_never_share_an_address(galaxy: Galaxy) -> None:
    nodes = list(galaxy.nodes.values())
    sandboxes = [galaxy.sandbox() for _ in range(100)]

    retries = []

    def one(i: int) -> Answer:
        # as a runtime does: code 11 ("try again later": Gaia busy) is retried
        for _ in range(5):
            # (a hundred plugin processes at once starve the in-process Gaia on a small machine:
            # its answers time out and the ADD is retried, which must give the same address)
            got = finish(galaxy.start(nodes[i % 3], "ADD", sandboxes[i], pod=f"batch-{i}"))
            if got.code == 0 or got.body is None or got.body.get("code") != 11:
                return got
            retries.append(f"{got.body.get('msg', '')} {got.body.get('details', '')}")
        return got

    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(one, range(100)))
    print(f"{len(retries)} ADDs retried after code 11", set(retries))
    failed = [a for a in answers if a.code != 0]
    assert not failed, failed[:3]
    ips = [a.ip for a in answers]
    assert len(set(ips)) == 100, f"{len(set(ips))} addresses, {len(retries)} retries"
    # what the sandboxes really have, read from inside each one
    seen = set()
    for sandbox in sandboxes:
        out = in_ns(sandbox, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        seen.add(out.split()[3].split("/")[0])
    assert seen == set(ips)
    with galaxy.api() as api:
        pool_row = api.get("/api/v1/clusters/sim-1/ip-pools/underlay").json()
    assert pool_row["used"] == 100


def test_gc_lets_go_of_sandboxes_the_runtime_no_longer_has(galaxy: Galaxy) -> None:
    n1 = galaxy.nodes["n1"]
    keep, a = galaxy.add(n1, "keep-0")
    _lost, b = galaxy.add(n1, "lost-0")
    nat, c = galaxy.add(n1, "natty-0", mode="nat", ports="80/tcp")
    assert a.code == b.code == c.code == 0
    conf = {
        **galaxy.conf(n1),
        "cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth0"}],
    }
    assert galaxy.call(n1, "GC", "", conf=conf).code == 0
    with galaxy.api() as api:
        items = api.get("/api/v1/clusters/sim-1/ip-pools/underlay/allocations").json()["items"]
    assert {(i["pod"], i["held"]) for i in items} == {("keep-0", True)}
    assert not (galaxy.work / "state-n1" / "sandboxes" / f"{nat}.json").exists()


def test_gaia_unreachable_is_try_again_later_and_leaves_nothing(galaxy: Galaxy) -> None:
    n1 = galaxy.nodes["n1"]
    down = galaxy.conf(n1)
    down["gaia"] = {**down["gaia"], "url": "http://10.80.0.1:9", "timeoutSeconds": 2}
    sandbox = galaxy.sandbox()
    got = galaxy.call(n1, "ADD", sandbox, pod="web-9", conf=down)
    assert got.code == 1 and got.body is not None
    assert got.body["code"] == 11 and "Gaia is unreachable" in got.body["msg"], got.body
    assert in_ns(sandbox, "ip", "link", "show", "eth0").returncode != 0  # nothing plumbed
    status = galaxy.call(n1, "STATUS", "", conf=down)
    assert status.body is not None and status.body["code"] == 50
    assert galaxy.call(n1, "STATUS", "").code == 0
    version = galaxy.call(n1, "VERSION", "")
    assert version.body == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    old = {**galaxy.conf(n1), "cniVersion": "0.3.1"}
    bad = galaxy.call(n1, "ADD", sandbox, pod="web-9", conf=old)
    assert bad.body is not None and bad.body["code"] == 1
    bad = galaxy.call(n1, "ADD", sandbox, pod="web-9", mode="overlay")
    assert bad.body is not None and bad.body["code"] == 4 and "GAIA_NETWORK_MODE" in bad.body["msg"]
    nameless = galaxy.call(n1, "ADD", sandbox)
    assert nameless.body is not None and nameless.body["code"] == 4
