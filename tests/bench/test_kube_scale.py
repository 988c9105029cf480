"""bench/kube_scale.py's count of requests by sender (``RequestLog``, ``classify``) on hand-made
audit logs: each request goes to the phase whose counter read it finished before, and to the
sender its user agent names. No performance is asserted here (figures live in
docs/benchmarks.md); the bench itself needs the control plane and runs by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "bench"))

import kube_scale as bench


def event(
    at: str, agent: str, verb: str, resource: str = "", uri: str = "", received: str = ""
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "stage": "ResponseComplete",
        "verb": verb,
        "userAgent": agent,
        "requestURI": uri or f"/api/v1/{resource}",
        "requestReceivedTimestamp": received or at,
        "stageTimestamp": at,
    }
    if resource:
        name, _, sub = resource.partition("/")
        line["objectRef"] = {"resource": name, **({"subresource": sub} if sub else {})}
    return line


def at(second: int, micro: int = 0) -> str:
    return f"2026-12-06T04:00:{second:02d}.{micro:06d}Z"


def write(path: Path, *events: dict[str, Any]) -> None:
    with path.open("a") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")


def mark(n: int, arrived: str, finished: str) -> dict[str, Any]:
    return event(
        finished,
        bench.BENCH_AGENT,
        "get",
        uri=f"/metrics?{bench.MARK}={n}",
        received=arrived,
    )


def test_each_sender_is_told_by_its_user_agent_and_leases_go_apart() -> None:
    cases = {
        ("python-httpx2/2.17.0", "patch", "pods"): ("gaia", "PATCH pods"),
        ("python-httpx/0.29.0", "create", "pods"): ("gaia", "POST pods"),
        (
            "kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/x/replicaset-controller",
            "delete",
            "pods",
        ): ("controllers", "DELETE pods"),
        ("kube-scheduler/v1.37.2", "create", "pods/binding"): ("scheduler", "POST pods/binding"),
        ("kwok/v0.8.0", "patch", "pods/status"): ("kwok", "PATCH pods/status"),
        ("kwok/v0.8.0", "update", "leases"): ("leases", "PUT leases"),
        ("kube-apiserver/v1.37.2", "update", "leases"): ("leases", "PUT leases"),
        (bench.BENCH_AGENT, "list", "pods"): ("bench", "LIST pods"),
        ("curl/8.0", "get", "nodes"): ("other", "GET nodes"),
    }
    for (agent, verb, resource), wanted in cases.items():
        assert bench.classify(event(at(0), agent, verb, resource)) == wanted, agent
    discovery = event(at(0), "kube-apiserver/v1.37.2", "get", uri="/openapi/v3?timeout=32s")
    assert bench.classify(discovery) == ("apiserver", "GET -/openapi/v3")


def test_a_cut_takes_what_finished_before_the_marked_read_arrived(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    log = bench.RequestLog(log_path)
    write(
        log_path,
        event(at(1), "python-httpx2/2.17.0", "patch", "pods"),
        mark(1, arrived=at(2), finished=at(3)),
        event(at(4), "python-httpx2/2.17.0", "patch", "pods"),
        event(at(5), "kwok/v0.8.0", "patch", "pods/status"),
        # finished while the second read was served, logged before it: the next phase's
        event(at(6, 500), "kwok/v0.8.0", "update", "leases"),
        mark(2, arrived=at(6), finished=at(7)),
        event(at(8), "kwok/v0.8.0", "update", "leases"),
        mark(3, arrived=at(9), finished=at(9, 100)),
    )
    assert log.cut("1") == {"gaia": {"PATCH pods": 1}}
    assert log.cut("2") == {"gaia": {"PATCH pods": 1}, "kwok": {"PATCH pods/status": 1}}
    assert log.cut("3") == {"leases": {"PUT leases": 2}}


def test_a_cut_waits_for_the_marked_read_and_skips_other_reads_of_metrics(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "audit.log"
    log = bench.RequestLog(log_path)
    write(
        log_path,
        event(at(1), bench.BENCH_AGENT, "get", uri="/metrics"),  # an unmarked read
        event(at(2), "kube-scheduler/v1.37.2", "create", "pods/binding"),
    )
    # a line half written is not read until it ends
    with log_path.open("a") as f:
        f.write(json.dumps(mark(1, arrived=at(3), finished=at(4)))[:20])
    try:
        log.cut("1", timeout_s=0.2)
    except SystemExit as exc:
        assert "marked 1" in str(exc)
    else:
        raise AssertionError("a cut without its mark in the log must not return")
    with log_path.open("a") as f:
        f.write(json.dumps(mark(1, arrived=at(3), finished=at(4)))[20:] + "\n")
    assert log.cut("1") == {"scheduler": {"POST pods/binding": 1}}
