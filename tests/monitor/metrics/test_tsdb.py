"""The embedded metric store (``gaia.monitor.metrics.tsdb``) and the text exposition of samples.

Instant and range queries follow Prometheus 2.x: a point exactly ``lookback`` old still counts,
range steps are whole milliseconds from ``start``. Retention, the series bound and the snapshot
are driven directly (``trim()``, ``snapshot()``) with a manual clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gaia.clock import ManualClock
from gaia.domain.errors import InvalidRequest
from gaia.monitor.metrics.prometheus import render_exposition, selector
from gaia.monitor.metrics.series import MetricStore, Sample, Series
from gaia.monitor.metrics.tsdb import (
    CHUNK_POINTS,
    SNAPSHOT_NAME,
    EmbeddedStore,
    MetricSnapshotLoop,
)

T = TypeVar("T")
T0 = 1_780_000_000.0  # a fixed instant; the clock starts here


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def clock_at(t: float) -> ManualClock:
    return ManualClock(dt.datetime.fromtimestamp(t, dt.UTC))


def store(**kw: object) -> EmbeddedStore:
    kw.setdefault("clock", clock_at(T0 + 10_000))
    return EmbeddedStore(**kw)  # type: ignore[arg-type]


def samples(
    metric: str, labels: dict[str, str], points: Sequence[tuple[float, float]]
) -> list[Sample]:
    return [Sample(metric, labels, v, t) for t, v in points]


def by_instance(series: list[Series]) -> dict[str, list[tuple[float, float]]]:
    return {s.labels["instance"]: s.points for s in series}


def test_the_embedded_store_is_a_metric_store() -> None:
    assert isinstance(store(), MetricStore)


# ---------------------------------------------------------------------- latest


def test_latest_is_the_last_point_at_or_before_at_within_the_lookback() -> None:
    s = store()
    run(s.write(samples("cpu", {"instance": "a"}, [(T0, 1.0), (T0 + 15, 2.0), (T0 + 30, 3.0)])))
    at = T0 + 20
    assert run(s.latest("cpu", at=at)) == [Series("cpu", {"instance": "a"}, [(T0 + 15, 2.0)])]
    # the newest point, with its own time (not the evaluation time)
    assert run(s.latest("cpu", at=T0 + 200))[0].points == [(T0 + 30, 3.0)]
    # a point exactly `lookback` old counts; a millisecond older does not
    assert run(s.latest("cpu", at=T0 + 330))[0].points == [(T0 + 30, 3.0)]
    assert run(s.latest("cpu", at=T0 + 330.001)) == []
    assert run(s.latest("cpu", at=T0 + 60, lookback=10)) == []
    # nothing at or before `at`
    assert run(s.latest("cpu", at=T0 - 1)) == []
    assert run(s.latest("memory", at=T0)) == []


def test_latest_in_the_past_searches_older_chunks() -> None:
    s = store()
    points = [(T0 + 15 * i, float(i)) for i in range(3 * CHUNK_POINTS + 7)]
    run(s.write(samples("cpu", {"instance": "a"}, points)))
    for i in (0, 1, CHUNK_POINTS - 1, CHUNK_POINTS, 2 * CHUNK_POINTS + 3):
        at = T0 + 15 * i + 7  # between two points
        assert run(s.latest("cpu", at=at))[0].points == [(T0 + 15 * i, float(i))]


def test_matchers_select_through_the_index() -> None:
    s = store()
    for app, inst in [("web", "w0"), ("web", "w1"), ("db", "d0")]:
        run(s.write([Sample("cpu", {"app": app, "instance": inst, "zone": "z1"}, 1.0, T0)]))
    run(s.write([Sample("cpu", {"app": "web", "instance": "w2"}, 1.0, T0)]))
    at = T0 + 1
    assert set(by_instance(run(s.latest("cpu", {"app": "web"}, at=at)))) == {"w0", "w1", "w2"}
    both = run(s.latest("cpu", {"app": "web", "zone": "z1"}, at=at))
    assert set(by_instance(both)) == {"w0", "w1"}
    assert run(s.latest("cpu", {"app": "web", "zone": "z9"}, at=at)) == []
    assert run(s.latest("cpu", {"nolabel": "x"}, at=at)) == []
    # an empty value matches the series without the label, as in PromQL
    assert set(by_instance(run(s.latest("cpu", {"zone": ""}, at=at)))) == {"w2"}
    assert set(by_instance(run(s.latest("cpu", {"app": "db", "zone": ""}, at=at)))) == set()


def test_an_empty_label_value_is_the_same_series_as_no_label() -> None:
    s = store()
    run(s.write([Sample("cpu", {"instance": "a", "gpu": ""}, 1.0, T0)]))
    run(s.write([Sample("cpu", {"instance": "a"}, 2.0, T0 + 1)]))
    assert s.series_count() == 1
    assert run(s.latest("cpu", at=T0 + 2)) == [Series("cpu", {"instance": "a"}, [(T0 + 1, 2.0)])]


def test_label_values_list_what_a_label_takes() -> None:
    s = store()
    for app in ("web", "db", "web"):
        run(s.write([Sample("cpu", {"app": app, "instance": f"{app}-0"}, 1.0, T0)]))
    assert run(s.label_values("cpu", "app")) == ["db", "web"]
    assert run(s.label_values("cpu", "nope")) == []
    assert run(s.label_values("memory", "app")) == []


def test_points_come_in_any_order_within_a_write_and_older_ones_later_are_dropped() -> None:
    s = store()
    run(s.write(samples("cpu", {"instance": "a"}, [(T0 + 30, 3.0), (T0, 1.0), (T0 + 15, 2.0)])))
    run(s.write(samples("cpu", {"instance": "a"}, [(T0 + 15, 9.0), (T0 + 30, 9.0)])))
    series = run(s.query_range("cpu", start=T0, end=T0 + 30, step=15))
    assert series[0].points == [(T0, 1.0), (T0 + 15, 2.0), (T0 + 30, 3.0)]
    assert s.stats.out_of_order == 2 and s.point_count() == 3


# ---------------------------------------------------------------------- query_range


def test_query_range_samples_each_step_with_a_300s_lookback() -> None:
    s = store()
    run(s.write(samples("cpu", {"instance": "a"}, [(T0, 1.0), (T0 + 100, 2.0), (T0 + 700, 3.0)])))
    [series] = run(s.query_range("cpu", start=T0 - 50, end=T0 + 1000, step=100))
    assert series.labels == {"instance": "a"}
    assert series.points == [
        # T0 - 50: nothing yet
        (T0 + 50, 1.0),
        (T0 + 150, 2.0),
        (T0 + 250, 2.0),
        (T0 + 350, 2.0),
        # T0 + 400 would be exactly 300 s after T0 + 100: below, the edge itself
        # T0 + 450 and T0 + 550, T0 + 650: more than 300 s after the point at T0 + 100
        (T0 + 750, 3.0),
        (T0 + 850, 3.0),
        (T0 + 950, 3.0),
    ]
    [edge] = run(s.query_range("cpu", start=T0 + 400, end=T0 + 400.5, step=1))
    assert edge.points == [(T0 + 400, 2.0)]  # exactly 300 s old: still counts
    assert run(s.query_range("cpu", start=T0 + 400.001, end=T0 + 400.5, step=1)) == []


def test_query_range_steps_are_whole_milliseconds_from_start_up_to_end() -> None:
    s = store()
    run(s.write(samples("cpu", {"instance": "a"}, [(T0, 1.0)])))
    [series] = run(s.query_range("cpu", start=T0, end=T0 + 1, step=0.3))
    assert [t for t, _ in series.points] == [T0, T0 + 0.3, T0 + 0.6, T0 + 0.9]
    [one] = run(s.query_range("cpu", start=T0 + 5, end=T0 + 5, step=60))
    assert one.points == [(T0 + 5, 1.0)]


def test_query_range_across_chunks_and_with_matchers() -> None:
    s = store()
    n = 2 * CHUNK_POINTS + 10
    for inst in ("a", "b"):
        run(s.write(samples("cpu", {"instance": inst}, [(T0 + 15 * i, i) for i in range(n)])))
    [series] = run(s.query_range("cpu", {"instance": "b"}, start=T0, end=T0 + 15 * n, step=60))
    # every step sees the point at or just before it: the value is its index
    assert series.points == [(T0 + 60 * k, float(4 * k)) for k in range((15 * n) // 60 + 1)]


def test_query_range_refuses_what_prometheus_refuses() -> None:
    s = store()
    run(s.write(samples("cpu", {"instance": "a"}, [(T0, 1.0)])))
    with pytest.raises(InvalidRequest, match="11000"):
        run(s.query_range("cpu", start=T0, end=T0 + 11_000, step=1))
    with pytest.raises(InvalidRequest):
        run(s.query_range("cpu", start=T0, end=T0 - 1, step=1))
    with pytest.raises(InvalidRequest):
        run(s.query_range("cpu", start=T0, end=T0 + 1, step=0))


# ---------------------------------------------------------------------- bounds


def test_retention_drops_old_chunks_and_then_empty_series() -> None:
    clock = clock_at(T0)
    s = EmbeddedStore(retention_seconds=3600, clock=clock)
    n = 3 * CHUNK_POINTS
    run(s.write(samples("cpu", {"instance": "old"}, [(T0 + i, 1.0) for i in range(n)])))
    run(s.write(samples("cpu", {"instance": "new"}, [(T0 + i, 1.0) for i in range(n)])))
    clock.step(3600 + CHUNK_POINTS + 1)  # the first chunk of each series is now past retention
    assert s.trim() == 2 * CHUNK_POINTS
    assert s.point_count() == 2 * (n - CHUNK_POINTS)
    run(s.write([Sample("cpu", {"instance": "new"}, 2.0, T0 + 5000)]))
    clock.step(n)  # only the point at T0 + 5000 is young enough, and it is in an open chunk
    s.trim()
    assert s.series_count() == 1 and s.point_count() == 1
    assert run(s.label_values("cpu", "instance")) == ["new"]
    assert run(s.latest("cpu", {"instance": "old"}, at=T0 + 5000, lookback=1e9)) == []
    # a sample already past retention is not stored
    run(s.write([Sample("cpu", {"instance": "older"}, 1.0, T0)]))
    assert s.stats.too_old == 1 and s.series_count() == 1


def test_max_series_refuses_new_series_with_one_warning_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = store(max_series=2)
    with caplog.at_level(logging.WARNING, logger="gaia.monitor.metrics.tsdb"):
        run(s.write([Sample("cpu", {"instance": str(i)}, 1.0, T0) for i in range(5)]))
        run(s.write([Sample("memory", {"instance": "x"}, 1.0, T0)]))
    assert s.series_count() == 2 and s.stats.refused_samples == 4
    assert len([r for r in caplog.records if "max_series" in r.getMessage()]) == 1
    assert s.metric_names() == ["cpu"]  # no empty metric left behind
    # the series it holds still take points
    run(s.write([Sample("cpu", {"instance": "0"}, 2.0, T0 + 15)]))
    assert run(s.latest("cpu", {"instance": "0"}, at=T0 + 15))[0].points == [(T0 + 15, 2.0)]


# ---------------------------------------------------------------------- snapshot


def _fill(s: EmbeddedStore) -> None:
    n = CHUNK_POINTS + 40
    run(
        s.write(
            samples("cpu", {"instance": "a", "app": "web"}, [(T0 + 15 * i, i) for i in range(n)])
        )
    )
    run(
        s.write(
            samples("cpu", {"instance": "b", "app": 'we"b\\\n'}, [(T0, math.inf), (T0 + 1, -1)])
        )
    )
    run(s.write(samples("gpu_util", {"instance": "é-0"}, [(T0 + 0.125, 0.5), (T0 + 2, math.nan)])))


def test_snapshot_round_trip_across_a_reopen(tmp_path: Path) -> None:
    clock = clock_at(T0 + 10_000)
    s = EmbeddedStore.open(tmp_path / "tsdb", clock=clock)
    _fill(s)
    size = run(s.snapshot())
    path = tmp_path / "tsdb" / SNAPSHOT_NAME
    assert size == path.stat().st_size and path.read_bytes()[:8] == b"GAIATSDB"
    again = EmbeddedStore.open(tmp_path / "tsdb", clock=clock)
    assert (again.series_count(), again.point_count()) == (s.series_count(), s.point_count())
    for metric in ("cpu", "gpu_util"):
        for q in (
            lambda st, m=metric: st.query_range(m, start=T0, end=T0 + 20_000, step=7),
            lambda st, m=metric: st.latest(m, at=T0 + 10_000, lookback=1e9),
        ):
            want, got = run(q(s)), run(q(again))
            key = lambda x: sorted(x.labels.items())  # noqa: E731
            assert repr(sorted(got, key=key)) == repr(sorted(want, key=key))
    assert run(again.label_values("cpu", "app")) == ['we"b\\\n', "web"]
    # the reopened store keeps appending where the snapshot ended
    run(again.write([Sample("cpu", {"instance": "b", "app": 'we"b\\\n'}, 7.0, T0 + 2)]))
    assert run(again.latest("cpu", {"instance": "b"}, at=T0 + 3))[0].points == [(T0 + 2, 7.0)]


def test_close_writes_a_snapshot_and_retention_applies_on_load(tmp_path: Path) -> None:
    clock = clock_at(T0 + 100)
    s = EmbeddedStore.open(tmp_path, clock=clock, retention_seconds=60)
    run(s.write(samples("cpu", {"instance": "a"}, [(T0 + 40, 1.0), (T0 + 90, 2.0)])))
    run(s.close())
    clock.step(30)  # now T0 + 130: the point at T0 + 40 is past retention
    again = EmbeddedStore.open(tmp_path, clock=clock, retention_seconds=60)
    assert again.point_count() == 1


def test_the_snapshot_loop_trims_and_writes(tmp_path: Path) -> None:
    s = EmbeddedStore.open(tmp_path, clock=clock_at(T0 + 1))
    run(s.write([Sample("cpu", {"instance": "a"}, 1.0, T0)]))
    run(MetricSnapshotLoop(store=s, interval=60).start(loops=1))
    assert (tmp_path / SNAPSHOT_NAME).exists() and s.stats.snapshots_written == 1


@pytest.mark.parametrize(
    "damage",
    ["flip-a-byte-in-the-last-block", "truncate", "garbage", "empty"],
)
def test_a_damaged_snapshot_is_moved_aside_and_the_store_opens(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = clock_at(T0 + 10_000)
    s = EmbeddedStore.open(tmp_path, clock=clock)
    _fill(s)
    run(s.snapshot())
    path = tmp_path / SNAPSHOT_NAME
    data = bytearray(path.read_bytes())
    if damage == "flip-a-byte-in-the-last-block":
        data[-20] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) - 5]
    elif damage == "garbage":
        data = bytearray(b"\x80\x04\x95not a snapshot at all" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="gaia.monitor.metrics.tsdb"):
        again = EmbeddedStore.open(tmp_path, clock=clock)
    assert "damaged" in caplog.text
    assert not path.exists()
    assert len(list(tmp_path.glob(f"{SNAPSHOT_NAME}.corrupt-*"))) == 1
    if damage == "flip-a-byte-in-the-last-block":
        assert again.series_count() == 2  # the blocks before the damage are kept
    elif damage in ("garbage", "empty"):
        assert again.series_count() == 0
    # and it works, and its next snapshot is a good one
    run(again.write([Sample("cpu", {"instance": "z"}, 1.0, T0 + 9_000)]))
    run(again.snapshot())
    assert EmbeddedStore.open(tmp_path, clock=clock).series_count() == again.series_count()


def test_a_snapshot_cancelled_midway_is_not_overtaken_by_an_older_one(tmp_path: Path) -> None:
    async def scenario() -> int:
        s = EmbeddedStore.open(tmp_path, clock=clock_at(T0 + 10))
        await s.write([Sample("cpu", {"instance": str(i)}, 1.0, T0) for i in range(2000)])
        first = asyncio.ensure_future(s.snapshot())
        await asyncio.sleep(0)
        first.cancel()
        await s.write([Sample("cpu", {"instance": "late"}, 1.0, T0 + 1)])
        await s.close()
        return s.series_count()

    count = run(scenario())
    assert EmbeddedStore.open(tmp_path, clock=clock_at(T0 + 10)).series_count() == count == 2001


# ---------------------------------------------------------------------- text formats


def test_exposition_escapes_label_values_and_keeps_timestamps() -> None:
    body = render_exposition(
        [
            Sample("gaia_cpu", {"app": 'a"b\\c\nd', "empty": ""}, 1.5, T0 + 0.25),
            Sample("gaia_cpu", {"app": "plain"}, math.nan, T0),
            Sample("gaia_up", {}, math.inf, T0),
            Sample("bad-name", {"x": "y"}, 1.0, T0),
            Sample("gaia_cpu", {"bad-label": "y"}, 1.0, T0),
        ],
        help={"gaia_cpu": ("gauge", "CPU in cores\nper instance \\ app")},
    ).decode()
    assert body.splitlines() == [
        "# HELP gaia_cpu CPU in cores\\nper instance \\\\ app",
        "# TYPE gaia_cpu gauge",
        f'gaia_cpu{{app="a\\"b\\\\c\\nd"}} 1.5 {int(T0 * 1000) + 250}',
        f'gaia_cpu{{app="plain"}} NaN {int(T0 * 1000)}',
        f"gaia_up +Inf {int(T0 * 1000)}",
    ]


def test_promql_selectors_escape_label_values() -> None:
    assert selector("up") == "up"
    assert selector("cpu", {"b": "x", "a": 'q"\\\n'}) == 'cpu{a="q\\"\\\\\\n",b="x"}'
    with pytest.raises(InvalidRequest):
        selector("cpu", {"__name__": "x"})
    with pytest.raises(InvalidRequest):
        selector("cpu-total")
