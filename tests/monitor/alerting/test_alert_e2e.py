"""Issue 6's end-to-end alert: a CPU policy on an app, an email and a webhook channel, the sim
app's load raised and dropped.

Everything between the load and the inbox is the platform's own code path: the sim's metrics →
the collector → the embedded store → the evaluator → the outbox → the email channel over
STARTTLS with AUTH to a real SMTP server (aiosmtpd) and the webhook channel to a real HTTP
receiver. Simulated time moves 15 s per cycle (the default collection and evaluation interval);
each cycle runs one pass of every loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest

from gaia.monitor.metrics.collector import MetricCollector
from gaia.platform import Platform
from tests.conftest import World
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.http_fakes import WebhookReceiver
from tests.support.smtp import SmtpServer

A = "/api/v1/alerts"
CYCLE_S = 15.0
FOR_S = 60


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(security="starttls", users={"gaia": "mail-password-1"}) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield cast(WebhookReceiver, server)


def test_cpu_policy_emails_and_calls_the_webhook_once_then_resolves(
    world: World, platform: Platform, smtp: SmtpServer, receiver: WebhookReceiver
) -> None:
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))

    def api(method: str, path: str, who: str = "developer", **kw: Any) -> Any:
        r = world.client.request(method, path, headers=world.as_(who), **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    h.post(
        f"{BIZ}/apps",
        {
            "name": "web",
            "cluster": "sim-1",
            "templates": [template("v1", "registry.local/web:v1", cpu=1, memory=1024)],
            "replicas": 2,
        },
        status=201,
    )
    h.settle(h.ready("web", 2))

    email = api(
        "post",
        f"{A}/channels",
        "business-admin",
        json={
            "business": "alpha",
            "name": "mail",
            "kind": "email",
            "config": smtp.channel_config(),
        },
    )
    hook = api(
        "post",
        f"{A}/channels",
        "business-admin",
        json={
            "business": "alpha",
            "name": "hook",
            "kind": "webhook",
            "config": {"url": receiver.url},
        },
    )
    oncall = api(
        "post",
        f"{A}/receivers",
        json={"business": "alpha", "name": "oncall", "email": "oncall@alpha.example.com"},
    )
    policy = api(
        "post",
        f"{A}/policies",
        json={
            "business": "alpha",
            "name": "web CPU high",
            "scope": {"kind": "app", "app": "web"},
            "metric": "gaia_app_cpu_usage_percent",
            "comparison": ">",
            "threshold": 80,
            "for_seconds": FOR_S,
            "severity": "critical",
            "receiver_ids": [oncall["id"]],
            "channel_ids": [email["id"], hook["id"]],
        },
    )

    collector = MetricCollector(
        db=platform.db,
        providers=platform.providers,
        store=platform.metric_store,
        clock=platform.clock,
        interval=CYCLE_S,
    )
    evaluator = platform.alert_evaluator()
    delivery = platform.notification_delivery()

    def cycle() -> None:
        h.tick(CYCLE_S)  # simulated time moves; the app controller runs a pass
        asyncio.run(collector.run_once())
        asyncio.run(evaluator.run_once())
        asyncio.run(delivery.run_once())

    def records() -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], api("get", f"{A}/records")["items"])

    # normal load (the web profile runs at a quarter of the request): nothing fires
    for _ in range(8):
        cycle()
    assert records() == []
    assert smtp.received == [] and receiver.requests == []

    api(
        "post",
        "/api/v1/clusters/sim-1/sim/faults",
        "platform-admin",
        json={"kind": "load", "namespace": "alpha", "app": "web", "cpu_percent": 95},
    )
    waited = 0.0
    while not records():
        cycle()
        waited += CYCLE_S
        assert waited <= FOR_S + 2 * CYCLE_S, "the alert did not fire after its for-duration"
    assert waited >= FOR_S  # not before the for-duration
    (rec,) = records()
    assert rec["status"] == "firing" and rec["policy_id"] == policy["id"]
    assert rec["value"] is not None and rec["value"] > 80
    assert rec["labels"]["app"] == "web" and rec["labels"]["business"] == "alpha"

    (mail,) = smtp.wait_for(1)
    assert mail.tls and mail.login == "gaia"
    assert mail.rcpt_tos == ["oncall@alpha.example.com"]
    assert "web CPU high" in str(mail.message["Subject"])
    (call,) = receiver.requests
    assert call.json()["status"] == "firing"

    # the load stays high: no second email, no second call
    for _ in range(6):
        cycle()
    assert len(smtp.received) == 1 and len(receiver.requests) == 1

    api(
        "post",
        "/api/v1/clusters/sim-1/sim/faults",
        "platform-admin",
        json={"kind": "clear_load", "namespace": "alpha", "app": "web"},
    )
    waited = 0.0
    while records()[0]["status"] == "firing":
        cycle()
        waited += CYCLE_S
        assert waited <= 3 * CYCLE_S, "the alert did not resolve when the load dropped"
    smtp.wait_for(2)
    resolved_mail = smtp.received[1]
    assert "RESOLVED" in str(resolved_mail.message["Subject"]).upper()
    assert [r.json()["status"] for r in receiver.requests] == ["firing", "resolved"]

    full = api("get", f"{A}/records/{rec['id']}")
    assert full["status"] == "resolved"
    assert full["resolved_value"] is not None and full["resolved_value"] < 80
    rows = sorted(
        (n["event"], n["channel_kind"], n["receiver"], n["state"]) for n in full["notifications"]
    )
    assert rows == [
        ("firing", "email", "oncall", "sent"),
        ("firing", "webhook", "", "sent"),
        ("resolved", "email", "oncall", "sent"),
        ("resolved", "webhook", "", "sent"),
    ]
    assert all(n["receipt"] for n in full["notifications"])
