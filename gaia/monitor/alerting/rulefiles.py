"""Alert policies as Prometheus rule files, so a real Prometheus + Alertmanager can evaluate them.

Each policy becomes one alerting rule with the same meaning as the platform's evaluation:
``expr`` is the metric with the policy's matchers compared to the threshold, ``for`` the
for-duration, and the labels carry ``severity`` and ``gaia_policy_id``. The Alertmanager webhook
receiver (``gaia.monitor.alerting.alertmanager``) uses that id to route the alert back into the
policy's records and channels, and computes the same fingerprint from the series' labels, so an
alert evaluated by Prometheus and one evaluated by the platform are one record, not two.

Rules are grouped one group per owner (the platform, or a business), sorted, so the output is
stable and diffs well. ``promtool check rules`` accepts every file this writes (a test runs
Debian's promtool on it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import yaml

from gaia.domain.alerts import Comparison

_ALERT_NAME = re.compile(r"[^a-zA-Z0-9_]+")


def selector(metric: str, matchers: Mapping[str, str]) -> str:
    """``metric{k="v",...}`` with PromQL string escaping."""
    if not matchers:
        return metric
    parts = []
    for key in sorted(matchers):
        value = matchers[key].replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{key}="{value}"')
    return f"{metric}{{{','.join(parts)}}}"


def alert_name(name: str) -> str:
    """A policy name as a Prometheus alert name (a label value, but kept identifier-like)."""
    cleaned = _ALERT_NAME.sub("_", name).strip("_")
    if not cleaned or cleaned[0].isdigit():
        cleaned = f"gaia_{cleaned}"
    return cleaned


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def policy_rule(
    *,
    policy_id: int,
    name: str,
    metric: str,
    matchers: Mapping[str, str],
    comparison: str,
    threshold: float,
    for_seconds: float,
    severity: str,
    summary: str,
) -> dict[str, object]:
    op = Comparison(comparison).value
    rule: dict[str, object] = {
        "alert": alert_name(name),
        "expr": f"{selector(metric, matchers)} {op} {threshold!r}",
    }
    if for_seconds:
        rule["for"] = duration(for_seconds)
    rule["labels"] = {"severity": severity, "gaia_policy_id": str(policy_id)}
    rule["annotations"] = {
        "summary": summary or f"{name}: {metric} {op} {threshold:g}",
        "gaia_policy": name,
        # the observed value, which the Alertmanager receiver stores in the record
        "value": "{{ $value }}",
    }
    return rule


def rule_file(groups: Mapping[str, Iterable[dict[str, object]]], *, interval: float) -> str:
    """The YAML of a rule file: ``groups`` maps a group name to its rules."""
    doc = {
        "groups": [
            {"name": group, "interval": duration(interval), "rules": list(rules)}
            for group, rules in sorted(groups.items())
        ]
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
