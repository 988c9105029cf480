"""Issue 20's alert journey in a real browser, with nothing played by the test but the load.

A live platform runs its own loops every second (the collector reads the sim cluster's metrics,
the evaluator runs the policies, the delivery loop sends the outbox). The user creates an alert
policy on an app's CPU from the console's policy form, with a webhook channel whose far side is a
real HTTP receiver (``tests.support.http_fakes.WebhookReceiver``). The app's CPU is raised
through the sim cluster's own fault API (``{"kind": "load"}``: the instances then use 95 % of
their request, as the collector measures them), so the alert fires; the records page shows it,
its notification waits (the receiver holds the first request until the test lets it go) and
turns to sent with the receiver's receipt. The user silences it from the record's page; the load
drops, the alert resolves, and the silence mutes the resolution: the receiver hears nothing more.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.console.conftest import Console, live_console
from tests.console.test_browser import QUOTA, TIMEOUT_MS, csp_violations, log_in
from tests.support.egress import allow_loopback_egress
from tests.support.http_fakes import WebhookReceiver

__all__ = ["allow_loopback_egress"]  # autouse: the channel's receiver is on 127.0.0.1

FAULTS = "/api/v1/clusters/sim-1/sim/faults"


@pytest.fixture
def fast_console(tmp_path: Path) -> Iterator[Console]:
    """The console with the monitoring loops every second, so the journey takes seconds."""
    with live_console(tmp_path, metrics_interval_seconds=1, alert_eval_interval_seconds=1) as bed:
        yield bed


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield cast(WebhookReceiver, server)


def reload_until(page: Any, shown: Callable[[], bool], *, what: str, within_s: float = 90) -> None:
    """Reload the page until ``shown()`` holds, as a user pressing F5 would (these pages do not
    refresh themselves)."""
    deadline = time.monotonic() + within_s
    while True:
        page.reload()
        if shown():
            return
        assert time.monotonic() < deadline, f"not shown within {within_s} s: {what}"
        page.wait_for_timeout(500)


def test_an_app_cpu_alert_fires_is_sent_silenced_from_the_console_and_resolves_muted(
    fast_console: Console, receiver: WebhookReceiver, browser: Any, shots: Path
) -> None:
    console = fast_console
    console.api("POST", "/api/v1/businesses", json={"name": "shop"})
    console.api("PUT", "/api/v1/businesses/shop/quotas/sim-1", json={"hard": QUOTA})
    console.api(
        "POST",
        "/api/v1/businesses/shop/apps",
        json={
            "name": "web",
            "cluster": "sim-1",
            "replicas": 2,
            "templates": [{"name": "v1", "image": "shop/web:1", "resources": {"cpu": 1}}],
        },
    )
    hook = console.api(
        "POST",
        "/api/v1/alerts/channels",
        json={
            "business": "shop",
            "name": "ops-hook",
            "kind": "webhook",
            "config": {"url": receiver.url},
        },
    )
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    violations = csp_violations(page)
    page.set_default_timeout(TIMEOUT_MS)
    log_in(page, console, "admin", ADMIN_PASSWORD)

    # the policy, from the console's form: the app's CPU above 80 % for 3 s, to the webhook
    page.goto(f"{console.origin}/console/alerts/policies/new")
    page.locator("#p-business").select_option("shop")
    page.locator("#p-scope").select_option("app")
    page.locator("#p-cluster").select_option("sim-1")
    page.get_by_label("App", exact=True).fill("web")
    page.get_by_label("Metric", exact=True).select_option("gaia_app_cpu_usage_percent")
    page.get_by_label("Policy name").fill("web CPU high")
    page.get_by_label("Comparison").select_option(">")
    page.get_by_label("Threshold").fill("80")
    page.get_by_label("For (seconds)").fill("3")
    page.get_by_label("Severity").select_option("critical")
    page.get_by_label("Repeat every (seconds)").fill("0")
    page.get_by_role("checkbox", name=re.compile("ops-hook")).check()
    page.get_by_role("button", name="Create policy").click()
    page.wait_for_url(re.compile(r".*/console/alerts/policies/\d+\?ok=.*"))
    (policy,) = console.api("GET", "/api/v1/alerts/policies")["items"]
    assert policy["scope"] == "app" and policy["matchers"]["app"] == "web"
    assert policy["channel_ids"] == [hook["id"]] and policy["for_seconds"] == 3

    # the app's CPU passes the threshold; the receiver holds the first notification
    receiver.stall_next()
    console.api(
        "POST", FAULTS, json={"kind": "load", "namespace": "shop", "app": "web", "cpu_percent": 95}
    )
    page.goto(f"{console.origin}/console/alerts")
    rows = page.locator("tr[id^='alert-']")
    reload_until(page, lambda: rows.count() > 0, what="the firing alert on the records page")
    assert "firing" in rows.first.inner_text() and "critical" in rows.first.inner_text()
    page.get_by_role("link", name="web CPU high").first.click()
    page.wait_for_url(re.compile(r".*/console/alerts/\d+$"))
    record_id = int(page.url.rsplit("/", 1)[1])
    notification = page.locator("table.notifications tbody tr")
    assert notification.count() == 1
    # queued (pending) or in flight to the held receiver (sending): not sent yet
    waiting = notification.locator("td").nth(2).inner_text().strip()
    assert waiting in ("pending", "sending"), notification.inner_text()
    assert "ops-hook" in notification.inner_text() and "firing" in notification.inner_text()
    value = page.locator("dl.facts").inner_text()
    assert "gaia_app_cpu_usage_percent > 80" in value
    page.screenshot(path=str(shots / "alert-journey-waiting.png"), full_page=True)

    receiver.release()
    reload_until(
        page,
        lambda: notification.locator("td").nth(2).inner_text().strip() == "sent",
        what="the notification sent",
    )
    assert "receipt" in notification.inner_text()
    (call,) = receiver.requests
    assert call.json()["status"] == "firing"
    assert call.json()["alerts"][0]["labels"]["app"] == "web"
    page.screenshot(path=str(shots / "alert-journey-sent.png"), full_page=True)

    # silenced from the record's page, then the load drops: resolved, and nothing more is sent
    page.get_by_label("For (hours)").fill("1")
    page.get_by_label("Comment").fill("scaling web out")
    page.get_by_role("button", name="Silence").click()
    page.wait_for_url(re.compile(r".*ok=.*"))
    assert "silenced until" in page.locator(".flash").inner_text()
    (silence,) = console.api("GET", "/api/v1/alerts/silences")["items"]
    assert silence["matchers"]["app"] == "web" and silence["comment"] == "scaling web out"

    console.api("POST", FAULTS, json={"kind": "clear_load", "namespace": "shop", "app": "web"})
    page.goto(f"{console.origin}/console/alerts/{record_id}")
    reload_until(
        page,
        lambda: page.locator("h1").inner_text().strip().endswith("resolved"),
        what="the alert resolved",
    )
    facts = page.locator("dl.facts").inner_text()
    assert f"silence {silence['id']}" in facts
    assert notification.count() == 1  # the firing one: the resolution was muted
    page.screenshot(path=str(shots / "alert-journey-resolved.png"), full_page=True)
    page.goto(f"{console.origin}/console/alerts?status=resolved")
    assert "resolved" in page.locator(f"#alert-{record_id}").inner_text()
    page.wait_for_timeout(2000)  # two more delivery passes: still only the firing call
    assert len(receiver.requests) == 1
    assert violations == []
    page.close()
