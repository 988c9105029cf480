"""From a breaching series to a delivered notification: the evaluator, the outbox and the
delivery loop, on both stores, against a real HTTP receiver (``WebhookReceiver``).

Simulated time is the platform's ``ManualClock``; the evaluator and the delivery loop are driven
one pass at a time. Two tests kill a real delivery process (SIGKILL) in the middle of a send and
show the notification is sent again, with the same idempotency key, by the next process, and
that a batch it had claimed ahead (the pass is a pipeline) is sent once, after its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from sqlalchemy import select

from gaia.clock import ManualClock
from gaia.monitor.alerting.channels import verify_signature
from gaia.monitor.alerting.delivery import (
    NOT_SENT_IN_TIME,
    NOT_SENT_STOPPED,
    NotificationDelivery,
)
from gaia.monitor.metrics.series import Sample
from gaia.platform import Platform
from gaia.store.models import AlertNotification
from tests.conftest import TEST_SECRET_KEY, World
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.egress import LOOPBACK_CIDRS
from tests.support.http_fakes import Reply, WebhookReceiver
from tests.support.smtp import SmtpServer

A = "/api/v1/alerts"
METRIC = "gaia_instance_cpu_usage_percent"
HMAC = "hmac-secret-for-tests-0001"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield cast(WebhookReceiver, server)


class Bed:
    def __init__(self, world: World, platform: Platform, receiver: WebhookReceiver) -> None:
        self.world = world
        self.platform = platform
        self.receiver = receiver
        self.evaluator = platform.alert_evaluator()
        self.delivery = platform.notification_delivery()
        h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
        h.post(
            f"{BIZ}/apps",
            {
                "name": "web",
                "cluster": "sim-1",
                "templates": [template("v1", "registry.local/web:v1")],
                "replicas": 1,
            },
            status=201,
        )
        self.channel = self.api(
            "post",
            f"{A}/channels",
            who="business-admin",
            json={
                "business": "alpha",
                "name": "hook",
                "kind": "webhook",
                "config": {"url": receiver.url, "hmac_secret": HMAC},
                "rate_limit_per_minute": 0,
            },
        )

    @property
    def clock(self) -> ManualClock:
        return cast(ManualClock, self.platform.clock)

    def api(self, method: str, path: str, *, who: str = "developer", **kw: Any) -> Any:
        r = self.world.client.request(method, path, headers=self.world.as_(who), **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def policy(self, **kw: Any) -> dict[str, Any]:
        body = {
            "business": "alpha",
            "name": "web cpu",
            "scope": {"kind": "app", "app": "web"},
            "metric": METRIC,
            "comparison": ">",
            "threshold": 80,
            "for_seconds": 30,
            "severity": "critical",
            "channel_ids": [self.channel["id"]],
            **kw,
        }
        return cast(dict[str, Any], self.api("post", f"{A}/policies", json=body))

    def load(self, value: float, *instances: str) -> None:
        at = self.clock.now().timestamp()
        samples = [
            Sample(
                METRIC,
                {"cluster": "sim-1", "business": "alpha", "app": "web", "instance": name},
                value,
                at,
            )
            for name in instances or ("web-0",)
        ]
        asyncio.run(self.platform.metric_store.write(samples))

    def evaluate(self) -> None:
        asyncio.run(self.evaluator.run_once())

    def deliver(self) -> None:
        asyncio.run(self.delivery.run_once())

    def step(self, seconds: float) -> None:
        self.clock.step(seconds)

    def rows(self) -> list[tuple[str, int, str]]:
        """Every notification's (state, attempts, last_error), oldest first."""
        with self.platform.db.read_session() as session:
            n = AlertNotification
            found = session.execute(select(n.state, n.attempts, n.last_error).order_by(n.id))
            return [(state, attempts, error) for state, attempts, error in found]

    def records(self, **params: Any) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.api("get", f"{A}/records", params=params)["items"])

    def record(self, record_id: int) -> dict[str, Any]:
        return cast(dict[str, Any], self.api("get", f"{A}/records/{record_id}"))


@pytest.fixture
def bed(world: World, platform: Platform, receiver: WebhookReceiver) -> Bed:
    return Bed(world, platform, receiver)


def test_fire_and_resolve_each_notify_once_with_a_signed_alertmanager_body(bed: Bed) -> None:
    bed.policy()
    bed.load(95)
    bed.evaluate()
    assert bed.records() == []  # pending: not for 30 s yet
    bed.step(15)
    bed.load(96)
    bed.evaluate()
    assert bed.records() == []
    bed.step(15)
    bed.load(97)
    bed.evaluate()
    (rec,) = bed.records()
    assert rec["status"] == "firing" and rec["value"] == 97
    assert rec["labels"] == {
        "cluster": "sim-1",
        "business": "alpha",
        "app": "web",
        "instance": "web-0",
    }
    bed.deliver()
    (req,) = bed.receiver.requests
    body = req.json()
    assert body["version"] == "4" and body["status"] == "firing"
    (alert,) = body["alerts"]
    assert alert["labels"]["instance"] == "web-0" and alert["labels"]["severity"] == "critical"
    assert verify_signature(
        HMAC,
        req.headers["x-gaia-timestamp"],
        req.body,
        req.headers["x-gaia-signature"],
        now=time.time(),
    )

    # still breaching: no second notification
    for _ in range(4):
        bed.step(15)
        bed.load(99)
        bed.evaluate()
        bed.deliver()
    assert len(bed.receiver.requests) == 1

    bed.step(15)
    bed.load(10)
    bed.evaluate()
    bed.deliver()
    assert [r.json()["status"] for r in bed.receiver.requests] == ["firing", "resolved"]
    full = bed.record(rec["id"])
    assert full["status"] == "resolved" and full["resolved_value"] == 10
    assert [(n["event"], n["state"], n["attempts"]) for n in full["notifications"]] == [
        ("firing", "sent", 1),
        ("resolved", "sent", 1),
    ]
    keys = [r.headers["x-gaia-idempotency-key"] for r in bed.receiver.requests]
    assert len(set(keys)) == 2


def test_a_failing_receiver_is_retried_with_backoff_then_sent(bed: Bed) -> None:
    bed.policy(for_seconds=0)
    bed.receiver.reply_next(Reply(503, {"error": "busy"}, {"Retry-After": "20"}))
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    (rec,) = bed.records()
    (n,) = bed.record(rec["id"])["notifications"]
    assert n["state"] == "retrying" and n["attempts"] == 1
    assert "503" in n["last_error"]
    bed.step(5)
    bed.deliver()  # not due yet (Retry-After 20 s)
    assert len(bed.receiver.requests) == 1
    bed.step(30)
    bed.deliver()
    (n,) = bed.record(rec["id"])["notifications"]
    assert n["state"] == "sent" and n["attempts"] == 2 and n["last_error"] == ""
    first, second = bed.receiver.requests
    assert first.headers["x-gaia-idempotency-key"] == second.headers["x-gaia-idempotency-key"]


def test_a_permanent_failure_is_recorded_with_the_reason(bed: Bed) -> None:
    bed.policy(for_seconds=0)
    bed.receiver.reply_next(Reply(404, {"error": "no such hook"}))
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    (rec,) = bed.records()
    (n,) = bed.record(rec["id"])["notifications"]
    assert n["state"] == "failed" and "404" in n["last_error"]
    bed.step(3600)
    bed.deliver()
    assert len(bed.receiver.requests) == 1


def test_one_pass_drains_a_burst_batch_after_batch_each_sent_once(bed: Bed) -> None:
    bed.delivery.batch = 2
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1", "web-2", "web-3", "web-4")
    bed.evaluate()
    bed.deliver()  # three batches (2, 2, 1) in the one pass
    keys = [req.headers["x-gaia-idempotency-key"] for req in bed.receiver.requests]
    assert len(keys) == 5 and len(set(keys)) == 5
    with bed.platform.db.read_session() as session:
        states = session.scalars(select(AlertNotification.state)).all()
    assert states == ["sent"] * 5
    bed.deliver()
    assert len(bed.receiver.requests) == 5  # nothing sent twice


def test_a_pass_with_nothing_due_takes_no_writer_turn(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop runs every second: when nothing is due it only reads, and leaves SQLite's one
    writer's turn to the API."""
    db = bed.platform.db
    opened = []
    write_session = db.write_session

    def counted() -> Any:
        opened.append(1)
        return write_session()

    monkeypatch.setattr(db, "write_session", counted)
    bed.deliver()
    assert opened == []
    bed.policy(for_seconds=0)
    bed.load(95, "web-0")
    bed.evaluate()
    bed.deliver()
    assert len(bed.receiver.requests) == 1 and opened  # something due: claimed and sent


def test_each_sender_posts_on_a_client_of_its_own(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared client's pool rescans every connection at every request's start and end
    (httpcore), which cost more than everything else delivery does per notification
    (docs/benchmarks.md): each of the pass's senders has its own client, one request at a
    time on it, kept across the pass's batches."""
    from gaia.monitor.alerting.channels import _base

    bed.delivery.batch, bed.delivery.concurrency = 4, 3
    in_flight: dict[int, int] = {}
    most: dict[int, int] = {}
    post = _base._post

    async def counted(client: object, *args: Any) -> Any:
        key = id(client)
        in_flight[key] = in_flight.get(key, 0) + 1
        most[key] = max(most.get(key, 0), in_flight[key])
        try:
            await asyncio.sleep(0.01)  # the senders overlap
            return await post(client, *args)  # type: ignore[arg-type]
        finally:
            in_flight[key] -= 1

    monkeypatch.setattr(_base, "_post", counted)
    bed.policy(for_seconds=0)
    bed.load(95, *(f"web-{i}" for i in range(12)))
    bed.evaluate()
    bed.deliver()  # three batches of four in one pass
    assert len(bed.receiver.requests) == 12
    assert len(most) == 3 and set(most.values()) == {1}, most


def test_a_pass_stops_after_its_batches_and_the_next_goes_on(bed: Bed) -> None:
    bed.delivery.batch, bed.delivery.batches_per_pass = 1, 2
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1", "web-2")
    bed.evaluate()
    bed.deliver()
    assert len(bed.receiver.requests) == 2
    bed.deliver()
    assert len(bed.receiver.requests) == 3


def test_the_channel_rate_limit_delays_but_never_drops(bed: Bed) -> None:
    bed.api(
        "patch",
        f"{A}/channels/{bed.channel['id']}",
        who="business-admin",
        json={"rate_limit_per_minute": 2},
    )
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1", "web-2")
    bed.evaluate()
    bed.deliver()
    assert len(bed.receiver.requests) == 2
    waiting = [
        n
        for rec in bed.records()
        for n in bed.record(rec["id"])["notifications"]
        if n["state"] == "pending"
    ]
    assert len(waiting) == 1 and "rate limit" in waiting[0]["last_error"]
    bed.step(61)
    bed.deliver()
    assert len(bed.receiver.requests) == 3


def test_a_silenced_alert_is_recorded_but_not_sent(bed: Bed) -> None:
    bed.policy(for_seconds=0)
    bed.api(
        "post",
        f"{A}/silences",
        json={
            "business": "alpha",
            "matchers": {"app": "web"},
            "starts_at": bed.clock.now().isoformat(),
            "ends_at": (bed.clock.now() + dt.timedelta(days=1)).isoformat(),
            "comment": "maintenance",
        },
    )
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    (rec,) = bed.records()
    assert rec["silenced_by"] is not None
    assert bed.record(rec["id"])["notifications"] == []
    assert bed.receiver.requests == []


def test_a_silence_made_while_an_alert_fires_mutes_its_repeats_and_its_resolution(
    bed: Bed,
) -> None:
    bed.policy(for_seconds=0, repeat_seconds=60)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    (rec,) = bed.records()
    assert rec["silenced_by"] is None and len(bed.receiver.requests) == 1
    silence = bed.api(
        "post",
        f"{A}/silences",
        json={
            "business": "alpha",
            "matchers": rec["labels"],  # what the console's silence form sends
            "ends_at": (bed.clock.now() + dt.timedelta(minutes=5)).isoformat(),
        },
    )
    bed.step(61)  # a repeat is due: muted
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    assert len(bed.receiver.requests) == 1
    assert bed.record(rec["id"])["silenced_by"] == silence["id"]
    bed.step(15)  # the load drops: resolved, and muted too
    bed.load(10)
    bed.evaluate()
    bed.deliver()
    full = bed.record(rec["id"])
    assert full["status"] == "resolved" and len(bed.receiver.requests) == 1
    assert [n["event"] for n in full["notifications"]] == ["firing"]


def test_an_ended_silence_mutes_nothing_more(bed: Bed) -> None:
    bed.policy(for_seconds=0, repeat_seconds=60)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    assert len(bed.records()) == 1
    bed.api(
        "post",
        f"{A}/silences",
        json={
            "business": "alpha",
            "matchers": {"app": "web"},
            "ends_at": (bed.clock.now() + dt.timedelta(seconds=50)).isoformat(),
        },
    )
    bed.step(61)  # the silence has ended before the repeat is due
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    bed.step(15)
    bed.load(10)
    bed.evaluate()
    bed.deliver()
    assert [r.json()["status"] for r in bed.receiver.requests] == ["firing", "firing", "resolved"]


def test_an_alert_whose_firing_was_muted_sends_no_resolution_after_the_silence(
    bed: Bed,
) -> None:
    bed.policy(for_seconds=0)
    bed.api(
        "post",
        f"{A}/silences",
        json={
            "business": "alpha",
            "matchers": {"app": "web"},
            "ends_at": (bed.clock.now() + dt.timedelta(seconds=50)).isoformat(),
        },
    )
    bed.load(95)
    bed.evaluate()
    bed.step(61)  # the silence is over when the load drops
    bed.load(10)
    bed.evaluate()
    bed.deliver()
    (rec,) = bed.records()
    assert rec["status"] == "resolved" and rec["silenced_by"] is not None
    assert bed.record(rec["id"])["notifications"] == [] and bed.receiver.requests == []


def test_editing_the_policy_neither_refires_nor_loses_the_alert(bed: Bed) -> None:
    policy = bed.policy(for_seconds=0)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    bed.api("patch", f"{A}/policies/{policy['id']}", json={"threshold": 90, "summary": "hot"})
    bed.step(15)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    assert len(bed.records()) == 1 and len(bed.receiver.requests) == 1
    bed.api("patch", f"{A}/policies/{policy['id']}", json={"threshold": 99})
    bed.step(15)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    assert [r.json()["status"] for r in bed.receiver.requests] == ["firing", "resolved"]


def test_deleting_a_policy_resolves_its_alerts_with_a_notice(bed: Bed) -> None:
    policy = bed.policy(for_seconds=0)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    bed.api("delete", f"{A}/policies/{policy['id']}")
    bed.deliver()
    (rec,) = bed.records()
    assert rec["status"] == "resolved" and "policy deleted" in rec["summary"]
    assert [r.json()["status"] for r in bed.receiver.requests] == ["firing", "resolved"]


def test_the_policys_email_template_shapes_the_mail_sent_beside_its_webhook(bed: Bed) -> None:
    # the claim reads a policy only for the kinds that render text (email here), and only the
    # columns a message is made of: this is the path that reads them all
    with SmtpServer() as smtp:
        email = bed.api(
            "post",
            f"{A}/channels",
            who="business-admin",
            json={
                "business": "alpha",
                "name": "mail",
                "kind": "email",
                "config": smtp.channel_config(),
            },
        )
        oncall = bed.api(
            "post", f"{A}/receivers", json={"business": "alpha", "name": "li", "email": "li@x.io"}
        )
        bed.policy(
            for_seconds=0,
            channel_ids=[email["id"], bed.channel["id"]],
            receiver_ids=[oncall["id"]],
            templates={
                "email": {
                    "subject": "{{ alert_name }} on {{ labels.instance }}",
                    "body": "{{ value_text }} > {{ threshold_text }} ({{ status }})",
                }
            },
        )
        bed.load(95)
        bed.evaluate()
        bed.deliver()
        (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == ["li@x.io"]
    assert mail.message["Subject"] == "web cpu on web-0"
    assert mail.message.get_content().strip() == "95 > 80 (firing)"
    (req,) = bed.receiver.requests
    assert req.json()["alerts"][0]["labels"]["instance"] == "web-0"
    assert [r[:2] for r in bed.rows()] == [("sent", 1), ("sent", 1)]


def test_a_receiver_without_an_address_shows_as_failed_not_missing(bed: Bed) -> None:
    email = bed.api(
        "post",
        f"{A}/channels",
        who="business-admin",
        json={
            "business": "alpha",
            "name": "mail",
            "kind": "email",
            "config": {"host": "127.0.0.1", "port": 1, "security": "none", "sender": "g@x.io"},
        },
    )
    nobody = bed.api(
        "post", f"{A}/receivers", json={"business": "alpha", "name": "li", "phone": ""}
    )
    bed.policy(for_seconds=0, channel_ids=[email["id"]], receiver_ids=[nobody["id"]])
    bed.load(95)
    bed.evaluate()
    (rec,) = bed.records()
    (n,) = bed.record(rec["id"])["notifications"]
    assert n["state"] == "failed" and n["receiver"] == "li"
    assert "has no email" in n["last_error"]


# ---------------------------------------------------------------- a pass is a pipeline


def _wait_for(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_the_next_batch_is_claimed_while_the_current_one_is_on_the_wire(bed: Bed) -> None:
    bed.delivery.batch = 1
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1")
    bed.evaluate()
    bed.receiver.stall_next()  # the first send hangs until released
    passing = threading.Thread(target=bed.deliver)
    passing.start()
    try:
        _wait_for(lambda: len(bed.receiver.requests) == 1)
        # the second batch is already claimed, though the first has no answer yet (the
        # receiver holds it for 10 s)
        _wait_for(lambda: [r[0] for r in bed.rows()] == ["sending", "sending"], timeout=5)
        assert len(bed.receiver.requests) == 1
    finally:
        bed.receiver.release()
        passing.join(timeout=30)
    assert [r[:2] for r in bed.rows()] == [("sent", 1), ("sent", 1)]
    keys = [req.headers["x-gaia-idempotency-key"] for req in bed.receiver.requests]
    assert len(set(keys)) == 2


def test_a_send_that_cannot_start_within_the_claims_lease_goes_back_unsent(bed: Bed) -> None:
    platform = bed.platform
    # one send at a time, and a claim's sends must end within 1 s (half the lease)
    bed.delivery = NotificationDelivery(
        db=platform.db,
        secrets=platform.secrets,
        clock=platform.clock,
        lease_seconds=2,
        concurrency=1,
        batch=3,
    )
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1", "web-2")
    bed.evaluate()
    bed.receiver.stall_next()
    try:
        bed.deliver()
        # the first send ran out of time; the two behind it never reached the receiver, and
        # are back in the queue as they were, their attempt uncounted
        assert len(bed.receiver.requests) == 1
        (first, *behind) = bed.rows()
        assert first[:2] == ("retrying", 1) and "timed out" in first[2]
        assert behind == [("pending", 0, NOT_SENT_IN_TIME)] * 2
    finally:
        bed.receiver.release()
    bed.deliver()  # they are due at once; the timed-out one waits for its back-off
    assert [r[:2] for r in bed.rows()] == [("retrying", 1), ("sent", 1), ("sent", 1)]
    bed.step(60)
    bed.deliver()
    assert [r[:2] for r in bed.rows()] == [("sent", 2), ("sent", 1), ("sent", 1)]
    keys = [req.headers["x-gaia-idempotency-key"] for req in bed.receiver.requests]
    assert len(keys) == 4 and len(set(keys)) == 3  # only the timed-out one went twice


def test_a_batch_claimed_ahead_goes_back_unsent_when_the_pass_is_stopped(bed: Bed) -> None:
    bed.delivery.batch = 1
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1")
    bed.evaluate()
    bed.receiver.stall_next()

    async def stop_mid_pass() -> None:
        task = asyncio.create_task(bed.delivery.run_once())
        while [r[0] for r in await asyncio.to_thread(bed.rows)] != ["sending", "sending"]:
            await asyncio.sleep(0.02)
        task.cancel()  # the platform stops while the first batch is on the wire
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(stop_mid_pass())
        # the batch on the wire may have reached the receiver: it keeps its lease; the batch
        # claimed ahead never left, and is back in the queue at once
        assert bed.rows() == [("sending", 1, ""), ("pending", 0, NOT_SENT_STOPPED)]
    finally:
        bed.receiver.release()
    bed.deliver()
    assert len(bed.receiver.requests) == 2
    assert [r[:2] for r in bed.rows()] == [("sending", 1), ("sent", 1)]
    bed.step(120)  # the first one's lease is over: it goes out again
    bed.deliver()
    assert [r[:2] for r in bed.rows()] == [("sent", 2), ("sent", 1)]


# ---------------------------------------------------------------- a process dies mid-send

_DELIVER_ONCE = textwrap.dedent(
    """
    import asyncio, sys
    from gaia.clock import RealClock
    from gaia.monitor.alerting.delivery import NotificationDelivery
    from gaia.security import SecretBox
    from gaia.store.database import Database

    db = Database(sys.argv[1])
    delivery = NotificationDelivery(
        db=db,
        secrets=SecretBox(sys.argv[2]),
        clock=RealClock(),
        lease_seconds=60,
        batch=int(sys.argv[3]),
    )
    print("delivering", flush=True)
    asyncio.run(delivery.run_once())
    """
)


def test_no_notification_is_lost_when_the_platform_dies_mid_delivery(
    bed: Bed, database_url: str
) -> None:
    bed.policy(for_seconds=0)
    bed.load(95)
    bed.evaluate()
    bed.receiver.stall_next()  # the receiver takes the request and does not answer
    proc = subprocess.Popen(
        [sys.executable, "-c", _DELIVER_ONCE, database_url, TEST_SECRET_KEY, "200"],
        # the receiver is a fake on 127.0.0.1: allowed the way an admin would (gaia.egress)
        env={**os.environ, "PYTHONPATH": os.getcwd(), "GAIA_EGRESS_ALLOW_CIDRS": LOOPBACK_CIDRS},
    )
    try:
        deadline = time.monotonic() + 60
        while not bed.receiver.requests and time.monotonic() < deadline:
            assert proc.poll() is None, "the delivery process exited early"
            time.sleep(0.05)
        assert len(bed.receiver.requests) == 1
        os.kill(proc.pid, signal.SIGKILL)  # the platform dies while the send is in flight
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    bed.receiver.release()

    with bed.platform.db.read_session() as session:
        (row,) = session.scalars(select(AlertNotification)).all()
        assert row.state == "sending"  # claimed by the dead process, never finished

    # a new process (a new delivery loop) starts: within the lease nothing is sent twice...
    bed.delivery = bed.platform.notification_delivery()
    bed.deliver()
    assert len(bed.receiver.requests) == 1
    # ...and once the dead process's lease (60 s of its real clock) is over, it goes out again
    bed.step(120)
    bed.deliver()
    (rec,) = bed.records()
    (n,) = bed.record(rec["id"])["notifications"]
    assert n["state"] == "sent" and n["attempts"] == 2
    first, second = bed.receiver.requests
    assert first.headers["x-gaia-idempotency-key"] == second.headers["x-gaia-idempotency-key"]


def test_a_batch_claimed_ahead_is_sent_once_after_the_platform_dies_mid_delivery(
    bed: Bed, database_url: str
) -> None:
    bed.policy(for_seconds=0)
    bed.load(95, "web-0", "web-1")
    bed.evaluate()
    bed.receiver.stall_next()
    proc = subprocess.Popen(
        # one notification a batch: the second is claimed while the first is on the wire
        [sys.executable, "-c", _DELIVER_ONCE, database_url, TEST_SECRET_KEY, "1"],
        env={**os.environ, "PYTHONPATH": os.getcwd(), "GAIA_EGRESS_ALLOW_CIDRS": LOOPBACK_CIDRS},
    )
    try:
        _wait_for(lambda: proc.poll() is None and len(bed.receiver.requests) == 1, timeout=60)
        _wait_for(lambda: [r[0] for r in bed.rows()] == ["sending", "sending"])
        os.kill(proc.pid, signal.SIGKILL)  # dies with one batch on the wire, one claimed ahead
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    bed.receiver.release()

    bed.delivery = bed.platform.notification_delivery()
    bed.deliver()  # within the dead process's leases nothing goes out
    assert len(bed.receiver.requests) == 1
    bed.step(120)
    bed.deliver()
    assert [r[:2] for r in bed.rows()] == [("sent", 2), ("sent", 2)]
    first, *rest = [req.headers["x-gaia-idempotency-key"] for req in bed.receiver.requests]
    # the one on the wire went twice with its key; the one claimed ahead reached it once
    assert len(rest) == 2 and rest.count(first) == 1


def test_a_cluster_the_collector_cannot_read_does_not_resolve_its_alerts(bed: Bed) -> None:
    bed.policy(for_seconds=0)

    def collected(ok: bool) -> None:
        at = bed.clock.now().timestamp()
        sample = Sample("gaia_cluster_collect_success", {"cluster": "sim-1"}, float(ok), at)
        asyncio.run(bed.platform.metric_store.write([sample]))

    collected(True)
    bed.load(95)
    bed.evaluate()
    bed.deliver()
    for _ in range(6):  # 90 s without the instance's series: the cluster does not answer
        bed.step(15)
        collected(False)
        bed.evaluate()
        bed.deliver()
    (rec,) = bed.records()
    assert rec["status"] == "firing"
    assert [r.json()["status"] for r in bed.receiver.requests] == ["firing"]
    bed.step(15)
    collected(True)  # it answers again, and the instance is gone
    bed.evaluate()
    bed.deliver()
    assert bed.records()[0]["status"] == "resolved"
    assert [r.json()["status"] for r in bed.receiver.requests] == ["firing", "resolved"]
