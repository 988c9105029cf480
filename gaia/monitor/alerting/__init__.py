"""Alerting: policies evaluated against the metric store, alerts recorded, notifications sent.

One alert's path: the evaluator (``evaluator``, a loop) reads the enabled policies, runs the pure
rules of ``gaia.domain.alerts`` over the latest series, and writes each fire / repeat / resolve
with its outbox rows in one transaction (``gaia.store.alerting``). The delivery loop (``delivery``)
claims due outbox rows with a lease, renders each message (``notify``) and sends it through its
channel (``channels/``: email, SMS, WeCom, webhook), and records the result or the retry. Alerts
from a real Prometheus arrive through Alertmanager (``alertmanager``) onto the same records.

Around that: ``policies`` checks a policy against the metric catalogue and its templates before
the store writes it; ``builtin_rules`` are the rules every cluster should have; ``rulefiles``
exports policies as Prometheus rule files. See docs/architecture.md (monitor/alerting).
"""
