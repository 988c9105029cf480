"""Issue 15, regular expressions from users: log search (``regex=true``) runs in linear time.

The attack: ``GET .../logs?regex=true&q=(.|.)*\\x00``. Python's backtracking ``re`` tries every
way of splitting the line between the two branches, 2^n of them for a line of n characters, in a
thread that holds the GIL: one viewer stalls the whole platform. The old guard refused only a
repetition nested in a repetition (``(a+)+``), and an alternation inside one slipped past it.
Patterns now run on RE2, which has no backtracking; what RE2 cannot run (backreferences,
lookaround) is a 422 saying so.

The time-bounded test first searches a short line (27 characters: the old engine needs 20 to
60 seconds there and fails the bound) before the long one (16 000: the old engine would need
longer than the universe has), so that on the old code it fails rather than hangs. The bound
(``BOUND_S``) leaves room for a loaded test machine (a request that takes 0.1 s alone once took
5 s in a full CI run): RE2 itself takes microseconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gaia.monitor.logs import store as logs_module
from gaia.monitor.logs.store import (
    SYSTEM_SOURCE,
    LogEntry,
    LogFilter,
    LogSelector,
    SqliteLogStore,
)
from gaia.platform import Platform

URL = "/api/v1/system/logs"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CATASTROPHIC = r"(.|.)*\x00"
BOUND_S = 10.0


def write(platform: Platform, *texts: str) -> None:
    platform.log_store.append(
        [
            LogEntry(
                SYSTEM_SOURCE,
                at=T0 + dt.timedelta(seconds=i),
                text=text,
                level=logging.INFO,
                logger="gaia",
            )
            for i, text in enumerate(texts)
        ]
    )


def search(client: TestClient, admin: dict[str, str], q: str) -> tuple[int, dict[str, object]]:
    r = client.get(URL, headers=admin, params={"q": q, "regex": "true"})
    return r.status_code, r.json()


def test_catastrophic_pattern_over_long_lines_answers_quickly_with_no_match(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    write(platform, "a" * 27)
    started = time.monotonic()
    status, body = search(client, admin, CATASTROPHIC)
    assert status == 200, body
    assert body["items"] == []
    assert time.monotonic() - started < BOUND_S, "the short line already backtracks"

    write(platform, *("ab" * 8_000 for _ in range(20)))  # lines of 16 000 characters
    started = time.monotonic()
    status, body = search(client, admin, CATASTROPHIC)
    assert status == 200, body
    assert body["items"] == []
    assert time.monotonic() - started < BOUND_S


def test_backreferences_and_lookaround_are_refused_with_a_reason(
    client: TestClient, admin: dict[str, str]
) -> None:
    for pattern in (r"(a)\1", r"foo(?=bar)", r"(?<!x)y"):
        status, body = search(client, admin, pattern)
        assert status == 422, (pattern, body)
        assert body["code"] == "invalid_request", body
        message = str(body["message"])
        assert "not a valid regular expression" in message, message
        assert "no backreferences or lookaround" in message, message


def test_an_over_long_pattern_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    status, body = search(client, admin, "a" * 257)
    assert status == 422, body
    assert "256" in str(body["message"]), body


def test_ordinary_patterns_match_as_before_ignoring_case(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    write(
        platform, "request 12 took 5ms", "request 3 took 9ms", "Request 15 TOOK 1ms", "Grüße 中文"
    )
    status, body = search(client, admin, r"request 1\d took \d+ms$")
    assert status == 200, body
    assert [item["text"] for item in body["items"]] == [  # type: ignore[attr-defined]
        "Request 15 TOOK 1ms",
        "request 12 took 5ms",
    ]
    # RE2's \w is ASCII (as in Go and Prometheus); \pL is any letter
    status, body = search(client, admin, r"^grü\pL+ 中.$")
    assert [item["text"] for item in body["items"]] == ["Grüße 中文"]  # type: ignore[attr-defined]


def test_a_nested_repetition_is_no_longer_refused(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    """The old guard's ``(a+)+`` refusal is gone: RE2 runs it in linear time."""
    write(platform, "a" * 10_000 + "!")
    started = time.monotonic()
    status, body = search(client, admin, r"(a+)+$")
    assert status == 200, body
    assert body["items"] == [] and time.monotonic() - started < BOUND_S


def test_a_line_that_is_not_valid_utf8_is_still_searched() -> None:
    """RE2 reads UTF-8: a lone surrogate (a line decoded with ``surrogateescape``, as a live
    fallback line may be) must not turn the search into a 500."""
    matcher = LogFilter(q="disk (full|gone)", regex=True).matcher()
    assert matcher.text_matches("\udcff disk full")
    assert not matcher.text_matches("\udcff disk ok")


def test_a_slow_pattern_over_many_long_lines_stops_at_the_time_budget_with_a_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linear is not free: ``(\\pL*){200}`` is a big RE2 program, about a tenth of a second per
    line of 16 000 characters; over the 50 000 lines a request may scan, one request would occupy
    a worker for more than an hour. The scan stops at ``REGEX_SCAN_SECONDS`` and answers with a
    cursor to go on from."""
    monkeypatch.setattr(logs_module, "REGEX_SCAN_SECONDS", 0.05)
    store = SqliteLogStore(tmp_path / "logs.db", max_lines=10_000, max_lines_per_source=5_000)
    try:
        store.append(
            [
                LogEntry(SYSTEM_SOURCE, at=T0 + dt.timedelta(seconds=i), text="ab" * 8_000)
                for i in range(6)
            ]
        )
        filt = LogFilter(q=r"(\pL*){200}\d", regex=True)
        started = time.monotonic()
        first = store.query(LogSelector.system(), filt)
        assert time.monotonic() - started < BOUND_S
        assert first.lines == [] and first.next_cursor is not None  # stopped before the end
        pages, cursor = 1, first.next_cursor
        while cursor is not None:  # the cursor walks on to the end, finding nothing
            page = store.query(LogSelector.system(), filt, cursor=cursor)
            assert page.lines == []
            pages, cursor = pages + 1, page.next_cursor
        assert 2 <= pages <= 7
    finally:
        store.close()
