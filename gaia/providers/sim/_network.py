"""Addresses in a simulated cluster: host IPs, a pod range per node, service IPs.

The plan is fixed arithmetic on the node's index (nodes are numbered as they join and numbers
are never reused), so nothing per address is stored and a 5,000-node cluster costs nothing:

- host IPs from ``172.16.0.0/12``: node ``i`` gets ``172.(16 + b // 256).(b % 256).(i % 250 + 2)``
  with ``b = i // 250``;
- pod IPs from the cluster pod CIDR ``10.128.0.0/9``, one ``/24`` per node as kube-controller-
  manager hands out (``--node-cidr-mask-size=24``): node ``i`` owns ``10.(128 + i // 256).(i %
  256).0/24``, ``.1`` is the node's bridge, ``.2``-``.254`` are its pods (253, more than kubelet's
  default of 110 pods per node). Released addresses are reused first;
- service IPs from ``10.96.0.0/12`` (Kubernetes' default), from ``10.96.0.11`` up
  (``.1`` is the API server, ``.10`` the cluster DNS), released ones reused first.

Instances in host network mode use the node's IP and take no pod address.
"""

from __future__ import annotations

import ipaddress

from gaia.domain.errors import InvalidRequest

MAX_NODE_INDEX = 128 * 256  # /24 ranges in the /9 pod CIDR
CLUSTER_DNS_IP = "10.96.0.10"
_FIRST_POD_HOST = 2
_LAST_POD_HOST = 254
_SERVICE_BASE = int(ipaddress.IPv4Address("10.96.0.0"))
_SERVICE_FIRST = 11
_SERVICE_LAST = 2**20 - 2


def host_ip(index: int) -> str:
    block = index // 250
    return f"172.{16 + block // 256}.{block % 256}.{index % 250 + 2}"


def pod_prefix(index: int) -> str:
    if not 0 <= index < MAX_NODE_INDEX:
        raise InvalidRequest(f"the simulated pod network has room for {MAX_NODE_INDEX} nodes")
    return f"10.{128 + index // 256}.{index % 256}."


class PodRange:
    """The pod addresses of one node: a counter plus the released addresses, reused first."""

    __slots__ = ("_free", "_next", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._next = _FIRST_POD_HOST
        self._free: list[int] = []

    def take(self) -> str | None:
        if self._free:
            return self.prefix + str(self._free.pop())
        if self._next > _LAST_POD_HOST:
            return None
        self._next += 1
        return self.prefix + str(self._next - 1)

    def release(self, ip: str) -> None:
        if ip.startswith(self.prefix):
            self._free.append(int(ip[len(self.prefix) :]))


class ServiceRange:
    __slots__ = ("_free", "_next")

    def __init__(self) -> None:
        self._next = _SERVICE_FIRST
        self._free: list[int] = []

    def take(self) -> str:
        if self._free:
            offset = self._free.pop()
        elif self._next <= _SERVICE_LAST:
            offset = self._next
            self._next += 1
        else:
            raise InvalidRequest("the simulated service network 10.96.0.0/12 is full")
        return str(ipaddress.IPv4Address(_SERVICE_BASE + offset))

    def release(self, ip: str) -> None:
        self._free.append(int(ipaddress.IPv4Address(ip)) - _SERVICE_BASE)
