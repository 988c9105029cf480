"""``gaia-cni``: the Galaxy network's CNI plugin (issue 19; docs/network.md), CNI spec 1.1.

The container runtime runs it for every sandbox with the network configuration on stdin and the
request in the environment (``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``,
``CNI_PATH``, ``CNI_ARGS`` with ``K8S_POD_NAMESPACE``/``K8S_POD_NAME``). It answers a CNI result or
a CNI error object on stdout. What Galaxy adds is small; the plumbing is delegated to the
upstream plugins found on ``CNI_PATH`` (Debian's ``containernetworking-plugins``), called with
``cniVersion`` 1.0.0, the newest they speak::

    floating-ip  Gaia's IPAM (HTTP, node token) ──► address of the node subnet's pool
                 ──► bridge (the node's underlay bridge) + static IPAM ──► gratuitous ARP
    nat          free host ports (node-local, locked) ──► bridge (node-private, masquerade)
                 + host-local IPAM ──► portmap (iptables DNAT) ──► Gaia records node IP + ports
    host         nothing to plumb: the sandbox uses the node's network; the result says so

The mode of a sandbox is ``CNI_ARGS`` ``GAIA_NETWORK_MODE`` when the runtime passes it, else the
configuration's ``mode``; so modes mix on one node. NAT's container ports come from
``GAIA_PORTS`` (``8080/tcp,53/udp``) or ``runtimeConfig.portMappings`` (hostPort 0: choose).

**Verbs.** ADD (idempotent per sandbox: a repeated ADD returns the same address); DEL never fails
for what is already gone (DEL twice is fine) and lets go of the address in Gaia; CHECK compares
Gaia's record and the delegates' view with ``prevResult``; GC tears down every sandbox of this
node not in ``cni.dev/valid-attachments`` (locally and in Gaia); STATUS answers 50 when Gaia or a
delegate is unavailable; VERSION lists 0.4.0, 1.0.0, 1.1.0 (``cniVersions`` picks the highest
shared one). When Gaia cannot be reached, ADD and DEL fail with code 11 "try again later": the
runtime retries, nothing is half-made (an ADD undoes its plumbing first).

**State.** Every invocation is a short-lived process. Gaia holds the addresses; the node keeps
only what it needs to undo a sandbox (its mode and NAT ports) in ``<dataDir>/sandboxes/<id>.json``
and NAT's host ports in ``<dataDir>/nat-ports.json``, rewritten under an ``fcntl`` lock.
The node token is read from ``gaia.tokenFile`` (never the configuration itself, which runtimes
log).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import ipaddress
import json
import os
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gaia.node.cniwire import (
    DECODE_FAILURE,
    INCOMPATIBLE_VERSION,
    INVALID_CONFIG,
    INVALID_ENVIRONMENT,
    IO_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
    cni_args,
    run_plugin,
    version_of,
)

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
DELEGATE_VERSION = "1.0.0"  # the newest spec Debian's plugins (1.1.1) speak
MODES = ("floating-ip", "nat", "host")
DEFAULT_DATA_DIR = Path("/var/lib/gaia/cni")
DEFAULT_PORT_RANGE = (30000, 32767)

# this plugin's own error codes (the specification's are in gaia.node.cniwire)
POOL_EXHAUSTED = 100
REFUSED = 101
NO_HOST_PORT = 102


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class GaiaEndpoint:
    url: str
    cluster: str
    token_file: Path
    node: str
    timeout_s: float


@dataclass(frozen=True)
class Config:
    cni_version: str
    name: str
    mode: str  # "app": ask Gaia for the instance's template's mode
    gaia: GaiaEndpoint
    data_dir: Path
    fallback_mode: str = "floating-ip"  # "app" and the pod is no app's instance
    underlay_bridge: str = ""
    underlay_subnet: str = ""
    underlay_mtu: int = 0
    nat_bridge: str = ""
    nat_subnet: str = ""
    nat_node_ip: str = ""
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    prev_result: dict[str, Any] | None = None
    valid_attachments: frozenset[str] = frozenset()
    port_mappings: tuple[dict[str, Any], ...] = ()


def _version(conf: Mapping[str, Any]) -> str:
    versions = conf.get("cniVersions")
    if isinstance(versions, list) and versions:
        shared = [v for v in SUPPORTED_VERSIONS if v in versions]
        if not shared:
            raise CniError(
                INCOMPATIBLE_VERSION,
                f"none of cniVersions {versions} is supported",
                f"supported: {', '.join(SUPPORTED_VERSIONS)}",
            )
        return shared[-1]
    version = conf.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version!r} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    return str(version)


def _object(conf: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = conf.get(key, {})
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, f"'{key}' must be a JSON object")
    return value


def _text(section: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = section.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise CniError(INVALID_CONFIG, f"{where}.{key} is required (a string)")
    return value


def _cidr(value: str, where: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, f"{where} {value!r} is not an IPv4 network") from exc


def parse_config(raw: bytes) -> Config:
    try:
        conf = json.loads(raw)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, "the network configuration is not JSON", str(exc)) from exc
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "the network configuration must be a JSON object")
    version = _version(conf)
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "the network configuration has no 'name'")
    mode = conf.get("mode", "app")
    if mode not in (*MODES, "app"):
        raise CniError(INVALID_CONFIG, f"mode {mode!r} is not app or one of {', '.join(MODES)}")
    fallback = conf.get("fallbackMode", "floating-ip")
    if fallback not in MODES:
        raise CniError(
            INVALID_CONFIG, f"fallbackMode {fallback!r} is not one of {', '.join(MODES)}"
        )
    gaia = _object(conf, "gaia")
    timeout = gaia.get("timeoutSeconds", 5)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise CniError(INVALID_CONFIG, "gaia.timeoutSeconds must be a number in (0, 60]")
    endpoint = GaiaEndpoint(
        url=_text(gaia, "url", "gaia").rstrip("/"),
        cluster=_text(gaia, "cluster", "gaia"),
        token_file=Path(_text(gaia, "tokenFile", "gaia")),
        node=_text(gaia, "node", "gaia", required=False) or socket.gethostname(),
        timeout_s=float(timeout),
    )
    underlay, nat = _object(conf, "underlay"), _object(conf, "nat")
    prev = conf.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise CniError(DECODE_FAILURE, "prevResult must be a JSON object")
    attachments = conf.get("cni.dev/valid-attachments", conf.get("cni.dev/attachments", []))
    if not isinstance(attachments, list) or not all(
        isinstance(a, dict) and isinstance(a.get("containerID"), str) for a in attachments
    ):
        raise CniError(DECODE_FAILURE, "cni.dev/valid-attachments must list {containerID, ...}")
    runtime = _object(conf, "runtimeConfig")
    mappings = runtime.get("portMappings", [])
    if not isinstance(mappings, list) or not all(isinstance(m, dict) for m in mappings):
        raise CniError(DECODE_FAILURE, "runtimeConfig.portMappings must be a list of objects")
    port_range = nat.get("hostPortRange", f"{DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}")
    return Config(
        cni_version=version,
        name=name,
        mode=mode,
        fallback_mode=fallback,
        gaia=endpoint,
        data_dir=Path(conf.get("dataDir") or DEFAULT_DATA_DIR / name),
        underlay_bridge=_text(underlay, "bridge", "underlay", required=False),
        underlay_subnet=_cidr(underlay["subnet"], "underlay.subnet")
        if "subnet" in underlay
        else "",
        underlay_mtu=int(underlay.get("mtu", 0) or 0),
        nat_bridge=_text(nat, "bridge", "nat", required=False),
        nat_subnet=_cidr(nat["subnet"], "nat.subnet") if "subnet" in nat else "",
        nat_node_ip=_text(nat, "nodeIP", "nat", required=False),
        port_range=_port_range(port_range),
        prev_result=prev,
        valid_attachments=frozenset(a["containerID"] for a in attachments),
        port_mappings=tuple(mappings),
    )


def _port_range(value: object) -> tuple[int, int]:
    try:
        low, high = (int(p) for p in str(value).split("-"))
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, f"nat.hostPortRange {value!r} is not 'low-high'") from exc
    if not 1 <= low <= high <= 65535:
        raise CniError(INVALID_CONFIG, f"nat.hostPortRange {value!r} is out of 1-65535")
    return low, high


@dataclass(frozen=True)
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    path: tuple[str, ...]
    namespace: str
    pod: str
    mode: str | None
    ports: tuple[tuple[int, str], ...] = field(default=())


COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")


def parse_request(env: Mapping[str, str]) -> Request:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not one of {', '.join(COMMANDS)}"
        )
    container = env.get("CNI_CONTAINERID", "")
    if command in ("ADD", "DEL", "CHECK") and not container:
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is not set")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK") and not ifname:
        raise CniError(INVALID_ENVIRONMENT, "CNI_IFNAME is not set")
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "CHECK") and not netns:
        raise CniError(INVALID_ENVIRONMENT, "CNI_NETNS is not set")
    args = cni_args(env.get("CNI_ARGS", ""))
    mode = args.get("GAIA_NETWORK_MODE") or None
    if mode is not None and mode not in MODES:
        raise CniError(
            INVALID_ENVIRONMENT, f"GAIA_NETWORK_MODE {mode!r} is not one of {', '.join(MODES)}"
        )
    return Request(
        command=command,
        container_id=container,
        netns=netns,
        ifname=ifname,
        path=tuple(p for p in env.get("CNI_PATH", "").split(":") if p),
        namespace=args.get("K8S_POD_NAMESPACE", ""),
        pod=args.get("K8S_POD_NAME", ""),
        mode=mode,
        ports=_ports(args.get("GAIA_PORTS", "")),
    )


def _ports(raw: str) -> tuple[tuple[int, str], ...]:
    ports: list[tuple[int, str]] = []
    for item in filter(None, raw.split(",")):
        number, _, protocol = item.partition("/")
        protocol = protocol or "tcp"
        if not number.isdigit() or not 1 <= int(number) <= 65535 or protocol not in ("tcp", "udp"):
            raise CniError(INVALID_ENVIRONMENT, f"GAIA_PORTS has a bad port {item!r} (8080/tcp)")
        ports.append((int(number), protocol))
    return tuple(ports)


# ---------------------------------------------------------------------------- Gaia


class GaiaClient:
    """Gaia's IPAM over HTTP with the cluster's node token. Unreachable: ``TRY_AGAIN_LATER``."""

    def __init__(self, endpoint: GaiaEndpoint) -> None:
        self.endpoint = endpoint

    def _token(self) -> str:
        try:
            return self.endpoint.token_file.read_text().strip()
        except OSError as exc:
            raise CniError(
                INVALID_CONFIG,
                f"cannot read the IPAM node token from {self.endpoint.token_file}",
                str(exc),
            ) from exc

    def call(self, verb: str, body: Mapping[str, Any]) -> dict[str, Any]:
        url = f"{self.endpoint.url}/api/v1/clusters/{self.endpoint.cluster}/ipam/{verb}"
        request = urllib.request.Request(  # noqa: S310 - the operator's configured Gaia URL
            url,
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self._token()}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.endpoint.timeout_s) as answer:  # noqa: S310
                return dict(json.loads(answer.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            raise _refusal(exc) from exc
        except (OSError, ValueError) as exc:  # refused, timed out, reset, not JSON
            raise CniError(
                TRY_AGAIN_LATER,
                f"Gaia is unreachable at {self.endpoint.url}; try again later",
                str(exc),
            ) from exc

    def ready(self) -> None:
        url = f"{self.endpoint.url}/api/readyz"
        try:
            with urllib.request.urlopen(url, timeout=self.endpoint.timeout_s):  # noqa: S310
                return
        except (OSError, ValueError) as exc:
            raise CniError(
                NOT_AVAILABLE, f"Gaia is not available at {self.endpoint.url}", str(exc)
            ) from exc


def _refusal(exc: urllib.error.HTTPError) -> CniError:
    try:
        body = json.loads(exc.read() or b"{}")
    except ValueError:
        body = {}
    message = str(body.get("message") or exc.reason)
    code = str(body.get("code") or "")
    if exc.code >= 500 or code == "instance_busy" or exc.code == 429:
        return CniError(TRY_AGAIN_LATER, f"Gaia: {message}; try again later")
    if code == "pool_exhausted":
        return CniError(POOL_EXHAUSTED, f"Gaia: {message}")
    if exc.code in (401, 403):
        return CniError(INVALID_CONFIG, f"Gaia refused the node token: {message}")
    return CniError(REFUSED, f"Gaia: {message}", f"HTTP {exc.code} {code}")


# ---------------------------------------------------------------------------- node state


@contextmanager
def _locked_json(path: Path) -> Iterator[dict[str, Any]]:
    """A JSON object on disk, locked for this process; written back when the block succeeds."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_suffix(".lock").open("a")
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot use the state folder {path.parent}", str(exc)) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise CniError(IO_FAILURE, f"cannot read {path}", str(exc)) from exc
        yield data
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(data, sort_keys=True))
            temporary.replace(path)
        except OSError as exc:
            raise CniError(IO_FAILURE, f"cannot write {path}", str(exc)) from exc


def _sandbox_file(config: Config, container_id: str) -> Path:
    safe = "".join(c for c in container_id if c.isalnum() or c in "-_.")[:128]
    return config.data_dir / "sandboxes" / f"{safe}.json"


def _port_free(port: int, protocol: str) -> bool:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("0.0.0.0", port))  # noqa: S104 - only probing whether the port is taken
        except OSError:
            return False
    return True


def reserve_host_ports(
    config: Config, container_id: str, wanted: list[tuple[int, str, int]]
) -> list[dict[str, Any]]:
    """Host ports for ``wanted`` (container port, protocol, host port or 0: choose), held for
    ``container_id`` in the node's port table; a repeated ADD gets the same ones."""
    with _locked_json(config.data_dir / "nat-ports.json") as table:
        mine = {k: v for k, v in table.items() if v == container_id}
        taken = set(table)
        chosen: list[dict[str, Any]] = []
        for container_port, protocol, host_port in wanted:
            key_of = [k for k in mine if k.endswith(f"/{protocol}#{container_port}")]
            if key_of:
                port = int(key_of[0].split("/")[0])
            elif host_port:
                if f"{host_port}/{protocol}" in {k.split("#")[0] for k in taken}:
                    raise CniError(NO_HOST_PORT, f"host port {host_port}/{protocol} is in use")
                port = host_port
            else:
                port = _free_port(config, protocol, {k.split("#")[0] for k in taken})
            key = f"{port}/{protocol}#{container_port}"
            table[key] = container_id
            taken.add(key)
            chosen.append({"hostPort": port, "containerPort": container_port, "protocol": protocol})
        return chosen


def _free_port(config: Config, protocol: str, taken: set[str]) -> int:
    low, high = config.port_range
    for port in range(low, high + 1):
        if f"{port}/{protocol}" not in taken and _port_free(port, protocol):
            return port
    raise CniError(NO_HOST_PORT, f"no free host port in {low}-{high} (nat.hostPortRange)")


def release_host_ports(config: Config, container_id: str) -> None:
    with _locked_json(config.data_dir / "nat-ports.json") as table:
        for key in [k for k, v in table.items() if v == container_id]:
            del table[key]


# ---------------------------------------------------------------------------- delegates


def delegate(
    request: Request, plugin: str, command: str, conf: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Run an upstream plugin found on ``CNI_PATH`` with ``conf`` (spec 1.0.0)."""
    binary = next((Path(d) / plugin for d in request.path if (Path(d) / plugin).is_file()), None)
    if binary is None:
        raise CniError(
            INVALID_CONFIG,
            f"the {plugin} plugin is not on CNI_PATH ({':'.join(request.path) or 'empty'})",
            "install containernetworking-plugins",
        )
    env = {
        "PATH": os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": request.container_id,
        "CNI_NETNS": request.netns,
        "CNI_IFNAME": request.ifname,
        "CNI_PATH": ":".join(request.path),
    }
    done = subprocess.run(  # noqa: S603 - a plugin binary of the configured CNI_PATH
        [str(binary)],
        input=json.dumps(_for_delegate(conf)).encode(),
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = done.stdout.strip()
    answer = json.loads(out) if out.startswith(b"{") else None
    if done.returncode != 0:
        if answer and "code" in answer:
            raise CniError(
                int(answer["code"]),
                f"{plugin}: {answer.get('msg', '')}",
                str(answer.get("details", "")),
            )
        raise CniError(IO_FAILURE, f"{plugin} failed", done.stderr.decode(errors="replace"))
    return answer


def _for_delegate(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` in the delegates' spec version; a 1.1.0 ``prevResult`` reads as 1.0.0 (the
    result format did not change for what the delegates look at)."""
    out: dict[str, Any] = {"cniVersion": DELEGATE_VERSION, **conf}
    if isinstance(out.get("prevResult"), dict):
        out["prevResult"] = {**out["prevResult"], "cniVersion": DELEGATE_VERSION}
    return out


def _bridge_conf(config: Config, *, bridge: str, ipam: dict[str, Any], nat: bool) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "name": config.name,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": nat,
        "ipMasq": nat,
        "hairpinMode": nat,
        "ipam": ipam,
    }
    if config.underlay_mtu and not nat:
        conf["mtu"] = config.underlay_mtu
    return conf


def _static_ipam(ip: str, prefix_len: int, gateway: str) -> dict[str, Any]:
    return {
        "type": "static",
        "addresses": [{"address": f"{ip}/{prefix_len}", "gateway": gateway}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
    }


def _host_local_ipam(config: Config) -> dict[str, Any]:
    return {
        "type": "host-local",
        "ranges": [[{"subnet": config.nat_subnet}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": str(config.data_dir / "nat-ipam"),
    }


def _portmap_conf(config: Config, mappings: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": config.name,
        "type": "portmap",
        "capabilities": {"portMappings": True},
        "snat": True,
        "runtimeConfig": {"portMappings": mappings},
    }


# ---------------------------------------------------------------------------- verbs


def _mode(config: Config, request: Request) -> str:
    """The sandbox's mode as far as it is known without Gaia ("app" until asked)."""
    return request.mode or config.mode


def resolve(config: Config, request: Request, gaia: GaiaClient) -> Request:
    """``request`` with its mode (and NAT ports) settled: the runtime's ``GAIA_NETWORK_MODE``,
    the configuration's fixed mode, or (``mode: app``) what the instance's app asks for in
    Gaia; a pod that is no app's instance gets ``fallbackMode``."""
    mode = _mode(config, request)
    if mode != "app":
        return dataclasses.replace(request, mode=mode)
    plan = gaia.call("plan", _identity(request))
    wanted = str(plan.get("mode") or "")
    if wanted == "":
        return dataclasses.replace(request, mode=config.fallback_mode)
    if wanted not in MODES:
        raise CniError(
            REFUSED,
            f"app of {request.pod} runs on the {wanted} network, not on gaia-cni's",
            "choose network_mode floating-ip, nat or host in its template",
        )
    ports = request.ports or _ports(",".join(str(p) for p in plan.get("ports", [])))
    return dataclasses.replace(request, mode=wanted, ports=ports)


def _identity(request: Request) -> dict[str, str]:
    if not request.namespace or not request.pod:
        raise CniError(
            INVALID_ENVIRONMENT,
            "CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME: Gaia keys addresses by instance",
        )
    return {"namespace": request.namespace, "pod": request.pod}


def add(config: Config, request: Request, gaia: GaiaClient) -> dict[str, Any]:
    request = resolve(config, request, gaia)
    mode = _mode(config, request)
    if mode == "host":
        _remember(config, request, {"mode": "host"})
        return _merge(config, {"interfaces": [], "ips": [], "routes": [], "dns": {}})
    who = _identity(request)
    if mode == "floating-ip":
        result = _add_floating(config, request, gaia, who)
    else:
        result = _add_nat(config, request, gaia, who)
    return _merge(config, result)


def _add_floating(
    config: Config, request: Request, gaia: GaiaClient, who: dict[str, str]
) -> dict[str, Any]:
    if not config.underlay_bridge or not config.underlay_subnet:
        raise CniError(INVALID_CONFIG, "floating-ip needs underlay.bridge and underlay.subnet")
    got = gaia.call(
        "add",
        {
            **who,
            "container_id": request.container_id,
            "node": config.gaia.node,
            "mode": "floating-ip",
            "subnet": config.underlay_subnet,
        },
    )
    ipam = _static_ipam(got["ip"], int(got["prefix_len"]), got["gateway"])
    _remember(config, request, {"mode": "floating-ip", **who, "ipam": ipam})
    try:
        conf = _bridge_conf(config, bridge=config.underlay_bridge, ipam=ipam, nat=False)
        result = delegate(request, "bridge", "ADD", conf)
    except CniError:
        _undo(lambda: gaia.call("del", {**who, "container_id": request.container_id}))
        _forget(config, request)
        raise
    # The address may have lived on another node a moment ago: tell the segment its new MAC
    # (Debian's bridge plugin 1.1 sends no gratuitous ARP).
    announce(request.netns, request.ifname, got["ip"])
    return result or {}


def _add_nat(
    config: Config, request: Request, gaia: GaiaClient, who: dict[str, str]
) -> dict[str, Any]:
    if not config.nat_bridge or not config.nat_subnet or not config.nat_node_ip:
        raise CniError(INVALID_CONFIG, "nat needs nat.bridge, nat.subnet and nat.nodeIP")
    wanted = [(port, protocol, 0) for port, protocol in request.ports] + [
        (int(m["containerPort"]), str(m.get("protocol", "tcp")).lower(), int(m.get("hostPort", 0)))
        for m in config.port_mappings
    ]
    mappings = reserve_host_ports(config, request.container_id, wanted)
    _remember(config, request, {"mode": "nat", **who, "mappings": mappings})
    try:
        bridge = _bridge_conf(
            config, bridge=config.nat_bridge, ipam=_host_local_ipam(config), nat=True
        )
        result = delegate(request, "bridge", "ADD", bridge) or {}
        if mappings:
            delegate(
                request, "portmap", "ADD", {**_portmap_conf(config, mappings), "prevResult": result}
            )
        gaia.call(
            "add",
            {
                **who,
                "container_id": request.container_id,
                "node": config.gaia.node,
                "mode": "nat",
                "node_ip": config.nat_node_ip,
                "ports": {f"{m['containerPort']}/{m['protocol']}": m["hostPort"] for m in mappings},
            },
        )
    except CniError:
        _teardown_nat(config, request, mappings)
        release_host_ports(config, request.container_id)
        _forget(config, request)
        raise
    return result


def _teardown_nat(config: Config, request: Request, mappings: list[dict[str, Any]]) -> None:
    """Undo a NAT sandbox's plumbing; each DEL is harmless where its ADD never ran."""
    if mappings:
        _undo(lambda: delegate(request, "portmap", "DEL", _portmap_conf(config, mappings)))
    bridge = _bridge_conf(config, bridge=config.nat_bridge, ipam=_host_local_ipam(config), nat=True)
    _undo(lambda: delegate(request, "bridge", "DEL", bridge))


def _undo(step: Any) -> None:
    """A rollback or teardown step that must not hide the error being reported."""
    with contextlib.suppress(CniError, OSError, subprocess.SubprocessError):
        step()


def delete(config: Config, request: Request, gaia: GaiaClient) -> None:
    """Idempotent: what is gone already is no error; Gaia is told last (11 if unreachable, so the
    runtime retries the whole DEL, which repeats harmlessly)."""
    saved = _recall(config, request.container_id)
    mode = saved.get("mode") or _mode(config, request)
    if mode == "host":
        _forget(config, request)
        return
    if mode == "nat":
        mappings = list(saved.get("mappings", []))
        if request.netns or mappings:
            _teardown_nat(config, request, mappings)
        release_host_ports(config, request.container_id)
    elif config.underlay_bridge and request.netns and saved.get("ipam"):
        conf = _bridge_conf(
            config, bridge=config.underlay_bridge, ipam=dict(saved["ipam"]), nat=False
        )
        _undo(lambda: delegate(request, "bridge", "DEL", conf))
    namespace = saved.get("namespace") or request.namespace
    pod = saved.get("pod") or request.pod
    if namespace and pod:
        gaia.call("del", {"namespace": namespace, "pod": pod, "container_id": request.container_id})
    _forget(config, request)


def check(config: Config, request: Request, gaia: GaiaClient) -> None:
    prev = config.prev_result
    if prev is None:
        raise CniError(INVALID_CONFIG, "CHECK needs the prevResult of the ADD")
    mode = str(_recall(config, request.container_id).get("mode") or "")
    if not mode:
        mode = _mode(config, resolve(config, request, gaia))
    if mode == "host":
        return
    who = _identity(request)
    held = gaia.call("check", {**who, "container_id": request.container_id})
    ips = [i for i in prev.get("ips", []) if isinstance(i, dict)]
    if mode == "floating-ip":
        if held.get("ip") not in [str(i.get("address", "")).split("/")[0] for i in ips]:
            raise CniError(
                UNKNOWN_CONTAINER,
                f"Gaia gives {held.get('ip')} to {request.pod}; the sandbox's result differs",
            )
        ipam: dict[str, Any] = {
            "type": "static",
            "addresses": [
                {"address": i["address"], **({"gateway": i["gateway"]} if "gateway" in i else {})}
                for i in ips
            ],
        }
        conf = _bridge_conf(config, bridge=config.underlay_bridge, ipam=ipam, nat=False)
    else:
        conf = _bridge_conf(
            config, bridge=config.nat_bridge, ipam=_host_local_ipam(config), nat=True
        )
    delegate(request, "bridge", "CHECK", {**conf, "prevResult": prev})


def gc(config: Config, request: Request, gaia: GaiaClient) -> None:
    """Tear down this node's sandboxes the runtime no longer has, here and in Gaia."""
    folder = config.data_dir / "sandboxes"
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        container = path.stem
        if container in config.valid_attachments:
            continue
        stale = Request(
            command="DEL",
            container_id=container,
            netns="",
            ifname=request.ifname or "eth0",
            path=request.path,
            namespace="",
            pod="",
            mode=None,
        )
        saved = _recall(config, container)
        if saved.get("mode") == "nat":
            _teardown_nat(config, stale, list(saved.get("mappings", [])))
            release_host_ports(config, container)
        _forget(config, stale)
    gaia.call("gc", {"node": config.gaia.node, "valid": sorted(config.valid_attachments)})


def status(config: Config, request: Request, gaia: GaiaClient) -> None:
    plugins = ["bridge", "static"] + (["host-local", "portmap"] if config.nat_bridge else [])
    for plugin in plugins:
        if not any((Path(d) / plugin).is_file() for d in request.path):
            raise CniError(NOT_AVAILABLE, f"the {plugin} plugin is not on CNI_PATH")
    if not config.gaia.token_file.is_file():
        raise CniError(
            NOT_AVAILABLE, f"the IPAM node token file {config.gaia.token_file} is missing"
        )
    gaia.ready()


def _merge(config: Config, result: Mapping[str, Any]) -> dict[str, Any]:
    """Our result after ``prevResult`` (when chained after another plugin): interfaces appended,
    our ips' interface indices shifted past the earlier ones."""
    prev = config.prev_result or {}
    interfaces = list(prev.get("interfaces", []))
    offset = len(interfaces)
    ips = list(prev.get("ips", []))
    for ip in result.get("ips", []):
        ip = dict(ip)
        if "interface" in ip:
            ip["interface"] = int(ip["interface"]) + offset
        ips.append(ip)
    merged: dict[str, Any] = {
        "cniVersion": config.cni_version,
        "interfaces": interfaces + list(result.get("interfaces", [])),
        "ips": ips,
        "routes": list(prev.get("routes", [])) + list(result.get("routes", [])),
        "dns": result.get("dns") or prev.get("dns") or {},
    }
    return merged


def _remember(config: Config, request: Request, data: dict[str, Any]) -> None:
    with _locked_json(_sandbox_file(config, request.container_id)) as saved:
        saved.clear()
        saved.update(data)


def _recall(config: Config, container_id: str) -> dict[str, Any]:
    path = _sandbox_file(config, container_id)
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _forget(config: Config, request: Request) -> None:
    path = _sandbox_file(config, request.container_id)
    for leftover in (path, path.with_suffix(".lock"), path.with_suffix(".tmp")):
        with contextlib.suppress(OSError):
            leftover.unlink()


# ---------------------------------------------------------------------------- gratuitous ARP

CLONE_NEWNET = 0x40000000


def announce(netns: str, ifname: str, ip: str) -> None:
    """Send a gratuitous ARP for ``ip`` from ``ifname`` inside ``netns`` (best effort). A forked
    child enters the namespace (``setns`` changes the calling thread's namespace; the plugin
    itself stays in the node's), which costs far less than a new interpreter."""
    try:
        child = os.fork()
    except OSError:
        return
    if child == 0:  # the child: never returns into the plugin
        code = 1
        with contextlib.suppress(Exception):
            code = _announce_here(netns, ifname, ip)
        os._exit(code)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)


def _announce_here(netns: str, ifname: str, ip: str) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    with open(netns) as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            return 1
    mac = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
    hw = bytes.fromhex(mac.replace(":", ""))
    address = socket.inet_aton(ip)
    frame = (
        b"\xff" * 6 + hw + struct.pack("!H", 0x0806)
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hw + address + b"\x00" * 6 + address
    )  # fmt: skip
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((ifname, 0))
        for _ in range(2):
            raw.send(frame)
    return 0


# ---------------------------------------------------------------------------- main


def handle(env: Mapping[str, str], stdin: bytes) -> dict[str, Any] | None:
    """Run one CNI request; the object to print, or None when the spec wants no output."""
    request = parse_request(env)
    if request.command == "VERSION":
        return {
            "cniVersion": version_of(stdin, SUPPORTED_VERSIONS),
            "supportedVersions": list(SUPPORTED_VERSIONS),
        }
    config = parse_config(stdin)
    if request.command in ("GC", "STATUS") and config.cni_version != "1.1.0":
        raise CniError(INCOMPATIBLE_VERSION, f"{request.command} needs cniVersion 1.1.0")
    gaia = GaiaClient(config.gaia)
    if request.command == "ADD":
        return add(config, request, gaia)
    if request.command == "DEL":
        delete(config, request, gaia)
    elif request.command == "CHECK":
        check(config, request, gaia)
    elif request.command == "GC":
        gc(config, request, gaia)
    else:
        status(config, request, gaia)
    return None


def main(
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    stdout: TextIO | None = None,
) -> int:
    return run_plugin(handle, SUPPORTED_VERSIONS, env, stdin, stdout)


if __name__ == "__main__":
    sys.exit(main())
