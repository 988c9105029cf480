"""The notification outbox's store operations (``gaia.store.alerting.outbox``), written against
the store alone: a due row is claimed once however many replicas ask, an expired lease is
reclaimed, and a result only lands on a row still being sent.

These run on SQLite and on the real PostgreSQL server (the ``database_url`` fixture).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from gaia.platform import Platform
from gaia.store.alerting.outbox import (
    INTERRUPTED,
    NotificationResult,
    anything_to_claim,
    claim_due_notifications,
    record_results,
)
from gaia.store.models import AlertChannel, AlertNotification, AlertRecord

NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=60)


def _queue(platform: Platform, *, rows: int = 2, rate_limit: int = 0) -> list[int]:
    with platform.db.write_session() as s:
        channel = AlertChannel(
            name="ops", kind="webhook", config_encrypted=b"x", rate_limit_per_minute=rate_limit
        )
        record = AlertRecord(
            policy_name="cpu high",
            fingerprint="fp",
            severity="warning",
            status="firing",
            started_at=NOW,
            fired_at=NOW,
        )
        s.add_all([channel, record])
        s.flush()
        notifications = [
            AlertNotification(
                record_id=record.id,
                event="firing",
                channel_id=channel.id,
                channel_name=channel.name,
                channel_kind=channel.kind,
                next_attempt_at=NOW,
                idempotency_key=f"gaia-{record.id}-firing-0-{channel.id}-{i}",
                created_at=NOW,
            )
            for i in range(rows)
        ]
        s.add_all(notifications)
        s.flush()
        return [n.id for n in notifications]


def _claim(platform: Platform, now: dt.datetime = NOW) -> list[int]:
    with platform.db.write_session() as s:
        claims = claim_due_notifications(
            s, now=now, lease=LEASE, batch=100, next_slot=lambda _: now.timestamp()
        )
        return [c.notification.id for c in claims]


def _row(platform: Platform, notification_id: int) -> AlertNotification:
    with platform.db.read_session() as s:
        row = s.get(AlertNotification, notification_id)
        assert row is not None
        s.expunge(row)
        return row


def test_a_due_row_is_claimed_once_with_a_lease_and_an_attempt(platform: Platform) -> None:
    ids = _queue(platform)
    assert sorted(_claim(platform)) == ids
    assert _claim(platform) == []  # a second replica finds nothing left to send
    row = _row(platform, ids[0])
    assert (row.state, row.attempts, row.lease_until) == ("sending", 1, NOW + LEASE)


def test_an_expired_lease_is_reclaimed_and_sent_again(platform: Platform) -> None:
    ids = _queue(platform, rows=1)
    assert _claim(platform) == ids
    later = NOW + LEASE + dt.timedelta(seconds=1)
    assert _claim(platform, later) == ids
    row = _row(platform, ids[0])
    assert (row.state, row.attempts, row.last_error) == ("sending", 2, INTERRUPTED)


def test_the_probe_says_when_a_claim_would_find_work(platform: Platform) -> None:
    def probe(now: dt.datetime) -> bool:
        with platform.db.read_session() as s:
            return anything_to_claim(s, now=now)

    assert not probe(NOW)  # an empty outbox
    ids = _queue(platform, rows=1)
    assert probe(NOW)  # due
    assert _claim(platform) == ids
    assert not probe(NOW)  # claimed, its lease running
    later = NOW + LEASE + dt.timedelta(seconds=1)
    assert probe(later)  # the lease ran out: to be reclaimed
    assert _claim(platform, later) == ids


def test_a_throttled_row_waits_for_its_slot(platform: Platform) -> None:
    ids = _queue(platform, rows=1, rate_limit=1)
    slot = NOW + dt.timedelta(seconds=30)
    with platform.db.write_session() as s:
        claims = claim_due_notifications(
            s, now=NOW, lease=LEASE, batch=100, next_slot=lambda _: slot.timestamp()
        )
    assert claims == []
    row = _row(platform, ids[0])
    assert (row.state, row.next_attempt_at) == ("pending", slot)
    assert row.last_error == "waiting for the channel's rate limit (1/min)"


def test_a_row_whose_channel_was_disabled_or_deleted_fails_saying_so(platform: Platform) -> None:
    disabled, deleted = _queue(platform)
    with platform.db.write_session() as s:
        channel = s.scalars(select(AlertChannel)).one()
        channel.enabled = False
        s.get(AlertNotification, deleted).channel_id = None  # what deleting the channel leaves
    assert _claim(platform) == []
    assert (_row(platform, disabled).state, _row(platform, disabled).last_error) == (
        "failed",
        "channel ops is disabled",
    )
    assert (_row(platform, deleted).state, _row(platform, deleted).last_error) == (
        "failed",
        "channel ops was deleted",
    )


def test_results_land_only_on_rows_still_sending(platform: Platform) -> None:
    sent, retried = _queue(platform)
    assert sorted(_claim(platform)) == [sent, retried]
    later = NOW + dt.timedelta(seconds=5)
    with platform.db.write_session() as s:
        record_results(
            s,
            [
                NotificationResult(
                    sent, state="sent", receipt="HTTP 200", sent_at=later, last_error=""
                ),
                NotificationResult(
                    retried, state="retrying", next_attempt_at=later, last_error="HTTP 503"
                ),
            ],
        )
        # a late result for a row no longer sending (reclaimed, or already closed) changes nothing
        record_results(s, [NotificationResult(sent, state="failed", last_error="too late")])
    row = _row(platform, sent)
    assert (row.state, row.receipt, row.sent_at, row.lease_until) == (
        "sent",
        "HTTP 200",
        later,
        None,
    )
    row = _row(platform, retried)
    assert (row.state, row.next_attempt_at, row.last_error) == ("retrying", later, "HTTP 503")
