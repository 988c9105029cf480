"""Issue 15, the login throttle: no remote lock-out, one budget for all replicas, bounded work.

The old throttle counted failures per username only, in a dict of each process: ten bad guesses
from anyone locked ``admin`` out for everyone, every name ever tried stayed in memory, each
replica allowed the full rate, and nothing bounded how many argon2 verifications ran at once.
Each test here reproduces one of those mistakes (or an attack on the new design) and fails on the
old code. Every test that touches the database runs on SQLite and on PostgreSQL (``platform``).
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from starlette.requests import Request

from gaia import security
from gaia.api.client_address import client_address
from gaia.app import create_app
from gaia.clock import ManualClock
from gaia.domain.errors import TooManyRequests
from gaia.platform import Platform
from gaia.settings import Settings
from gaia.store.models import LoginThrottleBucket, OperationRecord
from gaia.store.throttle import LoginThrottle, ThrottlePolicy
from tests.conftest import ADMIN_PASSWORD, TEST_SECRET_KEY

ATTACKER = "203.0.113.66"
ADMIN_ELSEWHERE = "198.51.100.7"
PER_USER = 10  # Settings.login_failures_per_user
PER_CLIENT = 50  # Settings.login_failures_per_client
WINDOW = 300.0  # Settings.login_failure_window_seconds


def from_address(client: TestClient, address: str) -> TestClient:
    """A client of the same app whose requests come from ``address`` (the socket peer)."""
    return TestClient(client.app, base_url="https://localhost", client=(address, 40000))


def log_in(client: TestClient, username: str, password: str, **kw: object) -> httpx.Response:
    return client.post(
        "/api/v1/auth/login",
        json={"username": username, "password": password},
        **kw,  # type: ignore[arg-type]
    )


def fail(client: TestClient, times: int, username: str = "admin") -> list[int]:
    return [log_in(client, username, "wrong-password").status_code for _ in range(times)]


class CountingHasher(PasswordHasher):
    """argon2 at the tests' cheap cost that counts verifications and how many ran at once."""

    def __init__(self, *, delay: float = 0.0) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.delay = delay
        self.calls = 0
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            time.sleep(self.delay)  # hold the slot long enough for attempts to overlap
            return super().verify(hash, password)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    counting = CountingHasher(delay=0.02)
    monkeypatch.setattr(security, "_hasher", counting)
    # These tests count verifications; on a loaded test machine a wait for a slot may pass the
    # production bound, and the 429 it sheds would be miscounted as the throttle's.
    monkeypatch.setattr(security, "VERIFY_WAIT_SECONDS", 60.0)
    return counting


def test_attackers_failures_do_not_lock_admin_out_from_another_address(
    client: TestClient,
) -> None:
    """The remote lock-out: ten bad guesses at ``admin`` from anywhere locked the real admin
    out. Now the attacker's address is refused (429, Retry-After, the error shape) and the
    admin, from their own address, logs in; their success does not clear the attacker's
    bucket either."""
    attacker = from_address(client, ATTACKER)
    assert fail(attacker, PER_USER) == [401] * PER_USER
    refused = log_in(attacker, "admin", "wrong-password")
    assert refused.status_code == 429, refused.text
    admin = from_address(client, ADMIN_ELSEWHERE)
    assert log_in(admin, "admin", ADMIN_PASSWORD).status_code == 200

    body = refused.json()
    assert body["code"] == "too_many_requests" and "retry in" in body["message"]
    assert int(refused.headers["Retry-After"]) == body["details"]["retry_after_seconds"] > 0
    # even the right password waits: the bucket is spent, not the guess judged
    assert log_in(attacker, "admin", ADMIN_PASSWORD).status_code == 429
    assert log_in(attacker, "admin", "wrong-password").status_code == 429


def test_the_budget_comes_back_as_time_passes(client: TestClient, platform: Platform) -> None:
    """A throttle that never forgets (or forgets only on the wall clock) locks a mistyping
    user out for good. The bucket drains: after Retry-After one more try is allowed, after a
    quiet window the whole budget is back; a right password empties the bucket."""
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    attacker = from_address(client, ATTACKER)
    fail(attacker, PER_USER)
    refused = log_in(attacker, "admin", "wrong-password")
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert wait == round(WINDOW / PER_USER)  # one unit drains every 30 s
    clock.step(wait - 5)
    assert log_in(attacker, "admin", "wrong-password").status_code == 429
    clock.step(5)
    assert fail(attacker, 2) == [401, 429]  # room for exactly one more
    clock.step(WINDOW)
    assert fail(attacker, PER_USER - 1) == [401] * (PER_USER - 1)
    assert log_in(attacker, "admin", ADMIN_PASSWORD).status_code == 200
    assert fail(attacker, PER_USER) == [401] * PER_USER  # the success reset the count


def test_spraying_many_usernames_from_one_address_is_throttled(client: TestClient) -> None:
    """Per-username counting let one address try one password on every username there is.
    The address's own bucket refuses it after ``PER_CLIENT`` failures, whatever the names,
    and only that address."""
    sprayer = from_address(client, ATTACKER)
    codes = [log_in(sprayer, f"user-{i}", "Winter2026!").status_code for i in range(PER_CLIENT)]
    assert codes == [401] * PER_CLIENT
    refused = log_in(sprayer, "someone-new", "Winter2026!")
    assert refused.status_code == 429 and "from your address" in refused.json()["message"]
    assert log_in(sprayer, "admin", ADMIN_PASSWORD).status_code == 429
    other = from_address(client, ADMIN_ELSEWHERE)
    assert log_in(other, "someone-new", "Winter2026!").status_code == 401


def test_parallel_guesses_get_no_more_verifications_than_the_budget(
    client: TestClient, hasher: CountingHasher
) -> None:
    """Check-then-count let a burst of parallel guesses all pass the check before the first
    failure was counted. The unit is spent before argon2 runs, atomically, so 30 parallel
    guesses from one address cost exactly ``PER_USER`` verifications, and refused attempts
    never reach argon2."""
    attacker = from_address(client, ATTACKER)
    with ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(lambda _: log_in(attacker, "admin", "guess").status_code, range(30)))
    assert sorted(codes) == [401] * PER_USER + [429] * (30 - PER_USER)
    assert hasher.calls == PER_USER
    fail(attacker, 20)
    assert hasher.calls == PER_USER


def test_argon2_verifications_are_bounded_process_wide(hasher: CountingHasher) -> None:
    """Every login ran argon2 at once: a flood from many addresses queued unbounded CPU work.
    At most ``VERIFY_SLOTS`` verifications run at a time in the process."""
    digest = security.hash_password("right")
    threads = 4 * security.VERIFY_SLOTS + 4
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(
            pool.map(lambda _: security.verify_password(digest, "wrong"), range(threads))
        )
    assert results == [False] * threads
    assert hasher.calls == threads
    assert hasher.peak <= security.VERIFY_SLOTS


def test_logins_waiting_for_argon2_cannot_take_every_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A login waiting for a verification slot holds one of the worker threads every sync
    route shares, for up to ``VERIFY_WAIT_SECONDS``: a flood from many addresses (each within
    its own budget) could hold all of them and stall the platform. At most ``VERIFY_SLOTS +
    VERIFY_QUEUE`` logins are admitted at once; the rest are refused at once, without waiting."""
    slow = CountingHasher(delay=0.5)
    monkeypatch.setattr(security, "_hasher", slow)
    monkeypatch.setattr(security, "_verify_slots", threading.BoundedSemaphore(1))
    monkeypatch.setattr(security, "_verify_admitted", threading.BoundedSemaphore(3))
    digest = security.hash_password("right")

    together = threading.Barrier(8)

    def attempt(_: int) -> tuple[str, float]:
        together.wait(timeout=30)  # all eight ask within the first verification's half second
        started = time.monotonic()
        try:
            security.verify_password(digest, "wrong")
            return "verified", time.monotonic() - started
        except TooManyRequests:
            return "refused", time.monotonic() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    refused = [took for what, took in outcomes if what == "refused"]
    assert sorted(what for what, _ in outcomes) == ["refused"] * 5 + ["verified"] * 3
    assert slow.calls == 3 and slow.peak == 1
    assert max(refused) < 0.4  # refused at once, not after waiting for a slot


def test_a_login_that_finds_no_free_verification_slot_is_shed(
    client: TestClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing bounded the argon2 work a flood from many addresses queued up. When every slot
    stays busy for ``VERIFY_WAIT_SECONDS`` the login is answered 429 with Retry-After instead
    of joining an endless queue; once a slot is free, logins work again."""
    monkeypatch.setattr(security, "VERIFY_WAIT_SECONDS", 0.2)
    taken = 0
    try:
        while security._verify_slots.acquire(blocking=False):  # every slot busy elsewhere
            taken += 1
        r = log_in(from_address(client, ADMIN_ELSEWHERE), "admin", ADMIN_PASSWORD)
    finally:
        for _ in range(taken):
            security._verify_slots.release()
    assert taken == security.VERIFY_SLOTS
    assert r.status_code == 429 and "busy" in r.json()["message"], r.text
    assert int(r.headers["Retry-After"]) >= 1
    # a shed attempt was no guess: it costs the address nothing
    with platform.db.read_session() as session:
        levels = set(session.scalars(select(LoginThrottleBucket.level)))
    assert levels == {0.0}
    assert log_in(from_address(client, ADMIN_ELSEWHERE), "admin", ADMIN_PASSWORD).status_code == 200


@pytest.fixture
def second_replica(platform: Platform, database_url: str, tmp_path: Path) -> Iterator[Platform]:
    """Another Gaia process on the same database (its own throttle object, its own memory)."""
    settings = Settings(
        data_dir=tmp_path / "replica-2",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        demo=False,
    )
    replica = Platform.open(settings, run_migrations=False, clock=platform.clock)
    yield replica
    replica.db.dispose()


def test_replicas_on_one_database_share_one_budget(
    client: TestClient, second_replica: Platform, hasher: CountingHasher
) -> None:
    """Each process kept its own counts, so N replicas behind a load balancer allowed N times
    the guesses. Two replicas on one database (PostgreSQL is the production case) spend one
    budget, also when the guesses race on both at once."""
    with TestClient(create_app(second_replica, run_loops=False)) as other:
        one = from_address(client, ATTACKER)
        two = TestClient(other.app, base_url="https://localhost", client=(ATTACKER, 40001))
        assert fail(one, PER_USER // 2) == [401] * (PER_USER // 2)
        assert fail(two, PER_USER // 2) == [401] * (PER_USER // 2)
        assert log_in(one, "admin", "guess").status_code == 429
        assert log_in(two, "admin", "guess").status_code == 429

        # A race across both replicas for another user: still exactly one budget.
        with ThreadPoolExecutor(max_workers=24) as pool:
            codes = list(
                pool.map(
                    lambda i: log_in((one, two)[i % 2], "ghost", "guess").status_code, range(24)
                )
            )
        assert sorted(codes) == [401] * PER_USER + [429] * (24 - PER_USER)
        assert hasher.calls == 2 * PER_USER


def _rows(platform: Platform) -> int:
    with platform.db.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(LoginThrottleBucket)) or 0)


def test_the_throttle_table_stays_bounded(platform: Platform) -> None:
    """The old dict kept every username ever tried, forever. Drained buckets are deleted, and
    past ``max_rows`` the stalest go, so a flood from many addresses cannot grow the table
    without bound; usernames are not stored in the clear."""
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    throttle = LoginThrottle(
        db=platform.db, clock=clock, policy=ThrottlePolicy(max_rows=20, sweep_every=10)
    )
    for i in range(200):
        throttle.admit(client=f"192.0.2.{i % 250}", username=f"name-{i}")
        clock.step(0.01)
        # at most max_rows after a sweep, plus two buckets per charge until the next one
        assert _rows(platform) <= 20 + 2 * 10
    with platform.db.read_session() as session:
        accounts = set(session.scalars(select(LoginThrottleBucket.account)))
    assert not any(a.startswith("name-") for a in accounts)
    clock.step(2 * WINDOW)
    throttle.sweep()
    assert _rows(platform) == 0


def test_a_sweep_never_waits_for_a_login_in_progress(platform: Platform, database_url: str) -> None:
    """A sweep that waited for the row locks of charges in progress could deadlock with one
    (it holds a stale user bucket the charge wants next, and waits for the client bucket the
    charge holds): PostgreSQL then aborts one of them, a login fails. The sweep skips rows a
    charge holds and finishes at once."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: there a sweep waits for any write, by design")
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    throttle = platform.login_throttle
    throttle.admit(client=ATTACKER, username="admin")  # a client and a user bucket
    clock.step(2 * WINDOW)  # both drained: the sweep's to delete
    charge = platform.db.new_session(write=True)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        # a charge of the attacker's next attempt has locked its client bucket
        charge.execute(
            select(LoginThrottleBucket)
            .where(LoginThrottleBucket.client == ATTACKER, LoginThrottleBucket.account == "*")
            .with_for_update()
        ).one()
        sweeping = pool.submit(throttle.sweep)
        try:
            deleted: int | None = sweeping.result(timeout=5)
        except TimeoutError:
            deleted = None
    finally:
        charge.rollback()  # lets a sweep that did wait finish, so the test cannot hang
        charge.close()
        pool.shutdown(wait=True)
    assert deleted == 1, "the sweep waited for the charge's lock"
    assert _rows(platform) == 1  # the locked client bucket stays for the charge


def test_ipv6_clients_are_counted_per_64(client: TestClient) -> None:
    """An IPv6 host owns a whole /64: counting single addresses gave it 2**64 fresh budgets."""
    network = ipaddress.ip_network("2001:db8:1:2::/64")
    codes = [
        log_in(from_address(client, str(network[i + 1])), "admin", "guess").status_code
        for i in range(PER_USER + 1)
    ]
    assert codes == [401] * PER_USER + [429]
    assert log_in(from_address(client, "2001:db8:1:3::1"), "admin", "guess").status_code == 401


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
    client: TestClient, platform: Platform
) -> None:
    """Believing X-Forwarded-For from anyone lets an attacker pick a fresh address per guess;
    ignoring it behind a proxy puts every user in the proxy's one bucket. It is read only when
    the peer is in ``trusted_proxies``, from the right."""
    # No trusted proxy: a client that rotates X-Forwarded-For is still one client.
    attacker = from_address(client, ATTACKER)
    codes = [
        log_in(attacker, "admin", "guess", headers={"X-Forwarded-For": f"192.0.2.{i}"}).status_code
        for i in range(PER_USER + 1)
    ]
    assert codes == [401] * PER_USER + [429]

    platform.settings.trusted_proxies = [ipaddress.ip_network("10.0.0.0/24")]
    proxy = from_address(client, "10.0.0.5")
    # the proxy appends the address it saw; whatever the client wrote stays on the left
    forged = {"X-Forwarded-For": "192.0.2.200, 198.51.100.99"}
    assert [log_in(proxy, "bob", "guess", headers=forged).status_code for _ in range(11)] == [
        401
    ] * PER_USER + [429]
    other_user = {"X-Forwarded-For": "198.51.100.100"}
    assert log_in(proxy, "bob", "guess", headers=other_user).status_code == 401
    # the forged left-hand entry was never the key: a fresh forged one changes nothing
    forged_again = {"X-Forwarded-For": "192.0.2.201, 198.51.100.99"}
    assert log_in(proxy, "bob", "guess", headers=forged_again).status_code == 429


def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 1), "headers": headers})


def test_client_address_walks_forwarded_for_from_the_right() -> None:
    """The rules of ``client_address`` (shared with the console), on their own."""
    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    # untrusted peer: its header is ignored
    assert client_address(_request("192.0.2.1", "1.2.3.4"), trusted_proxies=trusted) == (
        "192.0.2.1"
    )
    assert client_address(_request("192.0.2.1", "1.2.3.4"), trusted_proxies=[]) == "192.0.2.1"
    # two proxies of ours (two headers), a forged entry on the left
    req = _request("10.0.0.1", "6.6.6.6, 192.0.2.9", "10.0.0.2")
    assert client_address(req, trusted_proxies=trusted) == "192.0.2.9"
    # every hop ours: the leftmost; garbage stops the walk at the last checked hop
    assert client_address(_request("10.0.0.1", "10.0.0.3"), trusted_proxies=trusted) == "10.0.0.3"
    assert client_address(_request("10.0.0.1", "unknown"), trusted_proxies=trusted) == "10.0.0.1"
    # IPv4-mapped IPv6 peers are IPv4; a peer that is not an IP is kept as given
    assert client_address(_request("::ffff:10.0.0.1", "192.0.2.5"), trusted_proxies=trusted) == (
        "192.0.2.5"
    )
    assert client_address(_request("testclient"), trusted_proxies=trusted) == "testclient"


def test_console_logins_are_throttled_per_browser_address(client: TestClient) -> None:
    """The console logs in through the API in-process: every browser came from one made-up
    peer, so one attacker at the login form throttled everyone's console login. The API now
    sees the browser's address."""
    attacker = from_address(client, ATTACKER)
    form = {"username": "admin", "password": "guess"}
    codes = [
        attacker.post("/console/login", data=form, follow_redirects=False).status_code
        for _ in range(PER_USER + 1)
    ]
    assert codes == [401] * (PER_USER + 1)  # the form shows the refusal on the page
    admin = from_address(client, ADMIN_ELSEWHERE)
    r = admin.post(
        "/console/login",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    page = attacker.post("/console/login", data=form, follow_redirects=False)
    assert "too many failed logins" in page.text and "retry in" in page.text


def test_old_failures_are_forgotten_not_kept_forever(platform: Platform) -> None:
    """The bucket of an address that stopped guessing drains to nothing and its row goes at the
    next sweep: nothing about a past attempt is kept longer than it matters."""
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    platform.login_throttle.admit(client=ATTACKER, username="admin")
    assert _rows(platform) == 2
    clock.step(WINDOW * (PER_USER + 1) / PER_USER + 1)
    assert platform.login_throttle.sweep() == 2
    assert _rows(platform) == 0


def test_a_flood_of_refusals_costs_the_store_nothing_and_is_recorded_once(
    client: TestClient, platform: Platform
) -> None:
    """A flood of refused logins must not become a flood of work for the store that other
    users' logins write to: each refusal read the buckets and wrote an operation record, so
    10,000 refusals made 10,000 reads and 10,000 record writes. Now a refusal is remembered
    until its Retry-After (nothing can change it before then) and answered from memory, and
    one refusal per address and minute is recorded. After the wait the address may try again
    (the memory does not outlive the refusal)."""
    attacker = from_address(client, ATTACKER)
    assert fail(attacker, PER_USER) == [401] * PER_USER
    first = log_in(attacker, "admin", "wrong-password")
    assert first.status_code == 429

    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "login_throttle" in statement or "operation_records" in statement:
            statements.append(statement)

    engine = platform.db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert fail(attacker, 50) == [429] * 50
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert statements == []  # neither the buckets read nor a record written, 50 times over

    with platform.db.read_session() as session:
        refused = session.scalars(
            select(OperationRecord).where(
                OperationRecord.action == "auth.login", OperationRecord.status_code == 429
            )
        ).all()
    assert len(refused) == 1 and "further refusals" in refused[0].summary

    wait = int(first.headers["Retry-After"])
    clock = platform.clock
    assert isinstance(clock, ManualClock)
    clock.step(wait + 1)
    assert log_in(attacker, "admin", "wrong-password").status_code == 401
