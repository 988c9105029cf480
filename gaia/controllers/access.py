"""The access layer (issue 19): an app's domain resolves, and a real load balancer sends its
requests to the app's ready instances only, draining an instance before the app controller
stops its container.

Two programs from Debian, started and configured by Gaia (``GAIA_ACCESS_LISTEN``):

- **HAProxy** in master-worker mode (``haproxy -W -S master.sock``). Gaia writes
  ``haproxy.cfg`` and the domain map (``gaia.domain.access.render_haproxy``) and asks the master
  to ``reload`` only when the set of apps, domains or servers changed; the old worker finishes
  the requests it holds, the new one takes the listening socket without a gap. Server states
  (ready, drain, maint) change far more often (every readiness flip, every drain) and go through
  the worker's runtime API (``set server ... state``), with no reload.
- **dnsmasq** answers each bound domain with the balancer's address, from a hosts file it is
  told to read again (SIGHUP) when the domains change. It forwards nothing (``--no-resolv``):
  point a zone (a conditional forwarder) at it, not all of a client's DNS.

The app controller feeds it what it observed (``observe``: each instance's address, readiness,
container start and restarts) and asks ``may_stop`` before it swaps an image in place, restarts
or deletes an instance of an app with a domain; a no leaves the action for a later pass. At the
end of each pass ``sync`` brings HAProxy and dnsmasq in line. The rules (which state a server is
in, when a drain is over) are ``gaia.domain.access``; this module only runs the programs.

The balancer reaches instances at their pod addresses: Galaxy's underlay (floating IP) and
host modes are routable from the platform's hosts by design; a simulated cluster's are not, so
its apps get a backend whose servers nothing answers (every request 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gaia.children import child_running, stop_child
from gaia.domain.access import (
    AppKey,
    Backend,
    DrainBook,
    Seen,
    ServerState,
    backend_of,
    parse_server_states,
    parse_stat,
    render_haproxy,
    render_hosts,
    runtime_commands,
    server_name,
)

log = logging.getLogger(__name__)


class AccessUnavailable(RuntimeError):
    """HAProxy or dnsmasq would not start, or refused a configuration; the message has their
    own words."""


def _write(path: Path, text: str) -> bool:
    """Replace ``path`` atomically with ``text``; False when it already held it."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


# how long a socket that refuses is tried again: HAProxy's master re-executes itself after its
# worker is ready and at every reload, and its CLI socket refuses connections meanwhile
REFUSED_RETRY_S = 2.0


def _ask(path: Path, command: str, *, timeout_s: float = 5) -> str:
    """One command on an HAProxy UNIX socket (runtime API or master CLI); its whole answer."""
    deadline = time.monotonic() + REFUSED_RETRY_S
    while True:
        try:
            return _ask_once(path, command, timeout_s=timeout_s)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _ask_once(path: Path, command: str, *, timeout_s: float) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class Haproxy:
    """``haproxy -W`` as a child of this process, its configuration and its sockets."""

    def __init__(self, *, binary: str, folder: Path, bind: str) -> None:
        self.binary = binary
        self.folder = folder
        self.bind = bind
        self.config = folder / "haproxy.cfg"
        self.map_file = folder / "domains.map"
        self.admin = folder / "admin.sock"
        self.master = folder / "master.sock"
        self.log_file = folder / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def render(self, backends: Iterable[Backend]) -> tuple[str, str]:
        files = render_haproxy(
            backends, bind=self.bind, admin_socket=str(self.admin), map_file=str(self.map_file)
        )
        return files.config, files.domains

    def write(self, config: str, domains: str) -> None:
        """Write both files and have HAProxy check them (``-c``) before anyone loads them."""
        _write(self.map_file, domains)
        candidate = self.folder / "haproxy.cfg.new"
        candidate.write_text(config)
        checked = subprocess.run(  # noqa: S603 (a fixed binary, our own file)
            [self.binary, "-c", "-q", "-f", str(candidate)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if checked.returncode != 0:
            raise AccessUnavailable(f"haproxy refused its configuration: {checked.stderr[-1500:]}")
        os.replace(candidate, self.config)

    def start(self, *, timeout_s: float = 15) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in (self.admin, self.master):
            stale.unlink(missing_ok=True)
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 (a fixed binary, our own config)
                [self.binary, "-W", "-db", "-S", f"{self.master},mode,600", "-f", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_worker(None, timeout_s=timeout_s)
        log.info("access: haproxy started on %s (pid %d)", self.bind, self.process.pid)

    def worker_pid(self) -> int | None:
        try:
            info = _ask(self.admin, "show info", timeout_s=2)
        except OSError:
            return None
        for line in info.splitlines():
            if line.startswith("Pid: "):
                return int(line.split()[1])
        return None

    def _wait_worker(self, old: int | None, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            pid = self.worker_pid()
            if pid is not None and pid != old:
                return
            if self.process is None or self.process.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-1500:]
                raise AccessUnavailable(f"haproxy exited: {tail}")
            if time.monotonic() > deadline:
                raise AccessUnavailable(f"haproxy's worker did not answer in {timeout_s:g} s")
            time.sleep(0.05)

    def reload(self, *, timeout_s: float = 15) -> None:
        """A new worker with the written configuration; returns once it answers."""
        old = self.worker_pid()
        _ask(self.master, "reload")
        self._wait_worker(old, timeout_s=timeout_s)

    def command(self, command: str) -> str:
        return _ask(self.admin, command)

    def running(self) -> bool:
        return child_running(self.process)

    def server_states(self) -> dict[tuple[str, str], ServerState]:
        return parse_server_states(self.command("show servers state"))

    def workers(self) -> list[int]:
        """The pids of the current worker and of the old ones still finishing requests they
        held at a reload (the master's ``show proc``)."""
        pids = []
        section = ""
        for line in _ask(self.master, "show proc;quit").splitlines():
            if line.startswith("#"):
                section = line
                continue
            parts = line.split()
            if parts and parts[0].isdigit() and section in ("# workers", "# old workers"):
                pids.append(int(parts[0]))
        return pids

    def in_flight(self) -> dict[tuple[str, str], int]:
        """Requests in flight per (backend, server), summed over every worker: a request an
        old worker held at a reload is still in flight on its server."""
        total: dict[tuple[str, str], int] = {}
        for pid in self.workers():
            for where, count in parse_stat(_ask(self.master, f"@!{pid} show stat;quit")).items():
                total[where] = total.get(where, 0) + count
        return total

    def stop(self, timeout_s: float = 10) -> None:
        stop_child(self.process, timeout_s=timeout_s)


class Dnsmasq:
    """``dnsmasq`` answering the bound domains, as a child of this process. It keeps this
    process's user (as root, root): the hosts file is read again after every change, and
    dnsmasq's own ``nobody`` could not reach a data dir under /root."""

    def __init__(self, *, binary: str, folder: Path, listen: str) -> None:
        self.binary = binary
        self.folder = folder
        host, _, port = listen.rpartition(":")
        self.address = host.strip("[]") or "127.0.0.1"
        self.port = int(port or 53)
        self.hosts = folder / "hosts"
        self.log_file = folder / "dnsmasq.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 10) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.hosts.exists():
            self.hosts.write_text("")
        user = pwd.getpwuid(os.geteuid()).pw_name
        argv = [
            self.binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-negcache",
            "--local-ttl=5",
            f"--addn-hosts={self.hosts}",
            f"--listen-address={self.address}",
            f"--port={self.port}",
            "--bind-interfaces",
            "--pid-file=",
            f"--user={user}",
            "--log-facility=-",
        ]
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 (a fixed binary, fixed options)
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while "started, version" not in self.log_file.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_file.read_text(errors="replace")[-1500:]
                raise AccessUnavailable(f"dnsmasq did not start on {self.address}: {tail}")
            time.sleep(0.05)
        log.info("access: dnsmasq on %s:%d (pid %d)", self.address, self.port, self.process.pid)

    def running(self) -> bool:
        return child_running(self.process)

    def update(self, text: str) -> bool:
        """Write the hosts file; tell dnsmasq to read it again when it changed."""
        if not _write(self.hosts, text):
            return False
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
        return True

    def stop(self, timeout_s: float = 10) -> None:
        stop_child(self.process, timeout_s=timeout_s)


@dataclass
class _Observed:
    domain: str
    port: int
    seen: tuple[Seen, ...]


@dataclass
class AccessGateway:
    """What the app controller talks to (see the module docstring)."""

    haproxy: Haproxy
    dns: Dnsmasq
    address: str  # what the domains resolve to: the balancer's address as clients reach it
    drains: DrainBook = field(default_factory=DrainBook)
    _apps: dict[AppKey, _Observed] = field(default_factory=dict)
    _members: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reloads: int = 0
    drains_started: int = 0

    def start(self) -> None:
        self.haproxy.folder.mkdir(parents=True, exist_ok=True)
        config, domains = self.haproxy.render([])
        self.haproxy.write(config, domains)
        self.haproxy.start()
        self._members = ()
        try:
            self.dns.start()
        except AccessUnavailable:
            self.haproxy.stop()
            raise

    def stop(self) -> None:
        self.haproxy.stop()
        self.dns.stop()

    # -------------------------------------------------------- what the app controller calls

    def observe(self, key: AppKey, *, domain: str, port: int, seen: Iterable[Seen]) -> None:
        """The app's instances as the controller observed them this pass."""
        listed = tuple(seen)
        self._apps[key] = _Observed(domain=domain, port=port, seen=listed)
        self.drains.observe(key, listed, now=time.monotonic())

    def serves(self, key: AppKey) -> bool:
        return key in self._apps

    async def may_stop(self, key: AppKey, name: str) -> bool:
        """Whether the controller may stop instance ``name`` of ``key`` now (see
        ``DrainBook.may_stop``). The first ask drains it at once, not at the pass's end."""
        app = self._apps.get(key)
        seen = next((s for s in app.seen if s.name == name), None) if app else None
        if app is None or seen is None:
            return True
        backend = backend_of(
            key, domain=app.domain, port=app.port, seen=app.seen, drains=self.drains
        )
        server = next((s for s in backend.servers if s.name == server_name(name)), None)
        in_flight: int | None = None
        if server is not None:
            try:
                counts = await asyncio.to_thread(self.haproxy.in_flight)
                in_flight = counts.get((backend.name, server.name))
            except OSError as exc:
                log.warning("access: haproxy's runtime API: %s", exc)
        was = self.drains.draining(key, name)
        allowed = self.drains.may_stop(key, seen, now=time.monotonic(), in_flight=in_flight)
        if not was and self.drains.draining(key, name):
            self.drains_started += 1
            await self.sync()  # drain it now: every request from here goes elsewhere
        return allowed

    async def sync(
        self, *, keep: set[AppKey] | None = None, drop: set[AppKey] | None = None
    ) -> None:
        """Bring HAProxy and dnsmasq in line with what was observed; ``keep``: the apps that
        still have a domain (the others are dropped); ``drop``: apps that no longer have one
        (the app controller's partial pass knows of some apps only)."""
        async with self._lock:
            gone = set(drop or ())
            if keep is not None:
                gone |= {k for k in self._apps if k not in keep}
            for key in gone:
                if self._apps.pop(key, None) is not None:
                    self.drains.forget_app(key)
            await asyncio.to_thread(self._sync)

    def backends(self) -> list[Backend]:
        return [
            backend_of(key, domain=o.domain, port=o.port, seen=o.seen, drains=self.drains)
            for key, o in sorted(dict(self._apps).items(), key=lambda kv: kv[0].backend)
        ]

    def _sync(self) -> None:
        backends = self.backends()
        members = tuple((b.name, b.domain, b.members()) for b in backends)
        if members != self._members:
            config, domains = self.haproxy.render(backends)
            self.haproxy.write(config, domains)
            self.haproxy.reload()
            self.reloads += 1
            self._members = members
        commands = runtime_commands(backends, self.haproxy.server_states())
        for command in commands:
            answer = self.haproxy.command(command).strip()
            if answer:
                log.warning("access: haproxy %r: %s", command, answer)
        self.dns.update(render_hosts([b.domain for b in backends if b.domain], self.address))

    def states(self) -> Mapping[tuple[str, str], ServerState]:
        return self.haproxy.server_states()

    def up(self) -> bool:
        return self.haproxy.running() and self.dns.running()
