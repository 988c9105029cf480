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
3. **Send** concurrently (bounded). A claim's sends must all end within half its lease from
   the moment the claim began, waiting for a turn included: a send still running then is
   abandoned (retried later), and one not yet started is handed back unsent (its attempt
   uncounted), so that no row is still being sent when its lease runs out and another replica
   may take it.
4. **Record** the outcome: ``sent`` with the server's receipt; ``retrying`` with the reason and
   the next attempt (exponential back-off with jitter, or the server's Retry-After); ``failed`` with
   the reason when the error is permanent or the attempts are used up.

A pass is a pipeline of at most ``batches_per_pass`` batches on one HTTP client (a burst drains
over kept-alive connections)::

    claim 1 | send 1           | send 2                      | send 3
            | claim 2 (thread) | record 1, claim 3 (threads) | record 2 ...

While a full batch is on the wire the next one is claimed (in a worker thread), and a batch's
results are written while the next is sent; the pass writes one result set at a time, in order.
Only a full batch leads to a further claim, and never beyond the pass's last batch: a pass
claims nothing it will not send. If the pass is cancelled, a batch claimed ahead and not yet
sent is handed back at once rather than left to its lease. The rate limit counts a send when
its row is claimed, so with a batch claimed ahead a send may trail its count by up to two
batches' sending time (one batch's before). Per claim each channel's config is decrypted once,
and text is rendered only for channels that send it.

The SQL of steps 1, 2 and 4 is the store's (``gaia.store.alerting.outbox``); this loop owns what
is not persistence: the rate window (in memory, per process), rendering, sending, and the retry
rule. Credentials are decrypted only here, per claim, from the channel's current config, and never
written into a row, a log line or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gaia.clock import Clock
from gaia.domain.retry import backoff_delay
from gaia.loop import LoopService
from gaia.monitor.alerting.channels import (
    TEXT_KINDS,
    Channel,
    DeliveryError,
    OutgoingMessage,
    channel_from_config,
    new_client,
    shared_client,
)
from gaia.monitor.alerting.notify import build_message
from gaia.security import SecretBox
from gaia.store.alerting.outbox import (
    NotificationResult,
    anything_to_claim,
    claim_due_notifications,
    record_results,
)
from gaia.store.database import Database

log = logging.getLogger(__name__)


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
class ClaimedBatch:
    items: list[Claimed]
    # event-loop time by which every send of the batch must have ended: half the lease after
    # the claim began (taken before the claim, so the lease it writes cannot start earlier)
    deadline: float


@dataclass(frozen=True, slots=True)
class Outcome:
    id: int
    attempts: int
    receipt: str = ""
    error: DeliveryError | None = None
    unsent: bool = False  # never handed to the channel: goes back to the queue as it was


# Connections each sender's own client keeps (to as many receivers). One client shared by the
# sixteen senders cost more than all of Gaia's own work per notification: httpcore's pool
# rescans every connection at every request's start and end (and asks the kernel whether each
# idle one is still open), so a pool of sixteen costs sixteen times what one does. A client per
# sender, which has at most one request in flight, cut delivery's CPU per notification from
# ~2.9 to 1.4-1.7 ms on the benchmark (docs/benchmarks.md, "delivery, third round"). The bound
# on connections is unchanged: senders x 4 = 64, as the shared client's was.
SENDER_CONNECTIONS = 4

NOT_SENT_IN_TIME = "claimed but not sent within its lease (earlier sends were slow); queued again"
NOT_SENT_STOPPED = "claimed but not sent (the delivery pass stopped); queued again"


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
        batches_per_pass: int = 10,
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
        self.batches_per_pass = batches_per_pass
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.external_url = external_url
        self._factory = channel_factory
        self.concurrency = concurrency
        self._window = RateWindow()
        self._channels: dict[int, tuple[dt.datetime, Channel]] = {}
        # Called with (channel kind, result) per outcome; the platform's metrics hook in here.
        self.on_outcome: Callable[[str, str], None] | None = None

    async def run_once(self) -> None:
        batch = await self._claim_batch()
        if not batch.items:
            return
        # An HTTP client per sender for the whole pass: a burst's batches reuse its kept-alive
        # connections (and TLS sessions) instead of connecting again for every batch, and no
        # sender pays for the others' connections (see SENDER_CONNECTIONS).
        async with contextlib.AsyncExitStack() as clients:
            senders = [
                await clients.enter_async_context(new_client(max_connections=SENDER_CONNECTIONS))
                for _ in range(self.concurrency)
            ]
            token = shared_client.set(None)
            upcoming: asyncio.Task[ClaimedBatch] | None = None
            recording: asyncio.Task[None] | None = None
            try:
                for more in range(self.batches_per_pass - 1, -1, -1):
                    sending = asyncio.ensure_future(self._send_batch(batch, senders))
                    # a full batch says more is due: claim the next while this one is on the
                    # wire; never beyond the pass's last batch (a claimed row nobody sends
                    # waits for its lease)
                    if more and len(batch.items) >= self.batch:
                        upcoming = asyncio.create_task(self._claim_batch())
                    outcomes = await sending
                    if recording is not None:
                        # results land in order, one writer of this pass at a time
                        written, recording = recording, None
                        await written
                    kinds = {c.id: c.kind for c in batch.items}
                    recording = asyncio.create_task(
                        asyncio.to_thread(self._finish, outcomes, kinds)
                    )
                    if upcoming is None:
                        break
                    ahead, upcoming = upcoming, None
                    batch = await ahead
                    if not batch.items:
                        break
            finally:
                try:
                    await self._settle(upcoming=upcoming, recording=recording)
                finally:
                    shared_client.reset(token)

    async def _settle(
        self, *, upcoming: asyncio.Task[ClaimedBatch] | None, recording: asyncio.Task[None] | None
    ) -> None:
        """End the pass's own tasks: the results being written are waited for, and a batch
        claimed ahead that will not be sent now (the pass was cancelled or failed) is handed
        back at once instead of waiting out its lease."""
        try:
            if recording is not None:
                await recording
        finally:
            if upcoming is not None:
                # a claim runs in a thread, which cannot be stopped: wait for it, then undo it
                ahead = await upcoming
                unsent = [Outcome(c.id, c.attempts, unsent=True) for c in ahead.items]
                if unsent:
                    await asyncio.to_thread(
                        self._finish, unsent, {}, unsent_reason=NOT_SENT_STOPPED
                    )

    async def _claim_batch(self) -> ClaimedBatch:
        deadline = asyncio.get_running_loop().time() + self.lease.total_seconds() / 2
        items = await asyncio.to_thread(self._claim, self.clock.now())
        return ClaimedBatch(items=items, deadline=deadline)

    async def _send_batch(
        self, batch: ClaimedBatch, clients: list[httpx.AsyncClient]
    ) -> list[Outcome]:
        """Send a batch with ``concurrency`` senders, each taking the next unsent row when it is
        free; the outcomes in the batch's order.

        A fixed set of senders rather than a task per row: a batch of hundreds would otherwise
        hold as many tasks, timers and waiters alive while it drains, which the garbage
        collector promotes and then rescans with the whole heap (full collections were most
        of the CPU that delivery spent beyond a bare HTTP client's; docs/benchmarks.md)."""
        outcomes: list[Outcome | None] = [None] * len(batch.items)
        queue = iter(enumerate(batch.items))  # shared: each row is taken by one sender

        async def sender(client: httpx.AsyncClient) -> None:
            shared_client.set(client)  # this sender's own context (gather made it a task)
            for i, claimed in queue:
                outcomes[i] = await self._send(claimed, deadline=batch.deadline)

        await asyncio.gather(*(sender(c) for c in clients[: len(batch.items)]))
        return [o for o in outcomes if o is not None]

    async def _send(self, claimed: Claimed, *, deadline: float) -> Outcome:
        # the claim's deadline bounds the wait for a sender as well as the send: a row must not
        # still be in flight when its lease lets another replica take it; one not started by
        # then goes back unsent
        if asyncio.get_running_loop().time() >= deadline:
            return Outcome(claimed.id, claimed.attempts, unsent=True)
        try:
            # asyncio.timeout_at, not wait_for: no extra task per send
            async with asyncio.timeout_at(deadline):
                channel = self._channel(claimed)
                receipt = await channel.send(claimed.message)
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
        t = now.timestamp()
        claimed: list[Claimed] = []
        unprepared: list[NotificationResult] = []
        # each channel's config decrypted once per claim, not once per notification
        configs: dict[tuple[int, dt.datetime], Mapping[str, Any]] = {}
        with self.db.read_session() as session:
            if not anything_to_claim(session, now=now):
                return claimed  # nothing due: no writer's turn taken from the API's writes
        with self.db.write_session() as session:
            claims = claim_due_notifications(
                session,
                now=now,
                lease=self.lease,
                batch=self.batch,
                next_slot=lambda channel: self._window.next_slot(
                    channel.id, channel.rate_limit_per_minute, t
                ),
                policy_kinds=TEXT_KINDS,  # the others' messages use no template
            )
            for claim in claims:
                row, channel = claim.notification, claim.channel
                try:
                    version = (channel.id, channel.updated_at)
                    config = configs.get(version)
                    if config is None:
                        config = json.loads(self.secrets.decrypt(channel.config_encrypted))
                        configs[version] = config
                    message = build_message(
                        row, claim.record, claim.templates, external_url=self.external_url
                    )
                except Exception as exc:
                    log.exception("notification %s: cannot prepare the message", row.id)
                    unprepared.append(
                        NotificationResult(row.id, state="failed", last_error=str(exc)[:500])
                    )
                    continue
                claimed.append(
                    Claimed(
                        id=row.id,
                        # the claim's UPDATE counted this attempt; the row read before it did not
                        attempts=row.attempts + 1,
                        channel_id=channel.id,
                        kind=channel.kind,
                        config=config,
                        config_version=channel.updated_at,
                        message=message,
                    )
                )
            record_results(session, unprepared)
        return claimed

    def _finish(
        self,
        outcomes: list[Outcome],
        kinds: Mapping[int, str],
        *,
        unsent_reason: str = NOT_SENT_IN_TIME,
    ) -> None:
        now = self.clock.now()
        results: list[NotificationResult] = []
        for outcome in outcomes:
            error = outcome.error
            if outcome.unsent:
                # back as it was before the claim: its attempt uncounted, its place in the
                # queue (next_attempt_at) unchanged; never attempted is what "pending" means
                attempts = outcome.attempts - 1
                results.append(
                    NotificationResult(
                        outcome.id,
                        state="retrying" if attempts else "pending",
                        attempts=attempts,
                        last_error=unsent_reason,
                    )
                )
                continue
            if error is None:
                result = NotificationResult(
                    outcome.id, state="sent", receipt=outcome.receipt, sent_at=now, last_error=""
                )
                said = "sent"
            elif error.retryable and outcome.attempts < self.max_attempts:
                delay = self._backoff(outcome.attempts, error.retry_after)
                result = NotificationResult(
                    outcome.id,
                    state="retrying",
                    next_attempt_at=now + dt.timedelta(seconds=delay),
                    last_error=f"{error.reason} (attempt {outcome.attempts}; "
                    f"next in {delay:.0f} s)",
                )
                said = "retry"
            else:
                why = "" if not error.retryable else f" (gave up after {outcome.attempts})"
                result = NotificationResult(
                    outcome.id, state="failed", last_error=error.reason + why
                )
                said = "failed"
            results.append(result)
            if self.on_outcome is not None:
                self.on_outcome(kinds.get(outcome.id, ""), said)
        with self.db.write_session() as session:
            record_results(session, results)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        return backoff_delay(
            attempts, base=self.base_backoff, cap=self.max_backoff, retry_after=retry_after
        )
