"""Monitoring, alerting and logs: three rooms, each with its store, its loop and its vocabulary.

- ``metrics``: what the platform measures (``catalogue``), the loop that reads every cluster
  through its provider (``collector``), where series are kept (``series.MetricStore``: the
  embedded ``tsdb`` by default, or a real ``prometheus``), and the platform's own metrics
  (``platform``, served at ``GET /metrics``).
- ``alerting``: the loop that evaluates alert policies against the metric store (``evaluator``;
  the rules themselves are pure, in ``gaia.domain.alerts``), the outbox loop that delivers each
  notification with retries and rate limits (``delivery``, over ``gaia.store.alerting``), the
  channels it sends through (``channels``: email, SMS, WeCom robot, webhook), the built-in rules,
  the policies as Prometheus rule files and the receiver for a real Alertmanager.
- ``logs``: the bounded embedded store of container and platform log lines (``store``) and the
  loop that reads new container lines from every cluster into it (``collector``).

Each room's loops are ``gaia.loop.LoopService``s built by ``gaia.platform``; the API reads the
stores through ``gaia.api.routes``. See docs/architecture.md.
"""
