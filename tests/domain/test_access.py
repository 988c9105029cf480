"""The access layer's rules (gaia.domain.access): server states, the drain before a stop, what
HAProxy and dnsmasq are given, and how HAProxy's runtime answers are read."""

from __future__ import annotations

import datetime as dt

from gaia.domain.access import (
    AppKey,
    DrainBook,
    Seen,
    ServerState,
    backend_of,
    parse_server_states,
    parse_stat,
    render_haproxy,
    render_hosts,
    runtime_commands,
)

KEY = AppKey("c1", "alpha", "web")
T0 = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def seen(name: str, *, ready: bool = True, started: int = 0, restarts: int = 0) -> Seen:
    return Seen(name, "10.0.0.1", ready, T0 + dt.timedelta(seconds=started), restarts)


def test_servers_are_ready_maint_or_drain_and_instances_without_an_address_are_left_out() -> None:
    drains = DrainBook()
    insts = [seen("web-0"), seen("web-1", ready=False), Seen("web-2", "", True, T0)]
    drains.may_stop(KEY, insts[0], now=0, in_flight=None)
    backend = backend_of(KEY, domain="Web.Example.com", port=8080, seen=insts, drains=drains)
    assert [(s.name, s.address, s.state) for s in backend.servers] == [
        ("web-0", "10.0.0.1:8080", ServerState.DRAIN),
        ("web-1", "10.0.0.1:8080", ServerState.MAINT),
    ]
    assert backend.domain == "web.example.com"
    v6 = backend_of(KEY, domain="", port=80, seen=[Seen("a", "fd00::1", True, T0)], drains=drains)
    assert v6.servers[0].address == "[fd00::1]:80"


def test_a_ready_instance_is_drained_before_it_may_stop() -> None:
    drains = DrainBook(min_drain_s=1, max_drain_s=30)
    web = seen("web-0")
    assert drains.may_stop(KEY, web, now=100, in_flight=None) is False  # drain begins
    assert drains.draining(KEY, "web-0")
    assert drains.may_stop(KEY, web, now=100.5, in_flight=0) is False  # too soon
    assert drains.may_stop(KEY, web, now=101, in_flight=2) is False  # requests in flight
    assert drains.may_stop(KEY, web, now=101.2, in_flight=0) is True
    assert drains.may_stop(KEY, web, now=101.3, in_flight=5) is True  # once yes, stays yes


def test_a_stuck_request_does_not_block_a_stop_for_ever() -> None:
    drains = DrainBook(min_drain_s=1, max_drain_s=30)
    web = seen("web-0")
    drains.may_stop(KEY, web, now=0, in_flight=None)
    assert drains.may_stop(KEY, web, now=29, in_flight=1) is False
    assert drains.may_stop(KEY, web, now=30, in_flight=1) is True


def test_an_instance_that_is_not_ready_may_stop_at_once() -> None:
    drains = DrainBook()
    assert drains.may_stop(KEY, seen("web-0", ready=False), now=0, in_flight=None) is True
    assert not drains.draining(KEY, "web-0")


def test_the_drain_lasts_until_another_container_is_ready() -> None:
    """An in-place swap keeps the pod and, for a moment, its old readiness: only a new
    container (start time or restart count changed) that is ready ends the drain."""
    drains = DrainBook(min_drain_s=0)
    old = seen("web-0", started=0, restarts=0)
    drains.may_stop(KEY, old, now=0, in_flight=None)
    assert drains.may_stop(KEY, old, now=1, in_flight=0) is True
    drains.observe(KEY, [old], now=2)  # the old container, still "ready"
    assert drains.draining(KEY, "web-0")
    drains.observe(KEY, [seen("web-0", ready=False, started=5, restarts=1)], now=5)
    assert drains.draining(KEY, "web-0")  # the new one, not ready yet
    drains.observe(KEY, [seen("web-0", started=5, restarts=1)], now=6)
    assert not drains.draining(KEY, "web-0")
    # a restart within the same second still counts (the restart count moved)
    drains.may_stop(KEY, old, now=10, in_flight=None)
    drains.may_stop(KEY, old, now=11, in_flight=0)
    drains.observe(KEY, [seen("web-0", started=0, restarts=1)], now=12)
    assert not drains.draining(KEY, "web-0")


def test_a_drain_never_followed_by_a_stop_ends_and_a_gone_instance_is_forgotten() -> None:
    drains = DrainBook(abandon_s=15)
    web = seen("web-0")
    drains.may_stop(KEY, web, now=0, in_flight=None)  # then the upgrade is paused
    drains.observe(KEY, [web], now=10)
    assert drains.draining(KEY, "web-0")
    drains.observe(KEY, [web], now=15)
    assert not drains.draining(KEY, "web-0")
    drains.may_stop(KEY, web, now=20, in_flight=None)
    drains.observe(KEY, [], now=21)
    assert not drains.draining(KEY, "web-0")


def test_haproxy_is_given_a_backend_per_app_and_the_domains_in_a_map() -> None:
    drains = DrainBook()
    other = AppKey("c1", "beta", "api")
    web = backend_of(KEY, domain="web.example.com", port=8080, seen=[seen("web-0")], drains=drains)
    api = backend_of(
        other, domain="api.example.com", port=80, seen=[seen("api-0", ready=False)], drains=drains
    )
    files = render_haproxy(
        [web, api], bind="0.0.0.0:80", admin_socket="/run/a.sock", map_file="/run/d.map"
    )
    assert f"backend {web.name}" in files.config and f"backend {api.name}" in files.config
    assert "server web-0 10.0.0.1:8080 check" in files.config
    assert "server api-0 10.0.0.1:80 check inter 2s fall 2 rise 1 disabled" in files.config
    assert "map(/run/d.map,gaia_nobody)" in files.config
    assert "retry-on conn-failure\n" in files.config  # never a request already sent
    assert sorted(files.domains.split("\n")[:2]) == sorted(
        [f"web.example.com {web.name}", f"api.example.com {api.name}"]
    )
    # backends of apps with the same name in two businesses do not collide
    assert (
        web.name
        != backend_of(AppKey("c1", "beta", "web"), domain="", port=1, seen=[], drains=drains).name
    )


def test_runtime_commands_change_only_what_differs() -> None:
    drains = DrainBook()
    insts = [seen("web-0"), seen("web-1"), seen("web-2", ready=False)]
    drains.may_stop(KEY, insts[1], now=0, in_flight=None)
    backend = backend_of(KEY, domain="w.example.com", port=80, seen=insts, drains=drains)
    b = backend.name
    current = {
        (b, "web-0"): ServerState.DRAIN,  # back to ready
        (b, "web-1"): ServerState.READY,  # to drain
        (b, "web-2"): ServerState.MAINT,  # unchanged
    }
    assert runtime_commands([backend], current) == [
        f"set server {b}/web-0 weight 1",
        f"set server {b}/web-0 state ready",
        f"set server {b}/web-1 state drain",
    ]
    assert runtime_commands([backend], {}) == []  # not loaded yet: the reload brings them


def test_dnsmasq_hosts_point_every_domain_at_the_balancer() -> None:
    assert render_hosts(["b.example.com", "a.example.com", "a.example.com"], "192.0.2.1") == (
        "192.0.2.1 a.example.com\n192.0.2.1 b.example.com\n"
    )


def test_haproxys_runtime_answers_are_read() -> None:
    stat = (
        "# pxname,svname,qcur,qmax,scur,smax\n"
        "app_web,FRONTEND,,,3,5\n"
        "app_web,web-0,0,0,2,4\n"
        "app_web,web-1,0,0,0,1\n"
        "app_web,BACKEND,0,0,2,5\n"
    )
    assert parse_stat(stat) == {("app_web", "web-0"): 2, ("app_web", "web-1"): 0}
    states = (
        "1\n"
        "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n"
        "3 app_web 1 web-0 10.0.0.1 2 0 1\n"
        "3 app_web 2 web-1 10.0.0.2 2 8 1\n"
        "3 app_web 3 web-2 10.0.0.3 0 1 1\n"
        "3 app_web 4 web-3 10.0.0.4 2 0 0\n"
    )
    assert parse_server_states(states) == {
        ("app_web", "web-0"): ServerState.READY,
        ("app_web", "web-1"): ServerState.DRAIN,
        ("app_web", "web-2"): ServerState.MAINT,
        ("app_web", "web-3"): ServerState.DRAIN,
    }
