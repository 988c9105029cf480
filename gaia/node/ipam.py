"""``gaia-ipam``: a CNI IPAM plugin that keeps a pod's IP across restarts.

The container runtime runs a CNI main plugin (``bridge``) for every pod sandbox; that plugin runs
this one as a child process, with the network configuration on stdin and the request in the
environment (``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_ARGS`` carrying ``K8S_POD_NAMESPACE`` and
``K8S_POD_NAME``). It answers a CNI result (addresses, gateway, routes) or a CNI error as JSON on
stdout, in the wire format of the CNI spec 0.3.0 to 1.0.0. IPv4 only, for now.

Leases are keyed by the pod's *name* (namespace and name), not by the sandbox container: this is
the seed of Galaxy-style floating IPs, where an instance keeps its address when it is recreated.

- ``ADD`` gives the pod the address it already has, or the lowest free one in the range.
- ``DEL`` ends the container's hold but keeps the address reserved for that pod name for
  ``keep_s`` seconds (netconf ``ipam.keep_s``, default 600), so a pod recreated under the same
  name gets the same address.
- While another container of the same pod name still holds the address (the old sandbox is not
  torn down yet), ``ADD`` fails with the retryable CNI code 11; the kubelet retries the sandbox.
- Requests without a pod name (plain CNI use) hold an address per container, released at ``DEL``.

When an address goes to a new sandbox, the host's ARP entry for it on the bridge is flushed
(``forget_neighbour``): the new sandbox has a new MAC address.

Every invocation is a short-lived process, so the state lives in ``<dataDir>/leases.json``
(netconf ``ipam.dataDir``, default ``/var/lib/gaia/ipam/<network name>``), read and rewritten
under an exclusive ``fcntl`` lock: concurrent invocations are serialised and never hand out one
address twice. The clock is ``time.time()`` unless ``GAIA_IPAM_NOW`` (seconds since the epoch)
says otherwise, which is how tests let reservations expire. The decisions themselves
(``assign``, ``release``, ``expire``) are pure functions over the lease table.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from gaia.node.cniwire import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
    cni_args,
    run_plugin,
    version_of,
)

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
DEFAULT_KEEP_S = 600.0
DEFAULT_DATA_ROOT = Path("/var/lib/gaia/ipam")
LEASE_FILE_VERSION = 1

# this plugin's own error codes (the specification's are in gaia.node.cniwire)
RANGE_EXHAUSTED = 100

Address = ipaddress.IPv4Address
Network = ipaddress.IPv4Network


@dataclass(frozen=True)
class Pool:
    """The ``ipam`` section of a network configuration, validated."""

    network: str
    cni_version: str
    subnet: Network
    first: Address
    last: Address
    keep_s: float
    data_dir: Path
    routes: tuple[dict[str, str], ...]
    bridge: str = ""  # the main plugin's bridge, when it is ``bridge``

    @property
    def gateway(self) -> Address:
        return self.subnet.network_address + 1

    def candidates(self) -> Iterator[Address]:
        address = self.first
        while address <= self.last:
            if address != self.gateway:
                yield address
            address += 1


@dataclass(frozen=True)
class Request:
    command: str
    container_id: str
    pod: str | None  # "namespace/name" when the runtime is a kubelet's

    @property
    def key(self) -> str:
        return f"pod:{self.pod}" if self.pod else f"container:{self.container_id}"


@dataclass
class Lease:
    ip: str
    holder: str | None  # the container holding the address; None while only reserved
    released_at: float | None = None


Leases = dict[str, Lease]


# ---------------------------------------------------------------------------- parsing


def parse_pool(raw: bytes) -> Pool:
    try:
        conf = json.loads(raw)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "the network configuration is not JSON", str(exc)) from exc
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "the network configuration must be a JSON object")
    version = _cni_version(conf)
    name = conf.get("name")
    ipam = conf.get("ipam")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "the network configuration has no 'name'")
    if not isinstance(ipam, dict):
        raise CniError(INVALID_CONFIG, "the network configuration has no 'ipam' object")
    subnet = _subnet(ipam.get("subnet"))
    first, last = _range(ipam, subnet)
    return Pool(
        network=name,
        cni_version=version,
        subnet=subnet,
        first=first,
        last=last,
        keep_s=_keep_s(ipam.get("keep_s", DEFAULT_KEEP_S)),
        data_dir=Path(ipam.get("dataDir") or DEFAULT_DATA_ROOT / name),
        routes=_routes(ipam.get("routes")),
        bridge=str(conf.get("bridge") or ""),
    )


def _cni_version(conf: Mapping[str, Any]) -> str:
    version = conf.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return str(version)


def _subnet(value: object) -> Network:
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, 'ipam.subnet is required, e.g. "10.244.0.0/24"')
    try:
        subnet = ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise CniError(
            INVALID_CONFIG, f"ipam.subnet {value!r} is not an IPv4 network", str(exc)
        ) from exc
    if subnet.num_addresses < 4:
        raise CniError(INVALID_CONFIG, f"ipam.subnet {value} has no room for pods and a gateway")
    return subnet


def _range(ipam: Mapping[str, Any], subnet: Network) -> tuple[Address, Address]:
    first = _address_in(ipam, "rangeStart", subnet, subnet.network_address + 2)
    last = _address_in(ipam, "rangeEnd", subnet, subnet.broadcast_address - 1)
    if first > last:
        raise CniError(INVALID_CONFIG, f"ipam.rangeStart {first} is after ipam.rangeEnd {last}")
    return first, last


def _address_in(ipam: Mapping[str, Any], field: str, subnet: Network, default: Address) -> Address:
    value = ipam.get(field)
    if value is None:
        return default
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, f"ipam.{field} {value!r} is not an IPv4 address") from exc
    if not subnet.network_address < address < subnet.broadcast_address:
        raise CniError(INVALID_CONFIG, f"ipam.{field} {address} is not a host address of {subnet}")
    return address


def _keep_s(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CniError(INVALID_CONFIG, f"ipam.keep_s must be seconds >= 0, not {value!r}")
    return float(value)


def _routes(value: object) -> tuple[dict[str, str], ...]:
    if value is None:
        return ({"dst": "0.0.0.0/0"},)
    if not isinstance(value, list) or not all(
        isinstance(r, dict) and isinstance(r.get("dst"), str) for r in value
    ):
        raise CniError(INVALID_CONFIG, 'ipam.routes must be a list of {"dst": ..., "gw"?: ...}')
    return tuple({k: str(v) for k, v in r.items()} for r in value)


def parse_request(env: Mapping[str, str]) -> Request:
    command = env.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION"):
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not ADD, DEL, CHECK or VERSION"
        )
    container = env.get("CNI_CONTAINERID", "")
    if command != "VERSION" and not container:
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is not set")
    args = cni_args(env.get("CNI_ARGS", ""))
    namespace, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
    pod = f"{namespace}/{name}" if namespace and name else None
    return Request(command=command, container_id=container, pod=pod)


# ---------------------------------------------------------------------------- decisions


def expire(leases: Leases, *, keep_s: float, now: float) -> None:
    """Forget reservations of deleted pods older than ``keep_s``."""
    for key in [k for k, v in leases.items() if v.holder is None and v.released_at is not None]:
        released_at = leases[key].released_at
        if released_at is not None and now - released_at >= keep_s:
            del leases[key]


def assign(leases: Leases, *, pool: Pool, request: Request) -> str:
    """The address for ``request`` (an ADD): the pod's own, else the lowest free one."""
    held = leases.get(request.key)
    if held is not None:
        if held.holder not in (None, request.container_id):
            raise CniError(
                TRY_AGAIN_LATER,
                f"address {held.ip} of pod {request.pod} is still held by container "
                f"{held.holder}; retry once that sandbox is deleted",
            )
        held.holder, held.released_at = request.container_id, None
        return held.ip
    taken = {lease.ip for lease in leases.values()}
    for address in pool.candidates():
        if str(address) not in taken:
            leases[request.key] = Lease(ip=str(address), holder=request.container_id)
            return str(address)
    reserved = sum(1 for lease in leases.values() if lease.holder is None)
    raise CniError(
        RANGE_EXHAUSTED,
        f"no free address in {pool.first}-{pool.last} of network {pool.network}",
        f"{len(leases) - reserved} held by running pods, {reserved} reserved for deleted pods "
        f"for up to {pool.keep_s:g} s (ipam.keep_s)",
    )


def release(leases: Leases, *, request: Request, now: float) -> None:
    """End ``request.container_id``'s holds (a DEL): a pod's address stays reserved for its
    name, a plain container's goes back to the pool. A DEL of an older sandbox of the same
    pod leaves the newer sandbox's hold alone."""
    for key in [k for k, v in leases.items() if v.holder == request.container_id]:
        if key.startswith("pod:"):
            leases[key].holder, leases[key].released_at = None, now
        else:
            del leases[key]


def check(leases: Leases, *, request: Request) -> None:
    held = leases.get(request.key)
    if held is None or held.holder != request.container_id:
        raise CniError(UNKNOWN_CONTAINER, f"container {request.container_id} holds no address here")


# ---------------------------------------------------------------------------- state


@contextmanager
def locked_leases(data_dir: Path) -> Iterator[Leases]:
    """The lease table, locked for this process; written back when the block succeeds."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = (data_dir / "lock").open("a")
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot use the lease folder {data_dir}", str(exc)) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = data_dir / "leases.json"
        leases = _read(path)
        yield leases
        _write(path, leases)


def _read(path: Path) -> Leases:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CniError(IO_FAILURE, f"cannot read the lease file {path}", str(exc)) from exc
    return {key: Lease(**value) for key, value in data.get("leases", {}).items()}


def _write(path: Path, leases: Leases) -> None:
    body = {"version": LEASE_FILE_VERSION, "leases": {k: asdict(v) for k, v in leases.items()}}
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(body, indent=1, sort_keys=True))
        temporary.replace(path)
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot write the lease file {path}", str(exc)) from exc


def now(env: Mapping[str, str]) -> float:
    override = env.get("GAIA_IPAM_NOW")
    return float(override) if override else time.time()


# ---------------------------------------------------------------------------- wire


def result(pool: Pool, ip: str) -> dict[str, Any]:
    entry: dict[str, str] = {
        "address": f"{ip}/{pool.subnet.prefixlen}",
        "gateway": str(pool.gateway),
    }
    if pool.cni_version != "1.0.0":
        entry["version"] = "4"
    return {
        "cniVersion": pool.cni_version,
        "ips": [entry],
        "routes": list(pool.routes),
        "dns": {},
    }


def handle(env: Mapping[str, str], stdin: bytes) -> dict[str, Any] | None:
    """Run one CNI request; the object to print, or None when the spec wants no output."""
    request = parse_request(env)
    if request.command == "VERSION":
        return {
            "cniVersion": version_of(stdin, SUPPORTED_VERSIONS),
            "supportedVersions": list(SUPPORTED_VERSIONS),
        }
    pool = parse_pool(stdin)
    if request.command == "CHECK" and pool.cni_version.startswith("0.3."):
        raise CniError(INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later")
    with locked_leases(pool.data_dir) as leases:
        expire(leases, keep_s=pool.keep_s, now=now(env))
        if request.command == "ADD":
            repeated = _holder(leases, request) == request.container_id
            ip = assign(leases, pool=pool, request=request)
            if not repeated:
                forget_neighbour(pool.bridge, ip)
            return result(pool, ip)
        if request.command == "DEL":
            release(leases, request=request, now=now(env))
            return None
        check(leases, request=request)
        return None


def _holder(leases: Leases, request: Request) -> str | None:
    lease = leases.get(request.key)
    return lease.holder if lease else None


def forget_neighbour(bridge: str, ip: str) -> None:
    """Drop the host's ARP entry for ``ip`` on ``bridge``: an address that moves to a new
    sandbox has a new MAC, and until the old entry ages out (30 s and more) the host, and so
    the kubelet's probes, would keep sending to the old one. The IPAM plugin runs in the
    host's network namespace; Debian's bridge plugin (1.1) sends no gratuitous ARP."""
    ip_command = shutil.which("ip", path=os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin")
    if not bridge or ip_command is None:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(  # noqa: S603 - the address is ours; the bridge name is the network's
            [ip_command, "neigh", "flush", "to", ip, "dev", bridge],
            capture_output=True,
            timeout=5,
            check=False,
        )


def main(
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    stdout: TextIO | None = None,
) -> int:
    return run_plugin(handle, SUPPORTED_VERSIONS, env, stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
