"""Pure parts of the kubernetes provider's exec stream and resource-usage reading."""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlsplit

import pytest

from gaia.domain.errors import InvalidRequest
from gaia.providers.kubernetes import streams, usage

# what a v1.37 kubelet serves on /metrics/resource (trimmed, one pod)
KUBELET_TEXT = """\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="main",namespace="ns-1",pod="web-0"} 0.25 1764200000000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="main",namespace="ns-1",pod="web-0"} 3.3554432e+06 \
1764200000000
container_start_time_seconds{container="main",namespace="ns-1",pod="web-0"} 1.76419999e+09 \
1764199990000
node_cpu_usage_seconds_total 1234.5 1764200000100
node_memory_working_set_bytes 5.24288e+08 1764200000100
pod_cpu_usage_seconds_total{namespace="ns-1",pod="web-0"} 0.3 1764200000000
resource_scrape_error 0
"""


def test_exec_url_carries_each_argument_and_upgrades_the_scheme() -> None:
    url = streams.exec_url("https://10.0.0.1:6443/", "ns", "web-0", "main", ["sh", "-c", "a b&c"])
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("wss", "10.0.0.1:6443")
    assert parts.path == "/api/v1/namespaces/ns/pods/web-0/exec"
    query = parse_qs(parts.query)
    assert query["command"] == ["sh", "-c", "a b&c"]
    assert query["container"] == ["main"] and query["stdout"] == ["true"]
    assert streams.exec_url("http://h:8080", "n", "p", "c", ["x"]).startswith("ws://h:8080/")
    with pytest.raises(InvalidRequest):
        streams.exec_url("https://h", "n", "p", "c", [])
    with pytest.raises(InvalidRequest):
        streams.exec_url("https://h", "n", "p", "c", ["a\x00b"])


def test_exit_codes_from_the_error_channel() -> None:
    assert streams.exit_code_of({"status": "Success"}) == (0, "")
    failure = {
        "status": "Failure",
        "message": "command terminated with non-zero exit code: exit code 3",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    assert streams.exit_code_of(failure)[0] == 3
    missing = {
        "status": "Failure",
        "message": 'exec: "nope": executable file not found in $PATH',
    }
    assert streams.exit_code_of(missing)[0] == streams.NOT_FOUND
    assert streams.exit_code_of({"status": "Failure", "message": "boom"})[0] == (
        streams.COULD_NOT_RUN
    )


def test_prometheus_text_is_parsed_with_labels_and_timestamps() -> None:
    series = list(usage.parse_text(KUBELET_TEXT + 'odd{a="x\\"y\\\\z",b="n\\n"} 1\nbroken{ 2\n'))
    names = [s.name for s in series]
    assert names.count("container_cpu_usage_seconds_total") == 1
    assert "broken" not in names
    odd = next(s for s in series if s.name == "odd")
    assert odd.labels == {"a": 'x"y\\z', "b": "n\n"} and odd.timestamp_ms is None
    first = series[0]
    assert first.labels == {"container": "main", "namespace": "ns-1", "pod": "web-0"}
    assert (first.value, first.timestamp_ms) == (0.25, 1764200000000)


def test_node_usage_groups_containers_and_rates_follow_the_counter() -> None:
    reading = usage.node_usage(KUBELET_TEXT, now_s=0)
    assert reading.cpu_seconds == 1234.5 and reading.memory_bytes == 524288000
    assert reading.at_s == pytest.approx(1764200000.1)
    web = reading.containers[("ns-1", "web-0", "main")]
    assert web.memory_bytes == pytest.approx(3355443.2)
    assert web.started_s == pytest.approx(1764199990)

    rates = usage.CpuRates()
    # first reading: the average over the container's life (0.25 s over 10 s = 25 millicores)
    first = rates.millicores(("pod", "web-0"), 0.25, 1764200000.0, since_s=1764199990.0)
    assert first == pytest.approx(25.0)
    # the same reading again keeps the rate; a later one gives the increase
    assert rates.millicores(("pod", "web-0"), 0.25, 1764200000.0, since_s=0) == first
    later = rates.millicores(("pod", "web-0"), 1.25, 1764200002.0, since_s=1764199990.0)
    assert later == pytest.approx(500.0)
    # a counter that went back is a new container: the lifetime average again
    reset = rates.millicores(("pod", "web-0"), 0.1, 1764200004.0, since_s=1764200003.0)
    assert reset == pytest.approx(100.0)
    # no start time and no history: no rate yet
    assert rates.millicores(("node", "n"), 5.0, 100.0, since_s=math.nan) == 0.0
    assert rates.millicores(("node", "n"), math.nan, 100.0, since_s=0) == 0.0
