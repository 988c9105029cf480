"""Floating IPs (issue 19, the Galaxy network): pools, release policies, the pure rules.

An app chooses its network per template (``network_mode``):

- ``overlay``  what every app had before issue 19: the cluster's own pod network;
- ``floating-ip``  underlay: the instance's address comes from a Gaia pool of the node's
  subnet and follows the instance when it is rescheduled to another node of that subnet;
- ``nat``  the node's address, the instance's ports mapped to free host ports (DNAT);
- ``host``  the node's network namespace.

A **pool** is a range of one subnet, in one zone of one cluster (platform admins manage them).
An **allocation** ties one address of a pool to one instance, named as the runtime names it
(the business's namespace and the pod's name ``<app>-<id>``). ``IpPool.hosts`` are the
addresses a pool hands out: the range minus the gateway.

The **release policy** (``ip_release`` of a floating-ip template) decides when an address that
no sandbox holds any more goes back to the pool (``releasable``): a CNI ``DEL`` never frees an
instance's address by itself, because a reschedule is a DEL on one node and an ADD on another.

- ``on-delete``  free once the instance is gone from its app (scaled down, app deleted);
- ``app``        kept while the app exists, even for instances scaled away (they get it back);
- ``never``      kept until a platform admin deletes the allocation.

Sandboxes that belong to no app of the platform (a pod Gaia did not make) have no policy:
their address is freed when its sandbox is deleted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from gaia.domain.errors import InvalidRequest

# The largest pool: a /16 (its addresses are listed when one is chosen).
MAX_POOL_ADDRESSES = 65536


class ReleasePolicy(StrEnum):
    ON_DELETE = "on-delete"
    APP = "app"
    NEVER = "never"


class NetworkMode(StrEnum):
    OVERLAY = "overlay"
    FLOATING_IP = "floating-ip"
    NAT = "nat"
    HOST = "host"


@dataclass(frozen=True, slots=True)
class IpPool:
    """A validated pool: ``first``..``last`` of ``subnet``, the gateway excluded."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address

    @property
    def size(self) -> int:
        inside = int(self.last) - int(self.first) + 1
        return inside - (1 if self.first <= self.gateway <= self.last else 0)

    def hosts(self) -> Iterator[ipaddress.IPv4Address]:
        address = self.first
        while address <= self.last:
            if address != self.gateway:
                yield address
            address += 1


def parse_pool(
    *, subnet: str, gateway: str | None = None, first: str | None = None, last: str | None = None
) -> IpPool:
    """An ``IpPool`` from its text fields, or ``InvalidRequest`` naming the field to fix."""
    try:
        network = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise InvalidRequest(
            f"subnet: {subnet!r} is not an IPv4 network in CIDR form, e.g. 10.0.3.0/24 ({exc})",
            details={"field": "subnet"},
        ) from exc
    if network.num_addresses < 4:
        raise InvalidRequest(
            f"subnet: {subnet} has no room for a gateway and instances (use /30 or larger)",
            details={"field": "subnet"},
        )
    gw = _host(network, "gateway", gateway, network.network_address + 1)
    lo = _host(network, "range_start", first, network.network_address + 1)
    hi = _host(network, "range_end", last, network.broadcast_address - 1)
    if lo > hi:
        raise InvalidRequest(
            f"range_start {lo} is after range_end {hi}", details={"field": "range_start"}
        )
    pool = IpPool(subnet=network, gateway=gw, first=lo, last=hi)
    if pool.size < 1:
        raise InvalidRequest(
            f"the range {lo}-{hi} holds only the gateway", details={"field": "range_start"}
        )
    if int(hi) - int(lo) + 1 > MAX_POOL_ADDRESSES:
        raise InvalidRequest(
            f"a pool holds at most {MAX_POOL_ADDRESSES} addresses (a /16); split the range",
            details={"field": "range_end"},
        )
    return pool


def _host(
    network: ipaddress.IPv4Network,
    field: str,
    value: str | None,
    default: ipaddress.IPv4Address,
) -> ipaddress.IPv4Address:
    if value is None or value == "":
        return default
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise InvalidRequest(
            f"{field}: {value!r} is not an IPv4 address", details={"field": field}
        ) from exc
    if not network.network_address < address < network.broadcast_address:
        raise InvalidRequest(
            f"{field}: {address} is not a host address of {network}", details={"field": field}
        )
    return address


@dataclass(frozen=True, slots=True)
class InstanceName:
    """A pod name split as the platform makes them: ``<app>-<id>``."""

    app: str
    instance: int | None  # None: not one of an app's instances

    @classmethod
    def parse(cls, pod: str) -> InstanceName:
        app, sep, tail = pod.rpartition("-")
        if sep and app and tail.isdigit() and tail == str(int(tail)):
            return cls(app=app, instance=int(tail))
        return cls(app=pod, instance=None)


@dataclass(frozen=True, slots=True)
class AllocationFacts:
    """What ``releasable`` needs of one allocation."""

    id: int
    pod: str
    policy: ReleasePolicy | None  # None: the sandbox belongs to no app of the platform
    held: bool  # a sandbox holds it now (between its CNI ADD and DEL)


def releasable(
    allocations: list[AllocationFacts], *, live_instances: Mapping[str, frozenset[int]]
) -> list[int]:
    """Ids of the allocations to give back to their pools, by each one's release policy.

    ``live_instances``: app name -> the ids of its instances (the app's ``instances`` map) for
    every app of the allocations' business and cluster that exists. Held addresses are never
    freed: a sandbox is using them."""
    free: list[int] = []
    for a in allocations:
        if a.held or a.policy is ReleasePolicy.NEVER:
            continue
        name = InstanceName.parse(a.pod)
        ids = live_instances.get(name.app)
        if a.policy is None:
            free.append(a.id)
        elif a.policy is ReleasePolicy.APP:
            if ids is None:
                free.append(a.id)
        elif ids is None or name.instance not in ids:
            free.append(a.id)
    return free


def policy_of(template_body: Mapping[str, object]) -> ReleasePolicy | None:
    """The release policy a template's document asks for, or None when it takes no floating
    IP."""
    if template_body.get("network_mode") != NetworkMode.FLOATING_IP:
        return None
    return ReleasePolicy(str(template_body.get("ip_release") or ReleasePolicy.ON_DELETE))
