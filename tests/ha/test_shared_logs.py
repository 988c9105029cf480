"""Issue 21's shared log store: two Gaia replicas on one PostgreSQL show the same logs.

Real ``gaia up`` processes (``tests/support/replicas.py``) on a real PostgreSQL server. The first
replica leads both loop groups: its app controller runs the app's instances in its sim cluster
(a sim is an in-process object: the second replica's sim holds no instance at all) and its log
collector copies their lines into the ``log_lines`` table. The second replica collects nothing
and has nothing live to fall back on, so its log API can only answer from the shared store.

What must hold, checked through each replica's HTTP API:

- the follower answers from the store (``source: "store"``), with the very page the leader
  answers (same ids, texts, cursor), and the leader's cursor pages on through the follower;
- retention by age: lines older than ``GAIA_LOG_STORE_MAX_AGE_SECONDS``, written straight into
  the table, are deleted by the leader's retention loop while the app's fresh lines stay.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.monitor.logs.postgres import PostgresLogStore
from gaia.monitor.logs.store import LogEntry, LogSelector, LogSource, SourceKind
from tests.conftest import QUOTA
from tests.support.apps_harness import template
from tests.support.postgres import PostgresServer
from tests.support.replicas import ReplicaSet
from tests.support.waiting import eventually

ADMIN_PASSWORD = "ha-logs-admin-password-1"
METRICS_TOKEN = "ha-logs-metrics-token-1"
SECRET_KEY = "Z2FpYS1oYS10ZXN0LXNlY3JldC1rZXktMzItYnl0ZXM="  # 32 bytes, urlsafe base64
BIZ = "/api/v1/businesses/hab"
MAX_AGE_S = 3600


@pytest.fixture
def replicas(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[tuple[ReplicaSet, str]]:
    url = postgres_server.create_database("gaia_ha_logs")
    env = {
        "GAIA_DATABASE_URL": url,
        "GAIA_SECRET_KEY": SECRET_KEY,
        "GAIA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GAIA_METRICS_TOKEN": METRICS_TOKEN,
        "GAIA_LOG_COLLECT_INTERVAL_SECONDS": "1",
        "GAIA_LOG_STORE_MAX_AGE_SECONDS": str(MAX_AGE_S),
        "GAIA_LOG_RETENTION_INTERVAL_SECONDS": "1",
    }
    rs = ReplicaSet(work=tmp_path, env=env, metrics_token=METRICS_TOKEN)
    leader, follower = rs.add(2)
    leader.start()
    leader.wait_ready()
    eventually(
        lambda: {"controllers", "monitoring"} <= leader.leads(METRICS_TOKEN),
        "the first replica leads both loop groups",
        timeout_s=30,
    )
    follower.start()
    follower.wait_ready()
    yield rs, url
    rs.stop()


def _call(client: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    r = client.request(method, path, json=body)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:400]}"
    return r.json() if r.content else None


def test_a_follower_reads_the_logs_the_leader_collected_and_old_lines_expire(
    replicas: tuple[ReplicaSet, str],
) -> None:
    rs, url = replicas
    leader, follower = rs.replicas
    token = _call(
        httpx.Client(base_url=leader.url, timeout=30),
        "POST",
        "/api/v1/auth/login",
        {"username": "admin", "password": ADMIN_PASSWORD},
    )["token"]
    headers = {"Authorization": f"Bearer {token}"}
    on_leader = httpx.Client(base_url=leader.url, headers=headers, timeout=30)
    on_follower = httpx.Client(base_url=follower.url, headers=headers, timeout=30)
    assert not follower.leads(METRICS_TOKEN)  # it collects nothing itself

    _call(on_follower, "POST", "/api/v1/businesses", {"name": "hab"})
    _call(on_follower, "POST", "/api/v1/clusters", {"name": "sim-1", "kind": "sim", "zone": "z1"})
    _call(on_follower, "PUT", f"{BIZ}/quotas/sim-1", {"hard": QUOTA})
    app = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "registry.local/web:v1", cpu=1, memory=512)],
        "replicas": 2,
    }
    _call(on_follower, "POST", f"{BIZ}/apps", app)

    logs = f"{BIZ}/apps/web/logs"

    def page(client: httpx.Client, **params: Any) -> dict[str, Any]:
        r = client.get(logs, params={"limit": 5, **params})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    eventually(
        lambda: (
            page(on_follower)["source"] == "store"
            and {i["instance"] for i in page(on_follower, limit=500)["items"]} == {"web-0", "web-1"}
        ),
        "the follower shows lines of both instances from the shared store",
    )
    banner = page(on_follower, q="starting web v1", limit=500)
    assert banner["source"] == "store" and len(banner["items"]) == 2

    # the collector keeps writing: compare pages until two reads in a row agree
    def same_pages() -> bool:
        first = page(on_leader)
        if first != page(on_follower) or first["next_cursor"] is None:
            return False
        older = {"cursor": first["next_cursor"]}
        return page(on_leader, **older) == page(on_follower, **older)

    eventually(same_pages, "the leader and the follower answer the same pages", timeout_s=30)

    # retention: lines an hour and more old, written by another process into the shared table
    store = PostgresLogStore(url, max_lines=100_000)
    try:
        old = LogSource(SourceKind.INSTANCE, "sim-1", "hab", "web", "web-7")
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=MAX_AGE_S + 600)
        written = store.append(
            [
                LogEntry(old, at=long_ago + dt.timedelta(seconds=i), text=f"old {i}")
                for i in range(3)
            ]
        )
        assert written == 3
        eventually(lambda: store.count(old) == 0, "the leader's retention deleted the old lines")
        web_7 = LogSelector.of_app(cluster="sim-1", namespace="hab", app="web", instance="web-7")
        assert not store.has_lines(web_7)
        web = LogSelector.of_app(cluster="sim-1", namespace="hab", app="web")
        assert store.has_lines(web)  # the fresh lines stay
    finally:
        store.close()
    assert page(on_follower)["source"] == "store"
