"""The control plane's health from kube-apiserver's own ``/metrics`` (Prometheus text format).

The API server reports on itself and on the etcd it stores everything in; one ``GET /metrics``
(a couple of MiB, through the provider's HTTP client) and ``GET /readyz/etcd`` give every figure
the platform's catalogue lists under ``control-plane`` (``gaia.monitor.metrics.catalogue``). What
is read, as Kubernetes 1.37 names it (older names are accepted where they changed):

- ``apiserver_resource_objects{group,resource}`` (``apiserver_storage_objects`` before 1.34):
  objects stored per resource -> ``gaia_etcd_objects{resource}``, ``resource[.group]``; a value
  of -1 (the count could not be read) is left out;
- ``apiserver_storage_size_bytes`` (``apiserver_storage_db_total_size_in_bytes``,
  ``etcd_db_total_size_in_bytes`` before): the etcd database file -> ``gaia_etcd_db_size_bytes``;
- ``etcd_request_duration_seconds`` (sum, count) -> ``gaia_etcd_requests_total`` and
  ``gaia_etcd_request_latency_seconds``; ``etcd_request_errors_total``;
- ``apiserver_request_total{code}`` -> ``gaia_apiserver_requests_total`` and, codes 5xx,
  ``gaia_apiserver_errors_total``; ``apiserver_request_duration_seconds`` (sum, count; watches
  and connections, which last as long as the client wants, are left out) ->
  ``gaia_apiserver_request_latency_seconds``;
- ``apiserver_current_inflight_requests{request_kind}``, ``apiserver_longrunning_requests``
  (verb WATCH), ``process_resident_memory_bytes``, ``process_cpu_seconds_total``.

The histograms are cumulative since the server started, so a mean over them would barely move
when etcd turns slow after a week. ``ApiServerMetrics`` keeps the previous reading and reports
the mean over the requests *between* two readings (the first reading: since the start), as
``usage.CpuRates`` does for CPU.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from gaia.providers.kubernetes.usage import Series, parse_text
from gaia.providers.port import ControlPlaneSample

_OBJECTS = ("apiserver_resource_objects", "apiserver_storage_objects")
_DB_SIZE = (
    "apiserver_storage_size_bytes",
    "apiserver_storage_db_total_size_in_bytes",
    "etcd_db_total_size_in_bytes",
)
_LONG_RUNNING_VERBS = frozenset({"WATCH", "CONNECT"})
_WANTED = (
    *_OBJECTS,
    *_DB_SIZE,
    "etcd_request_duration_seconds_sum",
    "etcd_request_duration_seconds_count",
    "etcd_request_errors_total",
    "apiserver_request_total",
    "apiserver_request_duration_seconds_sum",
    "apiserver_request_duration_seconds_count",
    "apiserver_current_inflight_requests",
    "apiserver_longrunning_requests",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
)


def wanted_series(text: str) -> Iterable[Series]:
    """The series used here; the other few thousand lines are skipped before parsing."""
    lines = [line for line in text.splitlines() if line.startswith(_WANTED)]
    return parse_text("\n".join(lines))


class ApiServerMetrics:
    """Figures from successive ``/metrics`` readings of one API server (see the module)."""

    def __init__(self) -> None:
        # what -> (sum or counter, count or reading time) at the previous reading
        self._previous: dict[str, tuple[float, float]] = {}

    def samples(self, text: str, *, now_s: float, etcd_ready: bool) -> list[ControlPlaneSample]:
        totals: dict[str, float] = defaultdict(float)
        objects: dict[str, dict[str, float]] = {name: {} for name in _OBJECTS}
        db_size: dict[str, float] = {}
        inflight: dict[str, float] = {}
        for series in wanted_series(text):
            name, labels, value = series.name, series.labels, series.value
            if name in objects:
                resource = labels.get("resource", "")
                group = labels.get("group", "")
                if resource and value >= 0:
                    key = f"{resource}.{group}" if group else resource
                    objects[name][key] = objects[name].get(key, 0.0) + value
            elif name in _DB_SIZE:
                db_size[name] = db_size.get(name, 0.0) + value
            elif name == "apiserver_request_total":
                totals["requests"] += value
                if labels.get("code", "").startswith("5"):
                    totals["errors"] += value
            elif name.startswith("apiserver_request_duration_seconds_"):
                if labels.get("verb", "") not in _LONG_RUNNING_VERBS:
                    totals[name] += value
            elif name == "apiserver_current_inflight_requests":
                kind = labels.get("request_kind", "")
                if kind:
                    inflight[kind] = value
            elif name == "apiserver_longrunning_requests":
                if labels.get("verb") == "WATCH":
                    totals["watches"] += value
            else:
                totals[name] += value

        def sample(name: str, value: float, **labels: str) -> ControlPlaneSample:
            return ControlPlaneSample(name=name, labels=labels, value=float(value))

        out = [sample("gaia_etcd_up", 1.0 if etcd_ready else 0.0)]
        found = next((objects[name] for name in _OBJECTS if objects[name]), {})
        out.extend(sample("gaia_etcd_objects", n, resource=r) for r, n in sorted(found.items()))
        size = next((db_size[name] for name in _DB_SIZE if name in db_size), None)
        if size is not None:
            out.append(sample("gaia_etcd_db_size_bytes", size))
        etcd_sum = totals["etcd_request_duration_seconds_sum"]
        etcd_count = totals["etcd_request_duration_seconds_count"]
        out += [
            sample("gaia_etcd_request_latency_seconds", self._mean("etcd", etcd_sum, etcd_count)),
            sample("gaia_etcd_requests_total", etcd_count),
            sample("gaia_etcd_request_errors_total", totals["etcd_request_errors_total"]),
            sample("gaia_apiserver_requests_total", totals["requests"]),
            sample("gaia_apiserver_errors_total", totals["errors"]),
            sample(
                "gaia_apiserver_request_latency_seconds",
                self._mean(
                    "apiserver",
                    totals["apiserver_request_duration_seconds_sum"],
                    totals["apiserver_request_duration_seconds_count"],
                ),
            ),
        ]
        out.extend(
            sample("gaia_apiserver_inflight_requests", v, kind=k)
            for k, v in sorted(inflight.items())
        )
        out.append(sample("gaia_apiserver_watches", totals["watches"]))
        if "process_resident_memory_bytes" in totals:
            out.append(
                sample("gaia_apiserver_memory_bytes", totals["process_resident_memory_bytes"])
            )
        if "process_cpu_seconds_total" in totals:
            millicores = self._cpu(
                totals["process_cpu_seconds_total"],
                now_s,
                since_s=totals.get("process_start_time_seconds", 0.0),
            )
            out.append(sample("gaia_apiserver_cpu_usage_millicores", millicores))
        return out

    def _mean(self, what: str, total: float, count: float) -> float:
        """Mean seconds per request since the previous reading; 0 when none came in between."""
        previous = self._previous.get(what)
        self._previous[what] = (total, count)
        if previous is not None and count >= previous[1] and total >= previous[0]:
            served = count - previous[1]
            return (total - previous[0]) / served if served > 0 else 0.0
        # the first reading, or the server restarted (the histogram began again)
        return total / count if count > 0 else 0.0

    def _cpu(self, seconds: float, now_s: float, *, since_s: float) -> float:
        previous = self._previous.get("cpu")
        self._previous["cpu"] = (seconds, now_s)
        if previous is not None and seconds >= previous[0] and now_s > previous[1]:
            return 1000 * (seconds - previous[0]) / (now_s - previous[1])
        lifetime = now_s - since_s if since_s > 0 else 0.0
        return 1000 * seconds / lifetime if lifetime > 0 else 0.0
