"""Monitoring, alerting and logs (FEATURES.md §8).

- ``series``: the values that flow between the parts: ``Sample`` (one value of one series at one
  instant) and ``Series`` (points over time), and the ``MetricStore`` protocol.
- ``tsdb``: the embedded time-series store (the default); ``prometheus``: a real Prometheus as the
  store, queried over its HTTP API.
- ``catalogue``: every metric the platform collects (name, unit, labels, source); ``collector``:
  the loop that reads each provider and writes samples into the store.
- ``channels``: email, SMS, WeCom robot and custom webhook senders; ``delivery``: the outbox that
  sends each notification with retries, rate limits and no loss across restarts.
- ``evaluator``: the loop that evaluates alert policies against the store (the rules themselves are
  pure functions in ``gaia.domain.alerts``); ``rulefiles``: the same policies as Prometheus rule
  files.
- ``logs``: the bounded embedded store of container and platform log lines;
  ``log_collector``: the loop that reads new container lines from every cluster into it.
- ``platform_metrics``: the platform's own metrics (``GET /metrics``); ``alertmanager``: alerts
  posted by a real Alertmanager, routed into the same records and channels.
"""
