"""A test bed of "machines" on one host: network namespaces on a bridge, links shaped with tc.

``NetBed`` makes a bridge ``<prefix>-br`` (``gateway``/16, 10.77.0.1 by default) in the root
namespace, where the platform listens, and one namespace per host (``add``), joined by a veth
pair. Each link is shaped in both
directions with an HTB class: the host's **uplink** is the egress of its end (``eth0`` inside
its namespace), its **downlink** the egress of the bridge's end. ``run`` starts a process inside
a host's namespace; ``sent(host)`` is the bytes the host has put on its link (the receive
counter of the bridge's end), which is how the bench measures a registry's egress.

Everything is named with the prefix and removed by ``stop()``; ``start()`` first sweeps what a
crashed run left. The kernel's neighbour (ARP) table is one for every namespace, and its default
hard limit (``gc_thresh3``, 1,024 entries) is below what 33 hosts that all talk to each other
need (33 x 32, plus the root namespace's): past it the kernel logs "neighbor table overflow" and
new connections fail or take seconds (seen at N = 32 in bench/p2p.py: peer connects over 3 s,
"All connection attempts failed" to the registry). ``start()`` raises the limits and leaves them
raised: a higher limit harms nothing, and two beds at once (a test beside a bench) would
otherwise lower it under each other. Needs root, ``ip`` and ``tc`` (TESTBED.md: namespaces,
veth, bridges and HTB work on this kernel; ``dummy`` links do not).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BRIDGE_IP = "10.77.0.1"
PREFIX_LEN = 16
# the neighbour table's garbage-collection thresholds a bed needs (the init namespace's)
NEIGH_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")
NEIGH_LIMITS = {"gc_thresh1": 1024, "gc_thresh2": 8192, "gc_thresh3": 16384}


class NetBedUnavailable(RuntimeError):
    """No root, no ``ip``/``tc``, or the kernel refused: the message says which."""


def _ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    argv = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetBedUnavailable(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def _shape(device: str, bits_per_s: int, ns: str | None = None) -> None:
    """An HTB root with one class at ``bits_per_s`` (rate = ceil: no borrowing)."""
    _ip("tc", "qdisc", "replace", "dev", device, "root", "handle", "1:", "htb", "default", "10",
        "r2q", "1000", ns=ns)  # fmt: skip
    rate = f"{bits_per_s}bit"
    _ip("tc", "class", "replace", "dev", device, "parent", "1:", "classid", "1:10", "htb",
        "rate", rate, "ceil", rate, ns=ns)  # fmt: skip


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    outer: str  # the bridge's end of its veth pair (root namespace)


@dataclass
class NetBed:
    prefix: str = "gp2p"
    gateway: str = BRIDGE_IP  # the bridge's address; hosts get the next ones in its /16
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    def start(self) -> NetBed:
        if os.geteuid() != 0:
            raise NetBedUnavailable("network namespaces need root")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise NetBedUnavailable(f"{tool} is not installed (iproute2)")
        self.sweep()
        self._raise_neighbour_limits()
        _ip("ip", "link", "add", self.bridge, "type", "bridge")
        _ip("ip", "addr", "add", f"{self.gateway}/{PREFIX_LEN}", "dev", self.bridge)
        _ip("ip", "link", "set", self.bridge, "up")
        return self

    def sweep(self) -> None:
        """Remove every namespace and link with this prefix (a crashed run's leftovers)."""
        for line in _ip("ip", "netns", "list", check=False).splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(f"{self.prefix}-"):
                _ip("ip", "netns", "del", name, check=False)
        for line in _ip("ip", "-o", "link", "show", check=False).splitlines():
            parts = line.split(":")
            if len(parts) > 1:
                link = parts[1].strip().split("@")[0]
                if link.startswith(f"{self.prefix}-"):
                    _ip("ip", "link", "del", link, check=False)

    def add(self, name: str, *, up_bps: int, down_bps: int) -> Host:
        """A host on the bridge with its own namespace, address and shaped link."""
        index = len(self.hosts) + 2
        if index > 250 * 250:
            raise NetBedUnavailable("too many hosts")
        ip = str(ipaddress.ip_address(self.gateway) + index - 1)
        ns = f"{self.prefix}-{name}"
        outer, inner = f"{self.prefix}-o{index}", f"{self.prefix}-i{index}"
        _ip("ip", "netns", "add", ns)
        _ip("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("ip", "link", "set", inner, "netns", ns)
        _ip("ip", "link", "set", inner, "name", "eth0", ns=ns)
        _ip("ip", "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0", ns=ns)
        _ip("ip", "link", "set", "eth0", "up", ns=ns)
        _ip("ip", "link", "set", "lo", "up", ns=ns)
        _ip("ip", "link", "set", outer, "master", self.bridge)
        _ip("ip", "link", "set", outer, "up")
        _shape("eth0", up_bps, ns=ns)
        _shape(outer, down_bps)
        host = Host(name, ns, ip, outer)
        self.hosts[name] = host
        return host

    def run(self, host: Host, argv: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], **popen)  # type: ignore[call-overload,no-any-return]

    def sent(self, host: Host) -> int:
        """Bytes the host has sent on its link (what the bridge's end received)."""
        return int(Path(f"/sys/class/net/{host.outer}/statistics/rx_bytes").read_text())

    def stop(self) -> None:
        self.sweep()
        self.hosts.clear()

    @staticmethod
    def _raise_neighbour_limits() -> None:
        for name, wanted in NEIGH_LIMITS.items():
            path = NEIGH_SYSCTL / name
            try:
                if int(path.read_text()) < wanted:
                    path.write_text(str(wanted))
            except OSError as exc:
                raise NetBedUnavailable(f"{path}: {exc}") from exc
