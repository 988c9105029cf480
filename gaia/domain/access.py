"""Access to apps by their domain (issue 19): which instances a load balancer sends traffic to,
and the drain that comes before an instance stops.

Pure rules, no I/O. ``gaia.controllers.access`` feeds them what the app controller observed and
turns their answers into HAProxy's configuration, its runtime commands and dnsmasq's hosts.

**Which instances serve.** An app with a domain and a port has a backend; each of its instances
that has an address is a server of it, in one of three states:

- ``ready``: the instance is ready, and no stop of it is pending;
- ``drain``: the app controller wants to stop it (an in-place image swap, a restart, a
  deletion): the balancer sends it no new request, the ones it is serving finish;
- ``maint``: it is not ready (starting, restarting, failing its probe): nothing goes to it.

**The drain** (``DrainBook``). Before the controller stops an instance it asks
``may_stop``. An instance that is not ready takes no traffic: yes at once. Otherwise, the first
time, the instance is marked draining (``drain`` from then on) and the answer is no. It is yes
once the balancer reports no request in flight on it and ``min_drain_s`` has passed (so a
request the balancer had just picked it for has arrived), or once ``max_drain_s`` has passed
whatever is in flight (a stuck connection must not block an upgrade forever).

The mark stays after the stop, until the instance is seen ready on **another container** than
the one the drain began on (its start time or restart count changed): an in-place swap keeps
the pod, its address and, for a moment, its old "ready", so "ready" alone would let traffic
back onto a container being killed. Comparing the container, not clocks, keeps a node whose
clock is off from re-admitting early. A drain the controller stopped asking about before it
was allowed to stop (the upgrade was paused or rolled back) ends after ``abandon_s``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ServerState(StrEnum):
    READY = "ready"
    DRAIN = "drain"
    MAINT = "maint"


@dataclass(frozen=True, slots=True)
class AppKey:
    cluster: str
    namespace: str
    app: str

    @property
    def backend(self) -> str:
        """HAProxy's name for the app's backend: readable, and unique (a hash of the key)."""
        digest = hashlib.sha256(f"{self.cluster}/{self.namespace}/{self.app}".encode()).hexdigest()
        return f"app_{_safe(self.app)[:40]}_{digest[:10]}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def server_name(instance: str) -> str:
    """HAProxy's name for an instance's server."""
    return _safe(instance)


@dataclass(frozen=True, slots=True)
class Seen:
    """One instance as the app controller last observed it."""

    name: str
    ip: str
    ready: bool
    started_at: dt.datetime | None
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: str  # ip:port
    state: ServerState


@dataclass(frozen=True, slots=True)
class Backend:
    key: AppKey
    domain: str
    servers: tuple[Server, ...]

    @property
    def name(self) -> str:
        return self.key.backend

    def members(self) -> tuple[tuple[str, str], ...]:
        """What a reload must change: the servers and their addresses (not their states)."""
        return tuple((s.name, s.address) for s in self.servers)


@dataclass
class _Drain:
    started: float  # monotonic seconds
    container: tuple[dt.datetime | None, int]  # the container it began on: start, restarts
    asked: float  # when the controller last asked
    stopped: bool = False  # the controller was told yes


@dataclass
class DrainBook:
    """Instances being drained, per app (see the module docstring)."""

    min_drain_s: float = 1.0
    max_drain_s: float = 30.0
    abandon_s: float = 15.0
    _drains: dict[tuple[AppKey, str], _Drain] = field(default_factory=dict)

    def draining(self, key: AppKey, name: str) -> bool:
        return (key, name) in self._drains

    def may_stop(self, key: AppKey, seen: Seen, *, now: float, in_flight: int | None) -> bool:
        """Whether the controller may stop ``seen`` now; marks it draining the first time.
        ``in_flight``: the balancer's count of requests on it (None: not known yet)."""
        drain = self._drains.get((key, seen.name))
        if drain is None:
            if not seen.ready:
                return True
            self._drains[(key, seen.name)] = _Drain(
                started=now, container=(seen.started_at, seen.restarts), asked=now
            )
            return False
        drain.asked = now
        if drain.stopped:
            return True
        waited = now - drain.started
        if waited >= self.max_drain_s or (in_flight == 0 and waited >= self.min_drain_s):
            drain.stopped = True
            return True
        return False

    def observe(self, key: AppKey, seen: Iterable[Seen], *, now: float) -> None:
        """Forget the drains that are over: the instance is gone, ready on another container
        than the drained one, or never stopped and no longer asked about."""
        by_name = {s.name: s for s in seen}
        for k, name in [k for k in self._drains if k[0] == key]:
            drain = self._drains[(k, name)]
            if _over(drain, by_name.get(name), now=now, abandon_s=self.abandon_s):
                del self._drains[(k, name)]

    def forget_app(self, key: AppKey) -> None:
        for k in [k for k in self._drains if k[0] == key]:
            del self._drains[k]

    def keys(self) -> set[AppKey]:
        return {k for k, _ in self._drains}


def _over(drain: _Drain, current: Seen | None, *, now: float, abandon_s: float) -> bool:
    if current is None:
        return True
    if current.ready and (current.started_at, current.restarts) != drain.container:
        return True
    return not drain.stopped and now - drain.asked >= abandon_s


def backend_of(
    key: AppKey, *, domain: str, port: int, seen: Iterable[Seen], drains: DrainBook
) -> Backend:
    """The app's backend: a server per instance with an address, in its state."""
    servers = []
    for s in sorted(seen, key=lambda s: s.name):
        if not s.ip:
            continue
        if drains.draining(key, s.name):
            state = ServerState.DRAIN
        elif s.ready:
            state = ServerState.READY
        else:
            state = ServerState.MAINT
        address = f"[{s.ip}]:{port}" if ":" in s.ip else f"{s.ip}:{port}"
        servers.append(Server(server_name(s.name), address, state))
    return Backend(key=key, domain=domain.lower(), servers=tuple(servers))


# ---------------------------------------------------------------- what HAProxy and dnsmasq read


@dataclass(frozen=True, slots=True)
class BalancerFiles:
    config: str  # haproxy.cfg
    domains: str  # the map file: "<domain> <backend>" per line


def render_haproxy(
    backends: Iterable[Backend],
    *,
    bind: str,
    admin_socket: str,
    map_file: str,
    timeout_connect_s: float = 3,
    timeout_s: float = 60,
) -> BalancerFiles:
    """The balancer's configuration and its domain map.

    One HTTP frontend on ``bind`` picks the backend by the request's ``Host`` (port dropped,
    lower-cased) through ``map_file``; a domain nobody serves gets 503. One backend per app,
    round robin over its servers, each also TCP-checked (the app's readiness is the first
    guard, the check a second). The server side of every request is a new connection
    (``http-server-close``), so each request is balanced afresh and a drained server gets no
    request of a kept-alive client. A connection that fails to open is retried on another
    server (the request never left); a request already sent is never retried (it may not be
    idempotent). Server states are written into the file (``disabled`` for maint, weight 0
    for drain) so a reloaded worker starts where the runtime was."""
    listed = sorted(backends, key=lambda b: b.name)
    lines = [
        "# written by Gaia (gaia.controllers.access); changes here are overwritten",
        "global",
        f"    stats socket {admin_socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        "defaults",
        "    mode http",
        f"    timeout connect {round(timeout_connect_s * 1000)}ms",
        f"    timeout client {round(timeout_s * 1000)}ms",
        f"    timeout server {round(timeout_s * 1000)}ms",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    option http-server-close",
        "    retries 2",
        "    retry-on conn-failure",
        "    option redispatch 1",
        "frontend gaia_access",
        f"    bind {bind}",
        "    http-request set-var(txn.app) req.hdr(host),lower,field(1,:),"
        f"map({map_file},gaia_nobody)",
        "    use_backend %[var(txn.app)]",
        "backend gaia_nobody",
        '    http-request return status 503 content-type text/plain string "no app at this domain"',
    ]
    for b in listed:
        lines += [f"backend {b.name}", f"    # {b.key.cluster}/{b.key.namespace}/{b.key.app}"]
        lines.append("    balance roundrobin")
        for srv in b.servers:
            extra = ""
            if srv.state is ServerState.MAINT:
                extra = " disabled"
            elif srv.state is ServerState.DRAIN:
                extra = " weight 0"
            lines.append(f"    server {srv.name} {srv.address} check inter 2s fall 2 rise 1{extra}")
    domains = [f"{b.domain} {b.name}" for b in listed if b.domain]
    return BalancerFiles(config="\n".join(lines) + "\n", domains="\n".join(domains) + "\n")


def runtime_commands(
    backends: Iterable[Backend], current: Mapping[tuple[str, str], ServerState]
) -> list[str]:
    """The runtime API commands that bring the running servers' states to the backends'
    (servers the running balancer does not have yet wait for the reload that adds them)."""
    out = []
    for b in sorted(backends, key=lambda b: b.name):
        for srv in b.servers:
            now = current.get((b.name, srv.name))
            if now is None or now is srv.state:
                continue
            where = f"{b.name}/{srv.name}"
            if srv.state is ServerState.READY:
                out += [f"set server {where} weight 1", f"set server {where} state ready"]
            elif srv.state is ServerState.DRAIN:
                out.append(f"set server {where} state drain")
            else:
                out.append(f"set server {where} state maint")
    return out


def render_hosts(domains: Iterable[str], address: str) -> str:
    """dnsmasq's hosts file: every domain resolves to the balancer's address."""
    return "".join(f"{address} {d}\n" for d in sorted(set(domains)))


def parse_stat(csv: str) -> dict[tuple[str, str], int]:
    """``show stat`` of HAProxy's runtime API: requests in flight (``scur``) per
    (backend, server)."""
    out: dict[tuple[str, str], int] = {}
    header: list[str] = []
    for line in csv.splitlines():
        if line.startswith("# "):
            header = line[2:].split(",")
            continue
        if not line or not header:
            continue
        row = dict(zip(header, line.split(","), strict=False))
        name = row.get("svname", "")
        if name in ("FRONTEND", "BACKEND"):
            continue
        scur = row.get("scur", "")
        out[(row.get("pxname", ""), name)] = int(scur) if scur.isdigit() else 0
    return out


def parse_server_states(text: str) -> dict[tuple[str, str], ServerState]:
    """``show servers state`` of HAProxy's runtime API: each server's administrative state
    (``srv_admin_state``: bits 0x01, 0x02, 0x04, 0x20 maintenance, 0x08, 0x10 drain; a
    weight of 0 is a drain too) as Gaia names it."""
    out: dict[tuple[str, str], ServerState] = {}
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith("# "):
            header = line[2:].split()
            continue
        parts = line.split()
        if not header or len(parts) < len(header) or not parts[0].isdigit():
            continue
        row: Mapping[str, str] = dict(zip(header, parts, strict=False))
        admin = int(row.get("srv_admin_state", "0"))
        weight = int(row.get("srv_uweight", "1") or "1")
        if admin & 0x27:
            state = ServerState.MAINT
        elif admin & 0x18 or weight == 0:
            state = ServerState.DRAIN
        else:
            state = ServerState.READY
        out[(row.get("be_name", ""), row.get("srv_name", ""))] = state
    return out
