"""The loop base class (gaia.loop) and the retry rule it shares with the outbox
(gaia.domain.retry)."""

from __future__ import annotations

import asyncio

import pytest

from gaia.domain.retry import backoff_delay
from gaia.loop import LoopService


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base=10, cap=300, rand=0.5) for n in range(1, 8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_backoff_jitter_spreads_by_a_fifth_each_way() -> None:
    assert backoff_delay(1, base=10, cap=300, rand=0.0) == pytest.approx(8.0)
    assert backoff_delay(1, base=10, cap=300, rand=0.999999) == pytest.approx(12.0, rel=1e-4)
    draws = {round(backoff_delay(3, base=10, cap=300), 3) for _ in range(50)}
    assert len(draws) > 1 and all(32 <= d <= 48 for d in draws)


def test_backoff_honours_retry_after_up_to_the_cap() -> None:
    assert backoff_delay(1, base=10, cap=300, retry_after=120, rand=0.5) == 120
    assert backoff_delay(1, base=10, cap=300, retry_after=9999, rand=0.5) == 300
    assert backoff_delay(4, base=10, cap=300, retry_after=5, rand=0.5) == 80


def test_backoff_counts_failures_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, base=1, cap=2)


class Flaky(LoopService):
    name = "flaky"

    def __init__(self, outcomes: list[bool]) -> None:
        super().__init__(interval=0.01, max_backoff=0.04)
        self.outcomes = outcomes
        self.failure_counts: list[int] = []

    async def run_once(self) -> None:
        self.failure_counts.append(self.failures)
        if not self.outcomes.pop(0):
            raise RuntimeError("the database is down")


def test_a_failing_pass_is_logged_and_the_loop_backs_off_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = Flaky([False, False, False, True, False])
    asyncio.run(loop.start(loops=5))
    # each pass saw how many passes before it had failed in a row; a good pass resets the count
    assert loop.failure_counts == [0, 1, 2, 3, 0]
    assert loop.failures == 1
    assert "flaky: pass failed (3 in a row)" in caplog.text
    assert "the database is down" in caplog.text


def test_an_outage_logs_one_traceback_then_one_line_per_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The mistake: during a database outage every loop logged a full traceback on every pass,
    burying the platform's log; the first failure keeps its traceback, repeats are one line."""
    loop = Flaky([False, False, False, True])
    with caplog.at_level("WARNING", logger="gaia.loop"):
        asyncio.run(loop.start(loops=4))
    failures = [r for r in caplog.records if r.name == "gaia.loop"]
    assert len(failures) == 3
    first, *repeats = failures
    assert first.levelname == "ERROR" and first.exc_info is not None
    for n, record in enumerate(repeats, start=2):
        assert record.levelname == "WARNING" and record.exc_info is None
        message = record.getMessage()
        assert "\n" not in message
        assert f"flaky: pass failed ({n} in a row): RuntimeError: the database is down" in message


def test_next_delay_is_the_interval_until_a_pass_fails() -> None:
    loop = Flaky([])
    assert loop.next_delay() == 0.01
    loop.failures = 2
    assert 0.016 <= loop.next_delay() <= 0.024
    loop.failures = 10  # capped before the jitter
    assert 0.032 <= loop.next_delay() <= 0.048


def test_the_default_cap_is_five_minutes_or_the_interval() -> None:
    assert LoopService(interval=15).max_backoff == 300
    assert LoopService(interval=900).max_backoff == 900


class Counting(LoopService):
    name = "counting"

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__(interval=60.0, max_backoff=60.0)
        self.fail = fail
        self.runs = 0

    async def run_once(self) -> None:
        self.runs += 1
        if self.fail:
            raise RuntimeError("down")


def test_a_wake_runs_the_next_pass_at_once_instead_of_after_the_interval() -> None:
    async def scenario() -> tuple[int, int]:
        loop = Counting()
        task = asyncio.create_task(loop.start())
        await asyncio.sleep(0.05)
        first = loop.runs
        for _ in range(3):  # several wakes before the pass starts make one pass
            loop.wake()
        await asyncio.sleep(0.1)
        woken = loop.runs
        loop.stop()
        await task
        return first, woken

    first, woken = asyncio.run(scenario())
    assert (first, woken) == (1, 2)  # the 60 s interval did not have to pass


def test_a_failing_loop_keeps_its_back_off_when_woken() -> None:
    async def scenario() -> int:
        loop = Counting(fail=True)
        task = asyncio.create_task(loop.start())
        await asyncio.sleep(0.05)
        loop.wake()
        await asyncio.sleep(0.1)
        runs = loop.runs
        loop.stop()
        await task
        return runs

    assert asyncio.run(scenario()) == 1
