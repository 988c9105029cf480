"""Delivering the outbox: every queued notification is sent, retried, or failed with a reason.

Each pass:

1. **Reclaim**: a row left ``sending`` past its lease was being sent by a process that died (or
   hung); it goes back to ``retrying`` with that said in ``last_error``. Nothing is lost; the
   receiver may get it twice, with the same idempotency key to drop the duplicate (at least once,
   as every outbox is).
2. **Claim** due rows (``pending``/``retrying`` whose ``next_attempt_at`` has come), oldest first,
   within each channel's rate limit (a sliding minute; a throttled row just waits for its slot).
   The claim is a conditional UPDATE (``WHERE state IN (pending, retrying)``), so two platform
   replicas never send the same row at once.
3. **Send** concurrently (bounded), each send bounded by half the lease so that a slow server
   cannot outlive its claim.
4. **Record** the outcome: ``sent`` with the server's receipt; ``retrying`` with the reason and
   the next attempt (exponential back-off with jitter, or the server's Retry-After); ``failed`` with
   the reason when the error is permanent or the attempts are used up.

Credentials are decrypted only here, per send, from the channel's current config, and never
written into a row, a log line or an error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update

from gaia.clock import Clock
from gaia.domain.retry import backoff_delay
from gaia.loop import LoopService
from gaia.monitor.alerting.channels import (
    Channel,
    DeliveryError,
    OutgoingMessage,
    channel_from_config,
    new_client,
    shared_client,
)
from gaia.monitor.alerting.notify import build_message
from gaia.security import SecretBox
from gaia.store.database import Database
from gaia.store.models import AlertChannel, AlertNotification, AlertPolicy, AlertRecord

log = logging.getLogger(__name__)

DUE_STATES = ("pending", "retrying")


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    attempts: int
    channel_id: int
    kind: str
    config: Mapping[str, Any]
    config_version: dt.datetime
    message: OutgoingMessage


@dataclass(frozen=True, slots=True)
class Outcome:
    id: int
    attempts: int
    receipt: str = ""
    error: DeliveryError | None = None


class RateWindow:
    """At most ``limit`` sends per channel in any 60 seconds."""

    def __init__(self) -> None:
        self._sent: dict[int, deque[float]] = defaultdict(deque)

    def next_slot(self, channel_id: int, limit: int, now: float) -> float:
        """``now`` if a send may go now (and counts it), else when the next one may."""
        sent = self._sent[channel_id]
        while sent and now - sent[0] >= 60.0:
            sent.popleft()
        if limit > 0 and len(sent) >= limit:
            return sent[0] + 60.0
        sent.append(now)
        return now


class NotificationDelivery(LoopService):
    name = "alert-delivery"

    def __init__(
        self,
        *,
        db: Database,
        secrets: SecretBox,
        clock: Clock,
        interval: float = 1.0,
        lease_seconds: float = 60.0,
        batch: int = 200,
        concurrency: int = 16,
        max_attempts: int = 8,
        base_backoff: float = 10.0,
        max_backoff: float = 600.0,
        external_url: str = "",
        channel_factory: Callable[[str, Mapping[str, Any]], Channel] = channel_from_config,
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.secrets = secrets
        self.clock = clock
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.batch = batch
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.external_url = external_url
        self._factory = channel_factory
        self._semaphore = asyncio.Semaphore(concurrency)
        self._window = RateWindow()
        self._channels: dict[int, tuple[dt.datetime, Channel]] = {}
        # Called with (channel kind, result) per outcome; the platform's metrics hook in here.
        self.on_outcome: Callable[[str, str], None] | None = None

    async def run_once(self) -> None:
        now = self.clock.now()
        claimed = await asyncio.to_thread(self._claim, now)
        if not claimed:
            return
        async with new_client() as client:
            token = shared_client.set(client)
            try:
                outcomes = await asyncio.gather(*(self._send(c) for c in claimed))
            finally:
                shared_client.reset(token)
        await asyncio.to_thread(self._finish, outcomes, {c.id: c.kind for c in claimed})

    async def _send(self, claimed: Claimed) -> Outcome:
        async with self._semaphore:
            try:
                channel = self._channel(claimed)
                receipt = await asyncio.wait_for(
                    channel.send(claimed.message), timeout=self.lease.total_seconds() / 2
                )
            except DeliveryError as exc:
                return Outcome(claimed.id, claimed.attempts, error=exc)
            except TimeoutError:
                return Outcome(
                    claimed.id,
                    claimed.attempts,
                    error=DeliveryError("the send timed out", retryable=True),
                )
            except Exception as exc:  # a bug in a channel must not wedge the outbox
                log.exception("channel %s: unexpected error while sending", claimed.kind)
                return Outcome(
                    claimed.id,
                    claimed.attempts,
                    error=DeliveryError(f"internal error: {type(exc).__name__}", retryable=True),
                )
            return Outcome(claimed.id, claimed.attempts, receipt=receipt[:1000])

    def _channel(self, claimed: Claimed) -> Channel:
        cached = self._channels.get(claimed.channel_id)
        if cached is not None and cached[0] == claimed.config_version:
            return cached[1]
        channel = self._factory(claimed.kind, claimed.config)
        self._channels[claimed.channel_id] = (claimed.config_version, channel)
        return channel

    # ---------------------------------------------------------------- store I/O (threads)

    def _claim(self, now: dt.datetime) -> list[Claimed]:
        claimed: list[Claimed] = []
        with self.db.write_session() as session:
            session.execute(
                update(AlertNotification)
                .where(AlertNotification.state == "sending", AlertNotification.lease_until < now)
                .values(
                    state="retrying",
                    lease_until=None,
                    next_attempt_at=now,
                    last_error="interrupted: the platform stopped while sending; sending again",
                )
            )
            rows = list(
                session.scalars(
                    select(AlertNotification)
                    .where(
                        AlertNotification.state.in_(DUE_STATES),
                        AlertNotification.next_attempt_at <= now,
                    )
                    .order_by(AlertNotification.next_attempt_at, AlertNotification.id)
                    .limit(self.batch)
                )
            )
            if not rows:
                return []
            channels = {
                c.id: c
                for c in session.scalars(
                    select(AlertChannel).where(
                        AlertChannel.id.in_({r.channel_id for r in rows if r.channel_id})
                    )
                )
            }
            records = {
                r.id: r
                for r in session.scalars(
                    select(AlertRecord).where(AlertRecord.id.in_({r.record_id for r in rows}))
                )
            }
            policy_ids = {r.policy_id for r in records.values() if r.policy_id is not None}
            policies = {
                p.id: p
                for p in session.scalars(select(AlertPolicy).where(AlertPolicy.id.in_(policy_ids)))
            }
            t = now.timestamp()
            candidates: list[tuple[AlertNotification, AlertChannel]] = []
            for row in rows:
                channel = channels.get(row.channel_id) if row.channel_id else None
                if channel is None or not channel.enabled:
                    row.state = "failed"
                    row.last_error = (
                        f"channel {row.channel_name} was deleted"
                        if channel is None
                        else f"channel {row.channel_name} is disabled"
                    )
                    continue
                slot = self._window.next_slot(channel.id, channel.rate_limit_per_minute, t)
                if slot > t:
                    row.next_attempt_at = dt.datetime.fromtimestamp(slot, dt.UTC)
                    row.last_error = (
                        f"waiting for the channel's rate limit "
                        f"({channel.rate_limit_per_minute}/min)"
                    )
                    continue
                candidates.append((row, channel))
            if not candidates:
                return []
            # One conditional UPDATE claims them all; RETURNING says which this process won
            # (a row another replica claimed meanwhile is no longer pending or retrying).
            won = set(
                session.scalars(
                    update(AlertNotification)
                    .where(
                        AlertNotification.id.in_([row.id for row, _ in candidates]),
                        AlertNotification.state.in_(DUE_STATES),
                    )
                    .values(
                        state="sending",
                        lease_until=now + self.lease,
                        attempts=AlertNotification.attempts + 1,
                    )
                    .returning(AlertNotification.id)
                    .execution_options(synchronize_session=False)
                )
            )
            unprepared: list[dict[str, Any]] = []
            for row, channel in candidates:
                if row.id not in won:
                    continue
                record = records[row.record_id]
                try:
                    config = json.loads(self.secrets.decrypt(channel.config_encrypted))
                    message = build_message(
                        row,
                        record,
                        policies.get(record.policy_id) if record.policy_id else None,
                        external_url=self.external_url,
                    )
                except Exception as exc:
                    log.exception("notification %s: cannot prepare the message", row.id)
                    unprepared.append(
                        {"b_id": row.id, "state": "failed", "last_error": str(exc)[:500]}
                    )
                    continue
                claimed.append(
                    Claimed(
                        id=row.id,
                        attempts=row.attempts + 1,
                        channel_id=channel.id,
                        kind=channel.kind,
                        config=config,
                        config_version=channel.updated_at,
                        message=message,
                    )
                )
            self._write_outcomes(session, unprepared)
        return claimed

    def _finish(self, outcomes: list[Outcome], kinds: Mapping[int, str]) -> None:
        now = self.clock.now()
        rows: list[dict[str, Any]] = []
        for outcome in outcomes:
            error = outcome.error
            if error is None:
                row: dict[str, Any] = {
                    "state": "sent",
                    "receipt": outcome.receipt,
                    "sent_at": now,
                    "last_error": "",
                }
                result = "sent"
            elif error.retryable and outcome.attempts < self.max_attempts:
                delay = self._backoff(outcome.attempts, error.retry_after)
                row = {
                    "state": "retrying",
                    "next_attempt_at": now + dt.timedelta(seconds=delay),
                    "last_error": f"{error.reason} (attempt {outcome.attempts}; "
                    f"next in {delay:.0f} s)",
                }
                result = "retry"
            else:
                why = "" if not error.retryable else f" (gave up after {outcome.attempts})"
                row = {"state": "failed", "last_error": error.reason + why}
                result = "failed"
            rows.append({"b_id": outcome.id, **row})
            if self.on_outcome is not None:
                self.on_outcome(kinds.get(outcome.id, ""), result)
        with self.db.write_session() as session:
            self._write_outcomes(session, rows)

    @staticmethod
    def _write_outcomes(session: Any, rows: list[dict[str, Any]]) -> None:
        """Write results of sends still ``sending`` (a row reclaimed meanwhile is left alone),
        one executemany per shape of result."""
        table = cast(Table, AlertNotification.__table__)
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_shape[tuple(sorted(row))].append(row)
        for shape, batch in by_shape.items():
            values: dict[str, Any] = {key: bindparam(key) for key in shape if key != "b_id"}
            session.execute(
                table.update()
                .where(table.c.id == bindparam("b_id"), table.c.state == "sending")
                .values(lease_until=None, **values),
                batch,
            )

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return backoff_delay(
            attempts, base=self.base_backoff, cap=self.max_backoff, retry_after=retry_after
        )
