"""The login throttle: failed logins counted in the database, per client address.

Every login attempt first spends one unit from two leaky buckets (``admit``):

- the **(client address, username)** bucket, ``failures_per_user`` deep: one address guessing
  one user's password. Another address logging in as that user has a bucket of its own, so an
  attacker's failures never lock the real user out (no remote lock-out);
- the **client address** bucket (``account == "*"``), ``failures_per_client`` deep: one address
  spraying guesses over many usernames.

A bucket drains at a steady rate, completely in ``window_seconds``: after a burst of failures
the address gets one more try every ``window / depth`` seconds, and the whole budget back after
a quiet window. A full bucket refuses the attempt with ``TooManyRequests`` (429, ``Retry-After``
= the seconds until the bucket has room) *before* any password is verified, so refused attempts
cost one indexed read and no argon2 work. A refused attempt spends nothing: hammering a full
bucket does not keep it full for longer.

The unit is spent *before* the password is checked and given back after (``succeeded``: the
(client, username) bucket is emptied, the client's gets its unit back; ``not_checked``, when
the process was too busy to verify: both get it back), so concurrent attempts
see each other's in-flight charges: a thousand parallel guesses from one address get exactly
``failures_per_user`` verifications, not a thousand.

Replicas on one PostgreSQL database spend one budget: the charge is one write transaction that
reads each bucket with ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` (creating it, or taking
its row lock, in one statement), then writes the new level. On PostgreSQL the row lock
serialises two replicas charging the same bucket (buckets are always locked in the same order,
client first, so two charges never deadlock); on SQLite the write transaction holds the
database's write lock (``BEGIN IMMEDIATE``, ``gaia.store.database``).

A process also remembers, in memory, each refusal it answered until the time it named
(``Retry-After``): a bucket only drains with time, and a refused attempt can neither spend nor
give back, so until then every replica's answer would be the same refusal. Repeats of a flood are
answered from that memo (bounded, ``MEMO_ENTRIES``) without touching the database, which keeps
the flood's cost off the store that other users' logins write to.
(``first_refusal`` tells the route which refusals are worth an operation record: one per
address per ``REFUSAL_RECORD_SECONDS``, not one per request of a flood.)

The table stays bounded: every ``sweep_every`` charges a process deletes the buckets that have
drained to empty and, past ``max_rows``, the stalest ones (a flood from more addresses than
that forgets the quietest first). Usernames are stored only as their SHA-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import itertools
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, case, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gaia.clock import Clock
from gaia.domain.errors import TooManyRequests
from gaia.store.database import Database
from gaia.store.models import LoginThrottleBucket

ANY_ACCOUNT = "*"
# refusals remembered in memory (then the oldest are forgotten and asked of the database again)
MEMO_ENTRIES = 10_000
# at most one operation record of a refused login per address and process this often
REFUSAL_RECORD_SECONDS = 60.0
# IPv6 clients are counted per /64: one host usually holds a whole /64 and could otherwise
# take a fresh address (and a fresh budget) for every guess.
IPV6_CLIENT_PREFIX = 64


@dataclass(frozen=True)
class ThrottlePolicy:
    failures_per_user: int = 10
    failures_per_client: int = 50
    window_seconds: float = 300.0
    max_rows: int = 100_000
    sweep_every: int = 256


@dataclass(frozen=True)
class Bucket:
    """A leaky bucket ``depth`` deep that drains completely in ``window_seconds``."""

    depth: int
    window_seconds: float

    @property
    def rate(self) -> float:
        """Units drained per second."""
        return self.depth / self.window_seconds

    def level(self, stored: float, *, since: dt.datetime, now: dt.datetime) -> float:
        """What is left at ``now`` of ``stored`` units put in at ``since``."""
        elapsed = max(0.0, (now - since).total_seconds())  # a replica's clock may lag
        return max(0.0, stored - elapsed * self.rate)

    def full(self, level: float) -> bool:
        return level > self.depth - 1

    def wait_seconds(self, level: float) -> int:
        """Whole seconds until a bucket at ``level`` has room for one more unit."""
        return max(1, math.ceil((level - (self.depth - 1)) / self.rate))


@dataclass(frozen=True)
class Attempt:
    """One admitted login attempt: the buckets it was charged to."""

    client: str
    account: str


def _refusal(wait: int, reason: str) -> TooManyRequests:
    return TooManyRequests(
        f"too many failed logins {reason}from your address; retry in {wait} seconds",
        retry_after=wait,
        details={"retry_after_seconds": wait},
    )


def client_key(address: str) -> str:
    """The bucket of a client address: the address itself, an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


def account_key(username: str) -> str:
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()


class LoginThrottle:
    """The throttle of one process over the shared table (see the module docstring)."""

    def __init__(self, *, db: Database, clock: Clock, policy: ThrottlePolicy) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.per_user = Bucket(policy.failures_per_user, policy.window_seconds)
        self.per_client = Bucket(policy.failures_per_client, policy.window_seconds)
        # A bucket holds at most depth + 1 units (charged while just under full), so it is empty
        # this long after its last charge; then its row carries nothing and may go.
        shallowest = min(policy.failures_per_user, policy.failures_per_client)
        self.forget_after = dt.timedelta(
            seconds=policy.window_seconds * (shallowest + 1) / shallowest
        )
        self._charges = itertools.count(1)
        self._sweeping = threading.Lock()
        # (client, account) -> (until, reason): refusals answered, valid until ``until``
        self._refused: OrderedDict[tuple[str, str], tuple[dt.datetime, str]] = OrderedDict()
        # client -> when its last refusal was recorded (``first_refusal``)
        self._recorded: OrderedDict[str, dt.datetime] = OrderedDict()
        self._memo_lock = threading.Lock()

    def _buckets(self, attempt: Attempt) -> list[tuple[str, Bucket]]:
        # Always client first: the order every transaction locks them in.
        return [(ANY_ACCOUNT, self.per_client), (attempt.account, self.per_user)]

    def admit(self, *, client: str, username: str) -> Attempt:
        """Charge one attempt by ``client`` as ``username``, or raise ``TooManyRequests``."""
        attempt = Attempt(client=client_key(client), account=account_key(username))
        now = self.clock.now()
        self._refuse_if_remembered(attempt, now)
        # A refused attempt (the flood's common case) needs no write and no lock.
        with self.db.read_session() as session:
            rows = {
                row.account: row
                for row in session.scalars(
                    select(LoginThrottleBucket).where(
                        LoginThrottleBucket.client == attempt.client,
                        LoginThrottleBucket.account.in_([ANY_ACCOUNT, attempt.account]),
                    )
                )
            }
            levels = {
                account: bucket.level(row.level, since=row.updated_at, now=now)
                for account, bucket in self._buckets(attempt)
                if (row := rows.get(account)) is not None
            }
        self._refuse_if_full(attempt, levels, now=now)
        with self.db.write_session() as session:
            levels = {
                account: bucket.level(stored, since=since, now=now)
                for account, bucket in self._buckets(attempt)
                for stored, since in [_lock_bucket(session, attempt.client, account, now)]
            }
            self._refuse_if_full(attempt, levels, now=now)
            for account, level in levels.items():
                session.execute(
                    update(LoginThrottleBucket)
                    .where(
                        LoginThrottleBucket.client == attempt.client,
                        LoginThrottleBucket.account == account,
                    )
                    .values(level=level + 1, updated_at=now)
                )
        if next(self._charges) % self.policy.sweep_every == 0:
            self.sweep()
        return attempt

    def _refuse_if_full(
        self, attempt: Attempt, levels: dict[str, float], *, now: dt.datetime
    ) -> None:
        full = [
            (bucket.wait_seconds(level), reason, account)
            for bucket, account, reason in (
                (self.per_user, attempt.account, "for this user "),
                (self.per_client, ANY_ACCOUNT, ""),
            )
            if bucket.full(level := levels.get(account, 0.0))
        ]
        if full:
            # both may be full: the caller must wait for the later of the two
            wait, reason, account = max(full)
            self._remember(attempt.client, account, now + dt.timedelta(seconds=wait), reason)
            raise _refusal(wait, reason)

    def _remember(self, client: str, account: str, until: dt.datetime, reason: str) -> None:
        with self._memo_lock:
            self._refused[(client, account)] = (until, reason)
            self._refused.move_to_end((client, account))
            while len(self._refused) > MEMO_ENTRIES:
                self._refused.popitem(last=False)

    def _refuse_if_remembered(self, attempt: Attempt, now: dt.datetime) -> None:
        """Refuse again, without the database, while a refusal this process answered holds."""
        with self._memo_lock:
            for account in (ANY_ACCOUNT, attempt.account):
                memo = self._refused.get((attempt.client, account))
                if memo is None:
                    continue
                until, reason = memo
                if until <= now:
                    del self._refused[(attempt.client, account)]
                    continue
                wait = max(1, math.ceil((until - now).total_seconds()))
                raise _refusal(wait, reason)

    def first_refusal(self, client: str) -> bool:
        """Whether a refusal of ``client`` now is the first this process has seen from it in
        ``REFUSAL_RECORD_SECONDS`` (and so worth an operation record); a flood's repeats are
        answered but not recorded one by one."""
        key, now = client_key(client), self.clock.now()
        with self._memo_lock:
            last = self._recorded.get(key)
            if last is not None and (now - last).total_seconds() < REFUSAL_RECORD_SECONDS:
                return False
            self._recorded[key] = now
            self._recorded.move_to_end(key)
            while len(self._recorded) > MEMO_ENTRIES:
                self._recorded.popitem(last=False)
            return True

    def succeeded(self, attempt: Attempt) -> None:
        """The password was right: forget this address's failures for this user, and give the
        address's own bucket its unit back (a right password is not a guess)."""
        self._give_back(attempt, forget_user=True)

    def not_checked(self, attempt: Attempt) -> None:
        """The password could not be checked (the process was too busy): the attempt was no
        guess, so both buckets get their unit back."""
        self._give_back(attempt, forget_user=False)

    def _give_back(self, attempt: Attempt, *, forget_user: bool) -> None:
        one_less = case((LoginThrottleBucket.level > 1, LoginThrottleBucket.level - 1), else_=0.0)
        with self.db.write_session() as session:
            # client first, then the user's bucket: the order ``admit`` locks them in
            for account in (ANY_ACCOUNT, attempt.account):
                where = (
                    LoginThrottleBucket.client == attempt.client,
                    LoginThrottleBucket.account == account,
                )
                if forget_user and account != ANY_ACCOUNT:
                    session.execute(delete(LoginThrottleBucket).where(*where))
                else:
                    session.execute(
                        update(LoginThrottleBucket).where(*where).values(level=one_less)
                    )

    def sweep(self) -> int:
        """Delete drained buckets, then the stalest past ``max_rows``; returns rows deleted.

        Rows a charge holds locked right now are skipped (they are being refilled, so not
        stale): a sweep never waits for a login, and never deadlocks with one."""
        if not self._sweeping.acquire(blocking=False):
            return 0  # another thread of this process is sweeping already
        try:
            now = self.clock.now()
            with self.db.write_session() as session:
                deleted = _delete_unlocked(
                    session, LoginThrottleBucket.updated_at < now - self.forget_after
                )
                newest_beyond = session.scalars(
                    select(LoginThrottleBucket.updated_at)
                    .order_by(LoginThrottleBucket.updated_at.desc())
                    .offset(self.policy.max_rows)
                    .limit(1)
                ).first()
                if newest_beyond is not None:
                    deleted += _delete_unlocked(
                        session, LoginThrottleBucket.updated_at <= newest_beyond
                    )
            return deleted
        finally:
            self._sweeping.release()


def _lock_bucket(
    session: Session, client: str, account: str, now: dt.datetime
) -> tuple[float, dt.datetime]:
    """The bucket's stored level and time, locked for this transaction (created empty if
    missing), in one statement: PostgreSQL's ``ON CONFLICT DO UPDATE`` takes the row lock
    and, under a concurrent charge, waits for it and returns the committed level."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    new = insert(LoginThrottleBucket).values(
        client=client, account=account, level=0.0, updated_at=now
    )
    statement = new.on_conflict_do_update(
        index_elements=[LoginThrottleBucket.client, LoginThrottleBucket.account],
        set_={"level": LoginThrottleBucket.level},  # a no-op write: it takes the lock
    ).returning(LoginThrottleBucket.level, LoginThrottleBucket.updated_at)
    stored, since = session.execute(statement).one()
    return float(stored), since


def _delete_unlocked(session: Session, condition: ColumnElement[bool]) -> int:
    """Delete the rows matching ``condition`` that no other transaction holds locked
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's one writer needs no such care)."""
    doomed = (
        select(LoginThrottleBucket.client, LoginThrottleBucket.account)
        .where(condition)
        .with_for_update(skip_locked=True)
    )
    key = tuple_(LoginThrottleBucket.client, LoginThrottleBucket.account)
    result = cast(
        CursorResult[Any], session.execute(delete(LoginThrottleBucket).where(key.in_(doomed)))
    )
    return int(result.rowcount)
