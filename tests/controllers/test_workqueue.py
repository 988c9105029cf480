"""The app controller's work queue (``gaia.controllers.workqueue``) on its own: one entry per key,
delays that double from the interval up to the cap, a deadline that comes first, a new wish
that starts the delays again. The controller's use of it is in ``test_quiet.py``."""

from __future__ import annotations

import datetime as dt

import pytest

from gaia.controllers.workqueue import Key, WorkQueue

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
APP: Key = ("app", 7)


def s(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_waiting_looks_come_after_doubling_delays_up_to_the_cap() -> None:
    q = WorkQueue(base=1.0, cap=10.0)
    now = T0
    gaps = []
    for _ in range(6):
        q.waiting(APP, now=now, version=1)
        at = q.when(APP)
        assert at is not None
        gaps.append((at - now).total_seconds())
        assert APP not in q.due(at - dt.timedelta(microseconds=1)) and APP in q.due(at)
        now = at
    assert gaps == [1, 2, 4, 8, 10, 10]
    assert len(q) == 1  # one entry however often it was added


def test_an_act_means_the_next_tick_and_starts_the_delays_again() -> None:
    q = WorkQueue(base=1.0, cap=10.0)
    for n in range(3):
        q.waiting(APP, now=s(n), version=1)
    q.acted(APP, now=s(5), version=1)
    assert q.due(s(5)) == {APP}
    q.waiting(APP, now=s(5), version=1)
    assert q.when(APP) == s(6)


def test_a_deadline_comes_first_and_never_before_now() -> None:
    q = WorkQueue(base=1.0, cap=60.0)
    for _ in range(5):
        q.waiting(APP, now=s(0), version=1)  # streak 5: 16 s
    q.waiting(APP, now=s(0), until=s(3), version=1)
    assert q.when(APP) == s(3)
    q.waiting(APP, now=s(0), until=s(-5), version=1)  # a moment already past: now
    assert q.when(APP) == s(0)


def test_a_changed_wish_starts_the_delays_again() -> None:
    q = WorkQueue(base=1.0, cap=60.0)
    for _ in range(4):
        q.waiting(APP, now=s(0), version=1)
    assert q.when(APP) == s(8)
    q.waiting(APP, now=s(0), version=2)  # the app's generation moved
    assert q.when(APP) == s(1)


def test_settled_gone_and_cleared_keys_leave_the_queue() -> None:
    q = WorkQueue(base=1.0, cap=10.0)
    other: Key = ("app", 8)
    cluster: Key = ("cluster", 1)
    for key in (APP, other, cluster):
        q.acted(key, now=T0)
    q.settled(APP)
    assert q.due(T0) == {other, cluster}
    q.keep_only({cluster})
    assert q.due(T0) == {cluster}
    q.drop({cluster})
    assert len(q) == 0
    q.acted(APP, now=T0)
    q.clear()
    assert q.due(s(100)) == set()


def test_the_delays_must_make_sense() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        WorkQueue(base=0, cap=1)
    with pytest.raises(ValueError, match="base <= cap"):
        WorkQueue(base=5, cap=1)
