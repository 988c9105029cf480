"""The access layer's programs (gaia.controllers.access) with the real HAProxy and dnsmasq of
Debian, in front of small HTTP servers on loopback addresses standing in for instances (one per
address, all on one port, as pods would be). What is shown: routing by ``Host``, only ready
servers get requests, a drain takes effect before ``may_stop`` says yes and waits for a request
in flight, states survive a reload, and the DNS answers follow the bound domains."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import shutil
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gaia.controllers.access import AccessGateway, AccessUnavailable, Dnsmasq, Haproxy
from gaia.domain.access import AppKey, Seen, ServerState
from tests.conftest import missing_component
from tests.support.kube import free_port

KEY = AppKey("c1", "alpha", "web")
T0 = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _instance(address: str, port: int, name: str, hold: threading.Event) -> _Server:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/slow":
                hold.wait(timeout=20)
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Bed:
    gateway: AccessGateway
    url: str
    dns_port: int
    port: int  # the instances' port
    hold: threading.Event

    def get(self, host: str, path: str = "/") -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Host": host}, timeout=30)

    def spread(self, host: str, n: int = 12) -> Counter[str]:
        return Counter(self.get(host).text for _ in range(n))

    def observe(self, *seen: Seen, domain: str = "web.example.com") -> None:
        self.gateway.observe(KEY, domain=domain, port=self.port, seen=seen)
        asyncio.run(self.gateway.sync())

    def resolve(self, name: str) -> list[str]:
        import dns.exception
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.dns_port
        try:
            return [a.to_text() for a in resolver.resolve(name, "A")]
        except dns.exception.DNSException:
            return []


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    for tool in ("haproxy", "dnsmasq"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            missing_component(tool, "scripts/test.sh installs it (Debian)")
    port, access, dns_port = free_port(), free_port(), free_port()
    hold = threading.Event()
    servers = [_instance(f"127.0.0.{i + 2}", port, f"web-{i}", hold) for i in range(3)]
    gateway = AccessGateway(
        haproxy=Haproxy(binary="haproxy", folder=tmp_path / "access", bind=f"127.0.0.1:{access}"),
        dns=Dnsmasq(binary="dnsmasq", folder=tmp_path / "access", listen=f"127.0.0.1:{dns_port}"),
        address="192.0.2.10",
    )
    gateway.start()
    try:
        yield Bed(gateway, f"http://127.0.0.1:{access}", dns_port, port, hold)
    finally:
        hold.set()
        gateway.stop()
        for server in servers:
            server.shutdown()
            server.server_close()


def web(i: int, *, ready: bool = True, restarts: int = 0) -> Seen:
    return Seen(f"web-{i}", f"127.0.0.{i + 2}", ready, T0, restarts)


def test_requests_go_by_host_to_the_ready_instances_only(bed: Bed) -> None:
    bed.observe(web(0), web(1), web(2, ready=False))
    assert set(bed.spread("web.example.com")) == {"web-0", "web-1"}
    assert set(bed.spread("WEB.example.com:8080")) == {"web-0", "web-1"}  # case and port
    assert bed.get("nobody.example.com").status_code == 503
    bed.observe(web(0), web(1), web(2))  # web-2 became ready: no reload, a runtime change
    assert bed.gateway.reloads == 1
    assert set(bed.spread("web.example.com")) == {"web-0", "web-1", "web-2"}
    assert bed.gateway.up()


def test_a_drain_takes_effect_at_once_and_waits_for_the_request_in_flight(bed: Bed) -> None:
    bed.observe(web(0))
    slow: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: slow.append(bed.get("web.example.com", "/slow")))
    thread.start()
    eventually_in_flight = time.monotonic() + 10
    while bed.gateway.haproxy.in_flight().get((KEY.backend, "web-0"), 0) == 0:
        assert time.monotonic() < eventually_in_flight, "the slow request never arrived"
        time.sleep(0.05)
    bed.gateway.drains.min_drain_s = 0.2
    bed.observe(web(0), web(1))
    assert asyncio.run(bed.gateway.may_stop(KEY, "web-0")) is False
    # drained before the controller heard yes: new requests go to web-1 only
    assert bed.gateway.states()[(KEY.backend, "web-0")] is ServerState.DRAIN
    assert set(bed.spread("web.example.com")) == {"web-1"}
    time.sleep(0.3)
    assert asyncio.run(bed.gateway.may_stop(KEY, "web-0")) is False  # one request in flight
    bed.hold.set()
    thread.join(timeout=20)
    assert slow and slow[0].status_code == 200 and slow[0].text == "web-0"
    assert asyncio.run(bed.gateway.may_stop(KEY, "web-0")) is True
    assert bed.gateway.drains_started == 1
    # the container swapped in place is ready again: back in the rotation
    bed.observe(web(0, restarts=1), web(1))
    assert set(bed.spread("web.example.com")) == {"web-0", "web-1"}


def test_states_survive_a_reload_and_apps_gone_are_dropped(bed: Bed) -> None:
    bed.observe(web(0), web(1))
    assert asyncio.run(bed.gateway.may_stop(KEY, "web-0")) is False  # draining
    bed.observe(web(0), web(1), web(2))  # a new instance: a reload
    assert bed.gateway.reloads == 2  # the first sync, and this one
    assert bed.gateway.states()[(KEY.backend, "web-0")] is ServerState.DRAIN
    assert set(bed.spread("web.example.com")) == {"web-1", "web-2"}
    asyncio.run(bed.gateway.sync(keep=set()))  # the app was deleted, or lost its domain
    assert bed.get("web.example.com").status_code == 503
    assert bed.gateway.backends() == []


def test_the_domains_resolve_to_the_balancer_and_follow_changes(bed: Bed) -> None:
    bed.observe(web(0))
    assert bed.resolve("web.example.com") == ["192.0.2.10"]
    assert bed.resolve("nobody.example.com") == []
    bed.observe(web(0), domain="www.example.com")
    deadline = time.monotonic() + 5
    while bed.resolve("www.example.com") != ["192.0.2.10"]:
        assert time.monotonic() < deadline, "dnsmasq did not read the new hosts"
        time.sleep(0.05)
    assert bed.resolve("web.example.com") == []
    assert bed.get("www.example.com").text == "web-0"


def test_a_program_that_cannot_start_is_said_so(tmp_path: Path) -> None:
    busy = free_port()
    with socketserver.TCPServer(("127.0.0.1", busy), http.server.BaseHTTPRequestHandler):
        gateway = AccessGateway(
            haproxy=Haproxy(
                binary="haproxy", folder=tmp_path / "a", bind=f"127.0.0.1:{free_port()}"
            ),
            dns=Dnsmasq(binary="dnsmasq", folder=tmp_path / "a", listen=f"127.0.0.1:{busy}"),
            address="127.0.0.1",
        )
        with pytest.raises(AccessUnavailable, match="dnsmasq did not start"):
            gateway.start()
        assert not gateway.haproxy.running()  # nothing left half-started
