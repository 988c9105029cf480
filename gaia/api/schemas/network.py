"""Bodies of the Galaxy network (issue 19; docs/network.md): floating-IP pools, allocations, an
app's addresses, and the nodes' CNI plugin calls (``/clusters/{cluster}/ipam/...``).

The plugin's bodies are its wire contract with Gaia, bounded at the edge: names are what a
kubelet passes (``K8S_POD_NAMESPACE``/``K8S_POD_NAME``, DNS labels and subdomains), container
ids are at most 128 of ``[A-Za-z0-9_.-]``, at most 32 mapped ports and 4096 valid attachments.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field

from gaia.api.schemas.base import Name, Page, Strict

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"^{_OCTET}(\.{_OCTET}){{3}}$"
CIDR_PATTERN = IPV4_PATTERN[:-1] + r"/([0-9]|[12][0-9]|3[0-2])$"
POD_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
CONTAINER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NODE_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
PORT_KEY_PATTERN = r"^[0-9]{1,5}/(tcp|udp|sctp)$"

Ipv4 = Annotated[str, Field(pattern=IPV4_PATTERN, max_length=15)]
Cidr = Annotated[str, Field(pattern=CIDR_PATTERN, max_length=18)]
PodName = Annotated[str, Field(pattern=POD_PATTERN, min_length=1, max_length=253)]
ContainerId = Annotated[str, Field(pattern=CONTAINER_PATTERN, min_length=1, max_length=128)]
NodeName = Annotated[str, Field(pattern=NODE_PATTERN, min_length=1, max_length=253)]
Zone = Annotated[str, Field(pattern=r"^[-a-z0-9.]*$", max_length=63)]
ReleasePolicyName = Literal["on-delete", "app", "never"]


# ---------------------------------------------------------------- pools (platform admins)


class IpPoolIn(Strict):
    name: Name
    subnet: Cidr = Field(description="the underlay subnet, e.g. 10.0.3.0/24 (one pool each)")
    zone: Zone = ""
    gateway: Ipv4 | None = Field(default=None, description="default: the subnet's first address")
    range_start: Ipv4 | None = Field(default=None, description="default: the first host")
    range_end: Ipv4 | None = Field(default=None, description="default: the last host")


class IpPoolOut(Strict):
    name: str
    subnet: str
    zone: str
    gateway: str
    range_start: str
    range_end: str
    size: int = Field(description="addresses the pool hands out (the gateway excluded)")
    used: int
    created_by: str
    created_at: dt.datetime


class AllocationOut(Strict):
    id: int
    business: str
    pod: str = Field(description="the instance, as <app>-<id>")
    mode: Literal["floating-ip", "nat"]
    ip: str
    pool: str | None
    policy: ReleasePolicyName | Literal[""] = Field(
        description="release policy; empty: freed when its sandbox is deleted"
    )
    node: str
    held: bool = Field(description="a sandbox uses it now")
    ports: dict[str, int] = Field(description="NAT: '<port>/<protocol>' -> host port")
    updated_at: dt.datetime


class IpamTokenOut(Strict):
    token: str = Field(description="the cluster's node credential for gaia-cni")


# ---------------------------------------------------------------- an app's network (members)


class AppAddressOut(AllocationOut):
    instance: int = Field(description="the instance's id (the <id> of its pod name)")
    kept: bool = Field(
        description="the app no longer wants the instance (scaled in, or the app stopped): "
        "the address is kept by its release policy (app or never)"
    )


class AppNetworkPage(Page[AppAddressOut]):
    """One page of the addresses of an app's instances (by pod name), with what the page shows
    above it: the app's network and how many addresses there are, counted by the database over
    every address, so a client showing one page reads one page (issue 22)."""

    mode: Literal["overlay", "floating-ip", "nat", "host"]
    ip_release: ReleasePolicyName | None = Field(
        description="floating-ip apps: when an address goes back to its pool"
    )
    total: int = Field(description="addresses of the app's instances, whatever the filters")
    kept_total: int = Field(
        description="of them, those kept for instances the app no longer wants (scaled in, or "
        "the app stopped), whatever the filters"
    )


# ---------------------------------------------------------------- the CNI plugin (node token)


class CniAddIn(Strict):
    namespace: Name = Field(description="the business (K8S_POD_NAMESPACE)")
    pod: PodName
    container_id: ContainerId
    node: NodeName
    mode: Literal["floating-ip", "nat"]
    subnet: Cidr | None = Field(default=None, description="floating-ip: the node's underlay")
    node_ip: Ipv4 | None = Field(default=None, description="nat: the node's address")
    ports: dict[
        Annotated[str, Field(pattern=PORT_KEY_PATTERN)], Annotated[int, Field(ge=1, le=65535)]
    ] = Field(default_factory=dict, max_length=32, description="nat: the mapped host ports")


class CniAddOut(Strict):
    ip: str
    prefix_len: int
    gateway: str
    pool: str | None
    policy: str
    reused: bool


class CniSandboxIn(Strict):
    namespace: Name
    pod: PodName
    container_id: ContainerId


class CniPlanIn(Strict):
    namespace: Name
    pod: PodName


class CniPlanOut(Strict):
    mode: Literal["", "overlay", "floating-ip", "nat", "host"] = Field(
        description="the instance's template's network_mode; empty: the pod is no app's instance"
    )
    ports: list[str] = Field(description="'<port>/<tcp|udp>' of the template (NAT maps them)")
    policy: str = Field(description="floating-ip: the release policy")


class CniCheckOut(Strict):
    ip: str
    node: str
    mode: str


class CniGcIn(Strict):
    node: NodeName
    valid: list[ContainerId] = Field(
        max_length=4096, description="the sandboxes the runtime still has on this node"
    )


class CniGcOut(Strict):
    released: list[str] = Field(description="pods whose sandbox let go of its address")


class CniDelOut(Strict):
    released: bool = Field(description="false: nothing held (a repeated DEL)")
