"""Alerts from Debian's real Alertmanager land in the platform's records and channels.

Gaia runs under uvicorn; ``prometheus-alertmanager`` is configured with a webhook receiver that
posts to ``/api/v1/alerts/alertmanager`` with a bearer token. Alerts are pushed into Alertmanager
through its own API (as Prometheus would, after evaluating the exported rule files); the record
opens, the policy's webhook channel is notified, and the resolve follows the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from gaia.domain.alerts import fingerprint
from gaia.monitor.metrics.series import Sample
from gaia.platform import Platform
from tests.conftest import World, missing_component
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.http_fakes import WebhookReceiver
from tests.support.kube import free_port
from tests.support.live import serve

A = "/api/v1/alerts"
AM_TOKEN = "alertmanager-token-for-tests-1"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield cast(WebhookReceiver, server)


@pytest.fixture
def policy(world: World, platform: Platform, receiver: WebhookReceiver) -> dict[str, Any]:
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    h.post(
        f"{BIZ}/apps",
        {"name": "web", "cluster": "sim-1", "templates": [template("v1", "r.local/web:v1")]},
        status=201,
    )
    r = world.client.post(
        f"{A}/channels",
        json={
            "business": "alpha",
            "name": "hook",
            "kind": "webhook",
            "config": {"url": receiver.url},
            "rate_limit_per_minute": 0,
        },
        headers=world.as_("business-admin"),
    )
    assert r.status_code == 201, r.text
    r = world.client.post(
        f"{A}/policies",
        json={
            "business": "alpha",
            "name": "web cpu",
            "scope": {"kind": "app", "app": "web"},
            "metric": "gaia_instance_cpu_usage_percent",
            "threshold": 80,
            "for_seconds": 0,
            "channel_ids": [r.json()["id"]],
        },
        headers=world.as_("developer"),
    )
    assert r.status_code == 201, r.text
    platform.settings.alertmanager_token = AM_TOKEN
    return cast(dict[str, Any], r.json())


def series_labels() -> dict[str, str]:
    return {"cluster": "sim-1", "business": "alpha", "app": "web", "instance": "web-0"}


def am_alert(
    policy: dict[str, Any], *, value: str, ends: dt.datetime | None = None
) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {
            "alertname": "web_cpu",
            "severity": "warning",
            "gaia_policy_id": str(policy["id"]),
            "job": "gaia-clusters",
            **series_labels(),
        },
        "annotations": {"summary": "web cpu high", "value": value},
        "startsAt": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat(),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def wait_for(check: Callable[[], Any], *, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def alertmanager(tmp_path: Path, platform: Platform) -> Iterator[Callable[[str], str]]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        missing_component("Alertmanager", "apt-get install prometheus-alertmanager")
    assert binary is not None
    procs: list[subprocess.Popen[bytes]] = []

    def start(gaia_origin: str) -> str:
        port = free_port()
        config = tmp_path / "alertmanager.yml"
        config.write_text(
            f"""
route:
  receiver: gaia
  group_by: [alertname, gaia_policy_id, instance]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: gaia
    webhook_configs:
      - url: {gaia_origin}/api/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {AM_TOKEN}
"""
        )
        log = (tmp_path / "alertmanager.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        origin = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "alertmanager.log").read_text()
            try:
                return httpx.get(f"{origin}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, what="Alertmanager to start")
        return origin

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_alertmanager_alerts_open_and_resolve_records_and_notify(
    world: World,
    platform: Platform,
    policy: dict[str, Any],
    receiver: WebhookReceiver,
    alertmanager: Callable[[str], str],
) -> None:
    delivery = platform.notification_delivery()
    with serve(platform) as origin:
        am = alertmanager(origin)
        r = httpx.post(f"{am}/api/v2/alerts", json=[am_alert(policy, value="93.5")], timeout=10)
        assert r.status_code == 200, r.text

        def records() -> list[dict[str, Any]]:
            got = world.client.get(f"{A}/records", headers=world.admin).json()
            return cast(list[dict[str, Any]], got["items"])

        (rec,) = wait_for(records, what="Alertmanager's webhook to open a record")
        assert rec["source"] == "alertmanager" and rec["status"] == "firing"
        assert rec["value"] == 93.5 and rec["policy_id"] == policy["id"]
        # the same fingerprint the platform's evaluator gives this alert (job is not a label
        # of the series in the catalogue)
        assert rec["labels"] == series_labels()
        asyncio.run(delivery.run_once())
        assert [req.json()["status"] for req in receiver.requests] == ["firing"]

        ended = dt.datetime.now(dt.UTC)
        r = httpx.post(
            f"{am}/api/v2/alerts", json=[am_alert(policy, value="12", ends=ended)], timeout=10
        )
        assert r.status_code == 200, r.text
        wait_for(lambda: records()[0]["status"] == "resolved", what="the resolve from Alertmanager")
        asyncio.run(delivery.run_once())
        assert [req.json()["status"] for req in receiver.requests] == ["firing", "resolved"]
        full = world.client.get(f"{A}/records/{rec['id']}", headers=world.admin).json()
        assert full["resolved_value"] == 12
        assert [n["state"] for n in full["notifications"]] == ["sent", "sent"]
        audit = world.client.get(
            "/api/v1/records", headers=world.admin, params={"action": "alerts.alertmanager"}
        ).json()["items"]
        assert audit and all(a["actor"] == "alertmanager" for a in audit)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_platform_and_alertmanager_firing_the_same_alert_make_one_record(
    world: World, platform: Platform, policy: dict[str, Any]
) -> None:
    at = platform.clock.now().timestamp()
    asyncio.run(
        platform.metric_store.write(
            [Sample("gaia_instance_cpu_usage_percent", series_labels(), 95.0, at)]
        )
    )
    asyncio.run(platform.alert_evaluator().run_once())
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "gaia",
        "alerts": [{"status": "firing", **am_alert(policy, value="95")}],
    }
    headers = {"Authorization": f"Bearer {AM_TOKEN}"}
    r = world.client.post(f"{A}/alertmanager", json=payload, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"fired": 0, "resolved": 0, "duplicates": 1, "unrouted": 0}
    (rec,) = world.client.get(f"{A}/records", headers=world.admin).json()["items"]
    assert rec["source"] == "platform"
    assert fingerprint(policy["id"], series_labels()).startswith(f"{policy['id']}-")

    # unauthenticated or non-admin callers are refused; unknown alerts are kept, unrouted
    assert world.client.post(f"{A}/alertmanager", json=payload).status_code == 401
    r = world.client.post(f"{A}/alertmanager", json=payload, headers=world.as_("developer"))
    assert r.status_code == 403
    stray = {**payload, "alerts": [{"status": "firing", **am_alert(policy, value="1")}]}
    stray["alerts"][0]["labels"] = {"alertname": "SomethingElse", "severity": "info"}
    r = world.client.post(f"{A}/alertmanager", json=stray, headers=headers)
    assert r.json()["unrouted"] == 1 and r.json()["fired"] == 1
    platform_only = world.client.get(f"{A}/records", headers=world.admin, params={"business": "-"})
    assert [x["policy_name"] for x in platform_only.json()["items"]] == ["SomethingElse"]
    seen = world.client.get(f"{A}/records", headers=world.as_("viewer")).json()["items"]
    assert [x["policy_name"] for x in seen] == ["web cpu"]
