"""A node's shaped uplink with instances behind it, for the QoS test and ``bench/qos.py``.

On a ``NetBed``: one host ``sink`` (the far side of the uplink: an iperf3 server per instance)
whose downlink, the bridge's end of its veth, is the **node's uplink** at ``link_bps``; and one
host per instance (its pod) with a fast link. Everything the pods send to the sink crosses that
one shaped device, which is where ``gaia.node.qos`` puts its HTB tree (mode ``gaia``). Mode
``none`` leaves the NetBed's single class at the link (one FIFO: TCP decides); mode ``static``
caps each pod at its guarantee with the Kubernetes ``bandwidth`` CNI plugin's TBF
(``/usr/lib/cni/bandwidth``, run as the runtime runs it, when installed; otherwise the same
``tc tbf`` it configures) and leaves the uplink as in ``none``.

What each pod got is counted where it was **delivered**: an iptables rule per pod address in
the sink's INPUT chain (its byte counter; the kernel here has no tc actions to count with), read
every ``sample_s``, so what the bottleneck dropped does not count. Counted in **Ethernet frame
bytes**, the unit HTB and TBF account a rate in: the uplink cuts GSO super-packets into frames
after its qdisc (``gso_max_segs 1``, as a NIC's TSO would on the wire), so the sink sees one
packet per frame and adds its 14-byte header. (Counting the IP bytes of GRO-merged super-packets
instead, as this bed once did, misses 3-4 % of what the shaper sent: the headers of all but one
frame in each.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from gaia.domain.qos import QosInstance, plan_qos
from gaia.node.qos import reconcile_qos
from tests.support.netns import Host, NetBed, NetBedUnavailable

FAST = 1_000_000_000
ETHERNET_HEADER = 14
CNI_BANDWIDTH = "/usr/lib/cni/bandwidth"
MODES = ("gaia", "none", "static")


class QosBedUnavailable(NetBedUnavailable):
    """iperf3 or tc is missing, or the kernel refused; the message says which."""


def _run(argv: list[str], *, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise QosBedUnavailable(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _ifbs() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "ifb"], capture_output=True,
                         text=True).stdout  # fmt: skip
    return {line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line}


@dataclass
class QosBed:
    prefix: str
    gateway: str
    link_bps: int
    bed: NetBed = field(init=False)
    sink: Host = field(init=False)
    pods: dict[str, Host] = field(default_factory=dict)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ifbs: set[str] = field(default_factory=set)  # what the CNI plugin made, removed on stop

    def start(self, names: list[str]) -> QosBed:
        if shutil.which("iperf3") is None:
            raise QosBedUnavailable("iperf3 is not installed (Debian package iperf3)")
        self.bed = NetBed(prefix=self.prefix, gateway=self.gateway).start()
        self.sink = self.bed.add("sink", up_bps=FAST, down_bps=self.link_bps)
        for name in names:
            self.pods[name] = self.bed.add(name, up_bps=FAST, down_bps=FAST)
        # the uplink hands the sink frames, not GSO super-packets (it cuts them after its qdisc,
        # as a NIC's TSO does), so the sink's counters see every frame's headers: HTB and TBF
        # account frames, and a guarantee is measured in what they account
        _run(["ip", "link", "set", self.uplink, "gso_max_segs", "1"])
        ns = ["ip", "netns", "exec", self.sink.ns]
        for pod in self.pods.values():
            _run([*ns, "iptables", "-w", "-A", "INPUT", "-s", f"{pod.ip}/32"])
        return self

    def stop(self) -> None:
        for pod in self.pods.values():
            self._cni("DEL", pod, 0)
        for ifb in self.ifbs:  # the plugin's DEL leaves it when the network has no state
            subprocess.run(["ip", "link", "del", ifb], capture_output=True)
        self.ifbs.clear()
        self._stop_servers()
        self.bed.stop()

    def _stop_servers(self) -> None:
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
        self.servers.clear()

    @property
    def uplink(self) -> str:
        return self.sink.outer

    def shape(self, mode: str, instances: list[QosInstance]) -> str:
        """Put ``mode``'s shaping in place (after clearing the last mode's); returns how."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        subprocess.run(["tc", "qdisc", "del", "dev", self.uplink, "root"], capture_output=True)
        _run(["tc", "qdisc", "add", "dev", self.uplink, "root", "handle", "1:", "htb",
              "default", "10", "r2q", "1000"])  # fmt: skip
        rate = f"{self.link_bps}bit"
        _run(["tc", "class", "replace", "dev", self.uplink, "parent", "1:", "classid", "1:10",
              "htb", "rate", rate, "ceil", rate])  # fmt: skip
        for pod in self.pods.values():
            subprocess.run(["ip", "netns", "exec", pod.ns, "tc", "qdisc", "del", "dev", "eth0",
                            "root"], capture_output=True)  # fmt: skip
            subprocess.run(["tc", "qdisc", "del", "dev", pod.outer, "ingress"], capture_output=True)
        for ifb in self.ifbs:
            subprocess.run(["ip", "link", "del", ifb], capture_output=True)
        self.ifbs.clear()
        if mode == "gaia":
            reconcile_qos(self.uplink, plan_qos(link=self.link_bps // 8, instances=instances))
            return "gaia: HTB on the uplink, u32 on pod addresses"
        if mode == "none":
            return "none: one FIFO at the link"
        how = "tc tbf"
        for inst in instances:
            pod = self.pods[inst.name]
            if self._cni("ADD", pod, inst.guarantee * 8):
                how = "CNI bandwidth plugin"
            else:
                _run(["ip", "netns", "exec", pod.ns, "tc", "qdisc", "replace", "dev", "eth0",
                      "root", "tbf", "rate", f"{inst.guarantee * 8}bit",
                      "burst", str(max(inst.guarantee // 10, 3000)),
                      "latency", "25ms"])  # fmt: skip
        return f"static: per-pod TBF at the guarantee ({how})"

    def _cni(self, command: str, pod: Host, rate_bits: int) -> bool:
        """Run the bandwidth plugin as a runtime would (egress cap on the pod, through an ifb
        on the host's veth end); False when it is not installed."""
        if not os.path.exists(CNI_BANDWIDTH):
            return False
        config = {
            "cniVersion": "0.4.0", "name": f"{self.prefix}-net", "type": "bandwidth",
            "egressRate": rate_bits, "egressBurst": max(rate_bits // 10, 24_000),
            "prevResult": {
                "cniVersion": "0.4.0",
                "interfaces": [{"name": pod.outer},
                               {"name": "eth0", "sandbox": f"/var/run/netns/{pod.ns}"}],
                "ips": [{"version": "4", "address": f"{pod.ip}/16", "interface": 1}],
            },
        }  # fmt: skip
        env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": pod.ns,
               "CNI_NETNS": f"/var/run/netns/{pod.ns}", "CNI_IFNAME": "eth0",
               "CNI_PATH": "/usr/lib/cni"}  # fmt: skip
        before = _ifbs()
        done = subprocess.run([CNI_BANDWIDTH], input=json.dumps(config), env=env,
                              capture_output=True, text=True)  # fmt: skip
        self.ifbs |= _ifbs() - before
        if done.returncode != 0 and command == "ADD":
            raise QosBedUnavailable(f"the CNI bandwidth plugin refused: {done.stdout}{done.stderr}")
        return True

    def delivered(self) -> dict[str, int]:
        """Ethernet frame bytes delivered to the sink so far, per pod: the IP bytes its counter
        saw plus a 14-byte header per packet (each one frame, see ``start``)."""
        out = _run(["ip", "netns", "exec", self.sink.ns, "iptables", "-w", "-L", "INPUT", "-v",
                    "-n", "-x"])  # fmt: skip
        by_ip: dict[str, int] = {}
        for line in out.splitlines()[2:]:
            cols = line.split()
            if len(cols) >= 8:
                by_ip[cols[-2]] = int(cols[1]) + ETHERNET_HEADER * int(cols[0])
        return {name: by_ip.get(pod.ip, 0) for name, pod in self.pods.items()}

    def run_trace(
        self, starts: dict[str, float], *, duration_s: float, sample_s: float = 0.1
    ) -> dict[str, list[float]]:
        """Start each pod's iperf3 client at its offset, all stop at ``duration_s``; returns
        the delivered rate (bytes/s) per pod per sample."""
        clients: list[subprocess.Popen[bytes]] = []
        # fresh servers per trace: a server still finishing the last trace's client would
        # refuse the next one ("server is busy") and the pod would count as starved
        for i, _ in enumerate(self.pods):
            self.servers.append(
                self.bed.run(
                    self.sink,
                    ["iperf3", "-s", "-1", "-p", str(5201 + i)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(0.5)
        pending = sorted(starts.items(), key=lambda kv: kv[1])
        names = list(self.pods)
        rates: dict[str, list[float]] = {n: [] for n in names}
        before = time.monotonic()
        last = self.delivered()
        last_t = (before + time.monotonic()) / 2
        t0 = time.monotonic()
        next_sample = t0 + sample_s
        try:
            while (now := time.monotonic()) < t0 + duration_s:
                while pending and now - t0 >= pending[0][1]:
                    name, offset = pending.pop(0)
                    port = 5201 + names.index(name)
                    clients.append(self.bed.run(
                        self.pods[name],
                        ["iperf3", "-c", self.sink.ip, "-p", str(port),
                         "-t", f"{duration_s - offset + 1:.1f}"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
                time.sleep(max(0.0, next_sample - time.monotonic()))
                next_sample += sample_s
                # the counters are read somewhere inside the iptables call, which takes longer
                # on a busy machine: time them at its midpoint, not at its end (a late end
                # shortens the next sample and inflated rates above the link)
                before = time.monotonic()
                now_bytes = self.delivered()
                now_t = (before + time.monotonic()) / 2
                for n in names:
                    rates[n].append((now_bytes[n] - last[n]) / (now_t - last_t))
                last, last_t = now_bytes, now_t
        finally:
            for client in clients:
                client.terminate()
            for client in clients:
                client.wait(timeout=5)
            self._stop_servers()
        return rates
