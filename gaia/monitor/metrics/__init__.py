"""Metrics: the catalogue of what is measured, the collector loop, and where series are kept.

``catalogue`` is the one list of metric names (docs/metrics.md is generated from it);
``collector`` reads every cluster's nodes, instances, usage and control plane through its
provider every interval and writes samples; ``series`` defines the values that flow (``Sample``,
``Series``) and the ``MetricStore`` protocol that ``tsdb`` (embedded, the default) and
``prometheus`` (a real Prometheus over its HTTP API) implement; ``platform`` holds the platform's
own metrics for ``GET /metrics``.
"""
