"""An app's live views: monitoring charts, logs, and the web terminal (server-rendered HTML and
the terminal's WebSocket over TestClient).

``charts`` is tested as pure functions. The pages are read as each role after logging in
through the console's form; the app runs on the sim cluster driven by ``AppsHarness`` on the
manual clock, and one metric-collector pass (or a few, a clock step apart) fills the series.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gaia.console.charts import (
    Series,
    format_value,
    line_chart,
    mean_series,
    nice_axis,
    nice_ceiling,
)
from gaia.monitor.logs.collector import LogCollector
from gaia.platform import Platform
from tests.conftest import World
from tests.console.forms import log_in
from tests.support.apps_harness import BIZ, AppsHarness, template

URL = "/console/b/alpha/apps/web"
WS = "/console/ws/b/alpha/apps/web/instances/{}/exec"


def english(text: str, /, **values: Any) -> str:
    return text.format(**values) if values else text


def socket(client: TestClient, token: str, instance: int = 0, *, origin: str = "http://testserver"):  # type: ignore[no-untyped-def]
    headers = {"cookie": f"gaia_session={token}"}
    if origin:
        headers["origin"] = origin
    return client.websocket_connect(WS.format(instance), headers=headers)


# ---------------------------------------------------------------- charts, pure


def test_values_are_formatted_in_their_units() -> None:
    assert format_value(42.25, "percent") == "42%"
    assert format_value(4.25, "percent") == "4.2%"
    assert format_value(1536 * 1024 * 1024, "bytes") == "1.5 GiB"
    assert format_value(2048, "bytes/s") == "2.0 KiB/s"
    assert format_value(None, "bytes") == "-"
    assert nice_ceiling(37, "percent") == 100
    assert nice_ceiling(130, "percent") == 150
    assert nice_ceiling(3000, "bytes") == 3072  # 3 KiB: the next step of 1 KiB
    assert nice_ceiling(0, "bytes") == 1


def test_axes_fit_the_data_in_the_unit_people_read() -> None:
    """The report of issue 20: 116-212 GiB drawn on a 0-10 GiB axis, 49.6 MiB/s on 10 MiB/s."""
    gib, mib = 1024**3, 1024**2
    assert nice_axis(212 * gib, "bytes") == (300 * gib, 100 * gib)
    assert nice_axis(116 * gib, "bytes") == (150 * gib, 50 * gib)
    assert nice_axis(49.6 * mib, "bytes/s") == (60 * mib, 20 * mib)
    for value in (0.3, 7, 99, 1023, 5000, 3.3 * gib, 900 * gib, 5 * 1024 * gib):
        top, step = nice_axis(value, "bytes")
        assert value <= top <= 2.5 * value and 2 <= round(top / step) <= 4, (value, top, step)
    start = 1_700_000_000.0
    big = Series("memory", [(start + 60 * i, (116 + i) * gib) for i in range(97)])
    html = str(
        line_chart(
            title="Memory", series=[big], unit="bytes", start=start, end=start + 6000,
            _=lambda s, **kw: s.format(**kw), chart_id="m",
        )
    )  # fmt: skip
    assert ">300 GiB</text>" in html and ">10 GiB</text>" not in html


def test_a_chart_has_a_title_axes_one_line_per_series_a_legend_and_a_table() -> None:
    start, end = 1_700_000_000.0, 1_700_003_600.0
    rx = Series("received <in>", [(start + 60 * i, 1024.0 * i) for i in range(60)])
    tx = Series("sent", [(start + 60 * i, 512.0) for i in range(60)])
    html = str(
        line_chart(
            title="Network",
            series=[rx, tx],
            unit="bytes/s",
            start=start,
            end=end,
            _=english,
            chart_id="net",
        )
    )
    assert '<title id="net-title">Network</title>' in html
    assert 'aria-labelledby="net-title net-desc"' in html
    assert html.count("<polyline") == 2
    assert 'class="legend"' in html and "received &lt;in&gt;" in html  # labels are escaped
    assert "<details><summary>Values of Network</summary>" in html
    assert "59.0 KiB/s" in html  # the latest received value, in the table and the desc
    assert "22:13" in html and "23:13" in html  # UTC time labels at both ends
    assert "KiB/s</text>" in html  # y axis ticks carry the unit


def test_an_empty_chart_says_there_is_no_data() -> None:
    html = str(
        line_chart(
            title="GPU", series=[], unit="percent", start=0, end=900, _=english, chart_id="g"
        )
    )
    assert "No data in this range" in html and "<polyline" not in html
    assert "100%</text>" in html  # percent axes end at 100


def test_a_single_sample_is_drawn_as_a_point() -> None:
    html = str(
        line_chart(
            title="CPU",
            series=[Series("web-0", [(450, 42.0)])],
            unit="percent",
            start=0,
            end=900,
            _=english,
            chart_id="c",
        )
    )
    assert "<circle" in html and "<polyline" not in html
    assert "No data in this range" not in html


def test_the_mean_of_series_is_taken_per_time() -> None:
    a = Series("a", [(0, 10.0), (60, 20.0)])
    b = Series("b", [(0, 30.0)])
    assert list(mean_series("m", [a, b]).points) == [(0, 20.0), (60, 20.0)]


# ---------------------------------------------------------------- the app under test


@pytest.fixture
def web(world: World, platform: Platform) -> AppsHarness:
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    body = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "registry.local/web:v1", cpu=0.1, memory=64)],
        "replicas": 13,
    }
    h.post(f"{BIZ}/apps", body, status=201)
    h.settle(h.ready("web", 13))
    collector = platform.metric_collector()
    for _ in range(3):
        h.tick(30)
        asyncio.run(collector.run_once())
    return h


# ---------------------------------------------------------------- monitoring


def test_monitoring_draws_the_app_and_a_page_of_instances(web: AppsHarness, world: World) -> None:
    client = world.client
    log_in(client, "viewer")
    r = client.get(f"{URL}/monitoring", params={"range": "15m"})
    assert r.status_code == 200, r.text
    html = r.text
    assert 'aria-current="page">Monitoring' in html
    for chart in ("app-cpu", "app-memory", "app-network"):
        assert f'id="{chart}"' in html
    assert html.count('<figure class="chart"') == 3 + 12  # the app's, and 12 instances a page
    assert 'id="inst-0-cpu"' in html and 'id="inst-11-cpu"' in html
    assert 'id="inst-12-cpu"' not in html
    assert "<polyline" in html and "No data in this range" not in html.split("app-network")[0]
    assert "12 of 13 instances shown" in html
    # the next page is the API's cursor; the link keeps the options
    [nxt] = re.findall(r'href="([^"]*)" rel="next"', html)
    nxt = nxt.replace("&amp;", "&")
    assert "range=15m" in nxt and "metric=cpu" in nxt and "cursor=" in nxt

    second = client.get(nxt.replace("metric=cpu", "metric=network"))
    assert 'id="inst-12-network"' in second.text and 'id="inst-0-network"' not in second.text
    assert "received" in second.text and "sent" in second.text
    assert 'rel="next"' not in second.text and 'rel="prev"' in second.text


def test_monitoring_of_another_business_answers_404(web: AppsHarness, world: World) -> None:
    client = world.client
    log_in(client, "outsider")
    r = client.get(f"{URL}/monitoring")
    assert r.status_code == 404 and "not found" in r.text
    assert "Traceback" not in r.text


def test_monitoring_speaks_chinese(web: AppsHarness, world: World) -> None:
    client = world.client
    r = client.patch(
        "/api/v1/users/viewer", json={"language": "zh-CN"}, headers=world.as_("viewer")
    )
    assert r.status_code == 200, r.text
    log_in(client, "viewer")
    html = client.get(f"{URL}/monitoring").text
    assert "内存使用" in html and "时间范围" in html


# ---------------------------------------------------------------- logs


def test_logs_show_lines_newest_first_filtered_and_paged(
    web: AppsHarness, world: World, platform: Platform
) -> None:
    asyncio.run(
        LogCollector(
            db=platform.db, providers=platform.providers, store=platform.log_store
        ).run_once()
    )
    client = world.client
    log_in(client, "viewer")
    r = client.get(f"{URL}/logs")
    assert r.status_code == 200, r.text
    html = r.text
    assert 'aria-current="page">Logs' in html
    assert "web-0" in html and 'data-log-follow="/api/v1/businesses/alpha/apps/web/logs?' in html
    assert "follow=true" in html and "after=" in html
    assert 'aria-live="polite"' in html
    older = re.search(r'href="(\?[^"]*cursor=[^"]+)" rel="next"', html)
    assert older, "100 lines a page: there are older ones"
    page2 = client.get(f"{URL}/logs" + older.group(1).replace("&amp;", "&"))
    assert page2.status_code == 200 and 'rel="first"' in page2.text

    one = client.get(f"{URL}/logs", params={"instance": 3}).text
    assert '<td class="mono">web-3</td>' in one and '<td class="mono">web-4</td>' not in one
    none = client.get(f"{URL}/logs", params={"q": "no-such-text-anywhere"}).text
    assert "No lines match." in none


def test_the_log_follow_stream_accepts_the_session_cookie(web: AppsHarness, world: World) -> None:
    client = world.client
    token = log_in(client, "viewer")
    # no Accept header: the API refuses follow with 406, which shows the cookie authenticated it
    r = client.get(
        "/api/v1/businesses/alpha/apps/web/logs",
        params={"follow": "true"},
        headers={"cookie": f"gaia_session={token}"},
    )
    assert r.status_code == 406, r.text


# ---------------------------------------------------------------- terminal


def records(world: World, action: str) -> list[dict[str, Any]]:
    r = world.client.get("/api/v1/records", params={"action": action}, headers=world.admin)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_the_terminal_page_lists_instances_and_points_at_the_socket(
    web: AppsHarness, world: World
) -> None:
    client = world.client
    log_in(client, "dev")
    html = client.get(f"{URL}/terminal").text
    assert 'aria-current="page">Terminal' in html and "Choose an instance" in html
    html = client.get(f"{URL}/terminal", params={"instance": 2}).text
    assert f'data-terminal="{WS.format(2)}"' in html
    assert '<option value="2" selected>web-2' in html
    assert "/console/static/terminal.js" in html


def test_a_large_app_gets_number_boxes_and_the_terminal_reads_its_one_instance(
    web: AppsHarness, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pickers list one page of instances; past it (10,000 instances) they are a box for
    the number, and the terminal names the instance it opens on from that one instance."""
    import gaia.console.pages.live as live

    monkeypatch.setattr(live, "PICKER_SIZE", 5)  # 13 instances stand in for 10,000
    client = world.client
    log_in(client, "dev")
    logs = client.get(f"{URL}/logs").text
    assert '<input id="l-instance" name="instance"' in logs and '<option value="4"' not in logs
    html = client.get(f"{URL}/terminal", params={"instance": 11}).text
    assert '<input id="t-instance" name="instance" value="11"' in html
    assert 'aria-label="Shell in web-11"' in html
    assert f'data-terminal="{WS.format(11)}"' in html
    monkeypatch.setattr(live, "PICKER_SIZE", 500)
    small = client.get(f"{URL}/logs").text
    assert '<select id="l-instance" name="instance">' in small and '<option value="12">' in small


def test_a_developer_runs_commands_and_each_is_recorded(web: AppsHarness, world: World) -> None:
    client = world.client
    token = log_in(client, "dev")
    with socket(client, token, 1) as ws:
        ready = ws.receive_json()
        assert ready == {"type": "ready", "instance": "web-1", "cluster": "sim-1"}
        ws.send_json({"type": "run", "line": "hostname && echo password=hunter2"})
        out = ws.receive_json()
        assert out["type"] == "output" and out["exit_code"] == 0
        assert "web-1" in out["stdout"]
        ws.send_json({"type": "run", "line": "nosuch"})
        failed = ws.receive_json()
        assert failed["exit_code"] == 127 and "not found" in failed["stderr"]
    execs = records(world, "app.instance.exec")
    summaries = [r["summary"] for r in execs]
    assert any(
        s.startswith("$ hostname && echo password=") and s.endswith("exit 0") for s in summaries
    )
    assert not any("hunter2" in s for s in summaries)  # secrets never reach a record
    assert any("nosuch" in s and "exit 127" in s for s in summaries)
    assert {r["actor"] for r in execs} == {"dev"} and {r["business"] for r in execs} == {"alpha"}
    opened = records(world, "app.instance.terminal.open")
    closed = records(world, "app.instance.terminal.close")
    assert opened[0]["result"] == "success" and "web-1" in opened[0]["summary"]
    assert "after 2 commands" in closed[0]["summary"]
    # a member of alpha sees these records too (they carry the business)
    mine = world.client.get(
        "/api/v1/records", params={"action": "app.instance.exec"}, headers=world.as_("viewer")
    ).json()["items"]
    assert len(mine) == 2


def test_a_viewer_is_refused_with_a_message_and_the_refusal_is_recorded(
    web: AppsHarness, world: World
) -> None:
    client = world.client
    token = log_in(client, "viewer")
    with socket(client, token, 0) as ws:
        refusal = ws.receive_json()
        assert refusal["type"] == "error" and refusal["fatal"] is True
        assert "viewer" in refusal["message"]
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    [row] = records(world, "app.instance.terminal.open")
    assert row["result"] == "failure" and row["status_code"] == 403 and row["actor"] == "viewer"
    assert records(world, "app.instance.exec") == []


def test_a_missing_instance_is_refused(web: AppsHarness, world: World) -> None:
    client = world.client
    token = log_in(client, "dev")
    with socket(client, token, 99) as ws:
        refusal = ws.receive_json()
        assert refusal["type"] == "error" and "not found" in refusal["message"]


def test_a_session_ended_elsewhere_opens_no_terminal_from_the_next_socket_on(
    web: AppsHarness, world: World, platform: Platform
) -> None:
    """The socket resolves the session through the platform's principal cache, which a logout
    clears on this replica at once: no stale principal opens a shell."""
    client = world.client
    token = log_in(client, "dev")
    with socket(client, token, 1) as ws:
        assert ws.receive_json()["type"] == "ready"
    assert len(platform.principals) >= 1
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/auth/logout", headers=bearer).status_code == 204
    with pytest.raises(WebSocketDisconnect), socket(client, token, 1) as ws:
        ws.receive_json()


@pytest.mark.parametrize(
    ("origin", "cookie"),
    [("https://evil.example", True), ("", True), ("http://testserver", False)],
    ids=["another-site", "no-origin", "no-session"],
)
def test_a_socket_from_another_origin_or_without_a_session_is_refused(
    web: AppsHarness, world: World, origin: str, cookie: bool
) -> None:
    client = world.client
    token = log_in(client, "dev") if cookie else "not-a-session"
    if not cookie:
        client.cookies.clear()
    with pytest.raises(WebSocketDisconnect), socket(client, token, 0, origin=origin) as ws:
        ws.receive_json()
    assert records(world, "app.instance.exec") == []


def test_an_instance_is_one_series_across_restarts_and_a_new_app_gets_a_short_window() -> None:
    from gaia.console.pages.live import _named, fitting_range

    rows = [
        {"labels": {"instance": "ocr-0", "version": "v7"}, "points": [[1, 10.0], [2, 11.0]]},
        {"labels": {"instance": "ocr-0", "version": "v8"}, "points": [[3, 12.0]]},
        {"labels": {"instance": "ocr-1", "version": "v7"}, "points": [[1, 5.0]]},
    ]
    merged = _named(rows, "CPU")
    assert [(s.label, list(s.points)) for s in merged] == [
        ("CPU ocr-0", [(1.0, 10.0), (2.0, 11.0), (3.0, 12.0)]),
        ("CPU ocr-1", [(1.0, 5.0)]),
    ]
    one = _named(rows[:2], "CPU")  # one instance under two label sets: one line, no suffix
    assert [s.label for s in one] == ["CPU"]
    assert fitting_range(300) == "15m"
    assert fitting_range(2000) == "1h"
    assert fitting_range(10 * 86_400) == "24h"


def test_the_instances_table_has_age_live_cpu_and_memory_and_links_nodes(
    web: AppsHarness, world: World
) -> None:
    """Issue 20: instance age and live CPU/memory columns; node names link to their pages."""
    log_in(world.client, "viewer")
    html = world.client.get(f"{URL}/instances", params={"size": 20}).text
    row = re.search(r'<tr id="instance-0">.*?</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
    age, cpu, memory = cells[0], cells[1], cells[2]
    assert re.fullmatch(r"\d+m|\d+s", age), cells  # the clock was stepped 90 s since creation
    assert re.fullmatch(r"\d+(\.\d)?%", cpu), cells  # collected by the metric collector
    assert re.fullmatch(r"[\d.]+ (B|KiB|MiB|GiB)", memory), cells
    assert re.search(r'<a href="/console/clusters/sim-1/nodes/[^"]+">', row.group(0))
