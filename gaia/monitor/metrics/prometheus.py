"""A real Prometheus as the ``MetricStore``: queried over its HTTP API, fed by scraping Gaia.

**Reading.** ``query_range`` is Prometheus' range query of the selector ``metric{k="v",...}``
(``/api/v1/query_range``: at each step the last sample within its 5 min lookback, the semantics
``gaia.monitor.metrics.series`` documents). ``latest`` asks two instant queries at once:
``last_over_time(sel[lookback])`` for the value of each series and ``timestamp(sel)`` for the real
time of that sample (``timestamp()`` of ``last_over_time`` would give the evaluation time, not
the sample's, in Prometheus 2.42). For the rare series whose sample ``timestamp(sel)`` cannot see
(older than Prometheus' own 5 min lookback, or behind a staleness marker) a third query reads the
raw samples ``sel[lookback]``. Results are the series' labels without ``__name__``.

**Writing.** Prometheus pulls; it is not written to. ``write`` keeps only the latest sample of
each series, and ``exposition()`` renders them in the Prometheus text format 0.0.4 *with their
timestamps*, so a scrape stores each sample at the time the collector read it, not at the time of
the scrape. Gaia serves it at ``GET /metrics/clusters`` (``gaia.api.routes.metrics_endpoint``);
the scrape interval must not exceed the collector's interval, or samples are skipped. A series
not written for ``expose_seconds`` leaves the exposition (an instance that is gone). The scrape
job must keep Gaia's labels and times and must not add its own target labels to the series,
which ``scrape_config()`` writes down: ``honor_labels``, ``honor_timestamps``, and a metric
relabeling that removes the ``job`` and ``instance`` labels the scrape itself added.

Errors: a Prometheus that does not answer, answers 5xx or refuses the credentials raises
``MetricStoreUnavailable``; a query it refuses as malformed (or too many points) raises
``InvalidRequest``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from gaia.clock import Clock, RealClock
from gaia.domain.errors import InvalidRequest
from gaia.monitor.metrics.series import Matchers, MetricStoreUnavailable, Sample, Series

log = logging.getLogger(__name__)

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Prometheus' own instant-query lookback (``--query.lookback-delta``, 5 min by default).
PROMETHEUS_LOOKBACK = 300.0

# metric -> (type, help), e.g. {"gaia_instance_cpu_cores": ("gauge", "CPU used, in cores")}
HelpCatalogue = Mapping[str, tuple[str, str]]


# ---------------------------------------------------------------------- PromQL


def _promql_string(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def selector(metric: str, matchers: Matchers | None = None) -> str:
    """The PromQL selector ``metric{k="v",...}`` (label values escaped)."""
    if not METRIC_NAME.match(metric):
        raise InvalidRequest(f"'{metric}' is not a valid metric name")
    parts = []
    for name, value in sorted((matchers or {}).items()):
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise InvalidRequest(f"'{name}' is not a valid label name")
        parts.append(f"{name}={_promql_string(value)}")
    return f"{metric}{{{','.join(parts)}}}" if parts else metric


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


# ---------------------------------------------------------------------- exposition


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def series_prefix(metric: str, labels: Mapping[str, str]) -> str | None:
    """``metric{k="v",...}`` as the exposition writes it; None for names Prometheus refuses."""
    if not METRIC_NAME.match(metric):
        return None
    parts = []
    for name, value in sorted(labels.items()):
        if not value:
            continue
        if not LABEL_NAME.match(name) or name.startswith("__"):
            return None
        parts.append(f'{name}="{_label_value(value)}"')
    return f"{metric}{{{','.join(parts)}}}" if parts else metric


def render_exposition(samples: Sequence[Sample], help: HelpCatalogue | None = None) -> bytes:
    """Samples in the Prometheus text format 0.0.4, each with its timestamp in ms.

    Samples are grouped by metric (the format wants one block per metric), with ``# HELP`` and
    ``# TYPE`` lines where ``help`` knows the metric. Samples with names Prometheus would refuse
    are left out (and logged): one bad sample must not make the whole scrape fail.
    """
    by_metric: dict[str, list[tuple[str, float, float]]] = {}
    for sample in samples:
        prefix = series_prefix(sample.metric, sample.labels)
        if prefix is None:
            log.warning("exposition: left out %s%s (invalid name)", sample.metric, sample.labels)
            continue
        by_metric.setdefault(sample.metric, []).append((prefix, sample.value, sample.at))
    return _render(by_metric, help or {})


def _render(
    by_metric: Mapping[str, Sequence[tuple[str, float, float]]], help: HelpCatalogue
) -> bytes:
    lines: list[str] = []
    for metric in sorted(by_metric):
        known = help.get(metric)
        if known is not None:
            kind, text = known
            lines.append(f"# HELP {metric} {_help_text(text)}")
            lines.append(f"# TYPE {metric} {kind}")
        for prefix, value, at in by_metric[metric]:
            lines.append(f"{prefix} {_number(value)} {round(at * 1000)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""


def scrape_config(
    *,
    job: str,
    target: str,
    token: str,
    interval: str = "15s",
    metrics_path: str = "/metrics/clusters",
    scheme: str = "http",
) -> dict[str, Any]:
    """The Prometheus scrape job (``scrape_configs`` entry) for the collected series.

    ``honor_labels`` keeps Gaia's labels (an ``instance`` label of an app instance wins over the
    scrape's); the metric relabeling then empties ``job``/``instance`` where the scrape added
    them (value equal to the job name / the target address), so the stored series carry exactly
    the labels Gaia wrote.
    """
    return {
        "job_name": job,
        "scrape_interval": interval,
        "scheme": scheme,
        "metrics_path": metrics_path,
        "honor_labels": True,
        "honor_timestamps": True,
        "authorization": {"credentials": token},
        "static_configs": [{"targets": [target]}],
        "metric_relabel_configs": [
            {
                "source_labels": ["job"],
                "regex": re.escape(job),
                "target_label": "job",
                "replacement": "",
            },
            {
                "source_labels": ["instance"],
                "regex": re.escape(target),
                "target_label": "instance",
                "replacement": "",
            },
        ],
    }


# ---------------------------------------------------------------------- the store


class PrometheusStore:
    """``MetricStore`` over a Prometheus server at ``url`` (``http://prometheus:9090``)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        bearer_token: str | None = None,
        expose_seconds: float = 900.0,
        max_series: int = 1_000_000,
        help: HelpCatalogue | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.expose_seconds = expose_seconds
        self.max_series = max_series
        self.help: HelpCatalogue = help or {}
        self.clock: Clock = clock or RealClock()
        self._headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # metric -> label key -> (rendered series prefix, value, time)
        self._latest: dict[str, dict[tuple[tuple[str, str], ...], tuple[str, float, float]]] = {}
        self._count = 0
        self.refused_samples = 0
        self._last_refusal_log = float("-inf")

    # ------------------------------------------------------------------ exposition side

    async def write(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            key = tuple(sorted((k, v) for k, v in sample.labels.items() if v))
            series = self._latest.setdefault(sample.metric, {})
            known = series.get(key)
            if known is not None:
                if sample.at >= known[2]:
                    series[key] = (known[0], float(sample.value), float(sample.at))
                continue
            prefix = series_prefix(sample.metric, dict(key))
            if prefix is None:
                log.warning("left out %s%s: invalid name for Prometheus", sample.metric, key)
                continue
            if self._count >= self.max_series:
                self._refuse(sample)
                continue
            series[key] = (prefix, float(sample.value), float(sample.at))
            self._count += 1

    def _refuse(self, sample: Sample) -> None:
        self.refused_samples += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:
            self._last_refusal_log = now
            log.warning(
                "exposition full: %d series (max_series); new series such as %s are refused",
                self._count,
                sample.metric,
            )

    def exposition(self) -> bytes:
        """The latest sample of every series written in the last ``expose_seconds``."""
        oldest = self.clock.now().timestamp() - self.expose_seconds
        by_metric: dict[str, list[tuple[str, float, float]]] = {}
        for metric, series in list(self._latest.items()):
            gone = [key for key, (_, _, at) in series.items() if at < oldest]
            for key in gone:
                del series[key]
            self._count -= len(gone)
            if not series:
                del self._latest[metric]
                continue
            by_metric[metric] = list(series.values())
        return _render(by_metric, self.help)

    def series_count(self) -> int:
        return self._count

    # ------------------------------------------------------------------ query side

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout,
                headers=self._headers,
                transport=self._transport,
            )
        return self._client

    async def _api(self, path: str, params: Mapping[str, str], *, get: bool = False) -> Any:
        try:
            if get:  # the label endpoints take GET only
                response = await self._http().get(path, params=dict(params))
            else:  # POST: a long selector does not meet a URL length limit
                response = await self._http().post(path, data=dict(params))
        except httpx.HTTPError as exc:
            raise MetricStoreUnavailable(
                f"Prometheus at {self.url} did not answer ({type(exc).__name__}: {exc}); "
                "check GAIA_PROMETHEUS_URL and that Prometheus is running"
            ) from exc
        if response.status_code in (401, 403):
            raise MetricStoreUnavailable(
                f"Prometheus at {self.url} refused Gaia's credentials "
                f"({response.status_code}); check GAIA_PROMETHEUS_TOKEN"
            )
        try:
            body = response.json()
        except ValueError:
            raise MetricStoreUnavailable(
                f"Prometheus at {self.url} answered {response.status_code} without JSON "
                f"({response.text[:200]!r}); is GAIA_PROMETHEUS_URL a Prometheus server?"
            ) from None
        if body.get("status") == "success":
            return body["data"]
        error = body.get("error", "unknown error")
        if response.status_code in (400, 422) or body.get("errorType") == "bad_data":
            raise InvalidRequest(f"Prometheus refused the query {params.get('query')!r}: {error}")
        raise MetricStoreUnavailable(
            f"Prometheus at {self.url} failed ({response.status_code}, "
            f"{body.get('errorType', 'error')}): {error}"
        )

    async def _instant(self, query: str, at: float) -> list[dict[str, Any]]:
        data = await self._api("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        return list(data["result"])

    async def latest(
        self, metric: str, matchers: Matchers | None = None, *, at: float, lookback: float = 300.0
    ) -> list[Series]:
        sel = selector(metric, matchers)
        values, stamps = await asyncio.gather(
            self._instant(f"last_over_time({sel}[{_duration(lookback)}])", at),
            self._instant(f"timestamp({sel})", at),
        )
        times = {_key(item["metric"]): float(item["value"][1]) for item in stamps}
        oldest = at - lookback
        out: list[Series] = []
        unseen: set[tuple[tuple[str, str], ...]] = set()
        for item in values:
            key = _key(item["metric"])
            t = times.get(key)
            if t is None or t < oldest:
                unseen.add(key)
                continue
            out.append(Series(metric, dict(key), [(t, float(item["value"][1]))]))
        if unseen:
            # Rare: read the raw samples of the window for the real time of the last one.
            for item in await self._instant(f"{sel}[{_duration(lookback)}]", at):
                key = _key(item["metric"])
                if key in unseen and item["values"]:
                    t, v = item["values"][-1]
                    out.append(Series(metric, dict(key), [(float(t), float(v))]))
        return out

    async def query_range(
        self,
        metric: str,
        matchers: Matchers | None = None,
        *,
        start: float,
        end: float,
        step: float,
    ) -> list[Series]:
        if step <= 0:
            raise InvalidRequest("step must be positive")
        if end < start:
            raise InvalidRequest("end must not be before start")
        data = await self._api(
            "/api/v1/query_range",
            {
                "query": selector(metric, matchers),
                "start": f"{start:.3f}",
                "end": f"{end:.3f}",
                "step": f"{step:.3f}",
            },
        )
        return [
            Series(
                metric,
                dict(_key(item["metric"])),
                [(float(t), float(v)) for t, v in item["values"]],
            )
            for item in data["result"]
        ]

    async def label_values(self, metric: str, label: str) -> list[str]:
        if not LABEL_NAME.match(label):
            raise InvalidRequest(f"'{label}' is not a valid label name")
        data = await self._api(
            f"/api/v1/label/{label}/values", {"match[]": selector(metric)}, get=True
        )
        return sorted(data)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))
