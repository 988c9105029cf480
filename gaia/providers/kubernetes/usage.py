"""Resource usage from the kubelet's ``/metrics/resource`` endpoint (Prometheus text format).

The provider reads each node's endpoint through the API server's node proxy
(``/api/v1/nodes/{node}/proxy/metrics/resource``): no metrics-server is needed, and the kubelet
computes these from the cgroups itself (cAdvisor), on cgroup v1 and v2. The series used:

- ``node_cpu_usage_seconds_total``, ``node_memory_working_set_bytes``;
- ``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes``,
  ``container_start_time_seconds`` with labels ``namespace``, ``pod``, ``container``.

CPU is a counter; ``CpuRates`` turns successive readings into millicores: the increase since the
previous reading of the same target, or, for the first reading (or after the counter went
back, i.e. a new container), the average over the container's life.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>.*)\})?"
    r"\s+(?P<value>\S+)"
    r"(?:\s+(?P<ts>-?\d+))?\s*$"
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


def parse_text(text: str) -> Iterator[Series]:
    """Samples of a Prometheus text exposition; comments and malformed lines are skipped."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = _labels(match["labels"] or "")
        if labels is None:
            continue
        ts = match["ts"]
        yield Series(match["name"], labels, value, int(ts) if ts else None)


def _labels(raw: str) -> dict[str, str] | None:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(raw):
        match = _LABEL.match(raw, pos)
        if match is None:
            return None if raw[pos:].strip() else labels
        value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], match.group(2))
        labels[match.group(1)] = value
        pos = match.end()
    return labels


@dataclass(slots=True)
class ContainerUsage:
    cpu_seconds: float = math.nan
    memory_bytes: float = math.nan
    started_s: float = math.nan
    at_s: float = math.nan


@dataclass(slots=True)
class NodeUsage:
    cpu_seconds: float = math.nan
    memory_bytes: float = math.nan
    at_s: float = math.nan
    # (namespace, pod, container) -> usage
    containers: dict[tuple[str, str, str], ContainerUsage] = field(default_factory=dict)


def node_usage(text: str, *, now_s: float) -> NodeUsage:
    """One node's reading; a series without a timestamp counts as read at ``now_s``."""
    usage = NodeUsage()
    for series in parse_text(text):
        at = series.timestamp_ms / 1000 if series.timestamp_ms is not None else now_s
        if series.name == "node_cpu_usage_seconds_total":
            usage.cpu_seconds, usage.at_s = series.value, at
        elif series.name == "node_memory_working_set_bytes":
            usage.memory_bytes = series.value
            if math.isnan(usage.at_s):
                usage.at_s = at
        elif series.name.startswith("container_"):
            key = (
                series.labels.get("namespace", ""),
                series.labels.get("pod", ""),
                series.labels.get("container", ""),
            )
            if not all(key):
                continue
            container = usage.containers.setdefault(key, ContainerUsage())
            if series.name == "container_cpu_usage_seconds_total":
                container.cpu_seconds, container.at_s = series.value, at
            elif series.name == "container_memory_working_set_bytes":
                container.memory_bytes = series.value
                if math.isnan(container.at_s):
                    container.at_s = at
            elif series.name == "container_start_time_seconds":
                container.started_s = series.value
    return usage


class CpuRates:
    """Millicores from CPU-seconds counters, per target (a node, or a container)."""

    def __init__(self, keep: int = 100_000) -> None:
        # key -> (counter, read at, the rate it gave)
        self._seen: dict[tuple[str, ...], tuple[float, float, float]] = {}
        self._keep = keep

    def millicores(
        self, key: tuple[str, ...], seconds: float, at_s: float, *, since_s: float
    ) -> float:
        """The rate at ``at_s``; ``since_s`` is when the counter started (container start,
        node boot) for a first reading."""
        if math.isnan(seconds) or math.isnan(at_s):
            return 0.0
        previous = self._seen.get(key)
        rate: float | None = None
        if previous is not None:
            last_seconds, last_at, last_rate = previous
            if at_s == last_at and seconds == last_seconds:
                return last_rate  # the same reading again (the kubelet caches a few seconds)
            if at_s > last_at and seconds >= last_seconds:
                rate = 1000 * (seconds - last_seconds) / (at_s - last_at)
        if rate is None:
            lifetime = at_s - since_s if not math.isnan(since_s) else 0.0
            rate = 1000 * seconds / lifetime if lifetime > 0 else 0.0
        if previous is None and len(self._seen) >= self._keep:
            self._seen.clear()
        self._seen[key] = (seconds, at_s, rate)
        return rate
