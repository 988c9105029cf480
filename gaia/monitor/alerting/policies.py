"""Writing alert policies: each one checked against the metric catalogue, its scope and its
templates, then stored.

A policy is validated against the metric catalogue (``gaia.monitor.metrics.catalogue``): the metric
must exist and carry the labels the scope pins (an app policy needs a metric with ``business`` and
``app`` labels), and every extra matcher must be one of the metric's labels. Message templates must
compile in the channels' sandbox. The store (``gaia.store.alerting``) checks what exists (the
cluster, the app, the receivers and channels named) and writes.

The checks run in one fixed order, so a request with several faults is always answered with the
same one: scope, matchers, metric, targets, repeat interval, name, templates. The API calls one
function here per route (``create_policy``, ``update_policy``, ``enable_builtin_rules``).
See docs/architecture.md (monitor/alerting).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from gaia.domain.alerts import SCOPE_LABELS, ScopeKind, check_matchers
from gaia.domain.errors import InvalidRequest
from gaia.monitor.alerting.builtin_rules import BUILTIN_RULES, BY_KEY, cluster_policy
from gaia.monitor.alerting.channels import check_template
from gaia.monitor.metrics import catalogue
from gaia.store.alerting.owned import ensure_targets_owned, ensure_unique_name
from gaia.store.alerting.policies import (
    add_policies,
    apply_policy_changes,
    builtin_keys_enabled,
    require_cluster,
    scope_matchers,
)
from gaia.store.models import AlertPolicy, Business


@dataclass(frozen=True, slots=True)
class PolicyScope:
    kind: ScopeKind
    cluster: str | None = None
    node: str | None = None
    app: str | None = None


@dataclass(frozen=True, slots=True)
class Targets:
    """Whom a policy notifies, by id (all of the policy's owner)."""

    receiver_ids: Sequence[int] = ()
    group_ids: Sequence[int] = ()
    channel_ids: Sequence[int] = ()


def check_metric(metric: str, scope: ScopeKind, matchers: Mapping[str, str]) -> None:
    definition = catalogue.lookup(metric)
    if definition is None:
        close = [
            m.name for m in catalogue.METRICS if metric.split("_")[1:2] == m.name.split("_")[1:2]
        ]
        hint = f"; metrics of that area: {', '.join(close[:8])}" if close else ""
        raise InvalidRequest(f"metric '{metric}' is not in the catalogue (docs/metrics.md){hint}")
    missing = [label for label in SCOPE_LABELS[scope] if label not in definition.labels]
    if missing:
        raise InvalidRequest(
            f"metric '{metric}' has no label {', '.join(missing)}, so it cannot be scoped to "
            f"a {scope.value}; pick a metric with labels {', '.join(SCOPE_LABELS[scope])}"
        )
    unknown = [label for label in matchers if label not in definition.labels]
    if unknown:
        raise InvalidRequest(
            f"metric '{metric}' has no label {', '.join(unknown)} "
            f"(its labels: {', '.join(definition.labels)})"
        )


def check_templates(templates: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Per channel kind, a subject and a body that compile (``InvalidRequest`` names the part)."""
    out: dict[str, dict[str, str]] = {}
    for kind, template in templates.items():
        for part in ("subject", "body"):
            text = template.get(part, "")
            if text:
                try:
                    check_template(text)
                except InvalidRequest as exc:
                    raise InvalidRequest(f"templates.{kind}.{part}: {exc.message}") from None
        out[str(kind)] = {"subject": template.get("subject", ""), "body": template.get("body", "")}
    return out


def check_repeat(repeat_seconds: int | None) -> None:
    if repeat_seconds and repeat_seconds < 60:
        raise InvalidRequest("repeat_seconds must be 0 (notify once) or at least 60")


def create_policy(
    session: Session,
    *,
    business: Business | None,
    name: str,
    scope: PolicyScope,
    metric: str,
    matchers: Mapping[str, str],
    comparison: str,
    threshold: float,
    for_seconds: int,
    severity: str,
    repeat_seconds: int,
    targets: Targets,
    templates: Mapping[str, Mapping[str, str]],
    summary: str,
    description: str,
    enabled: bool,
    created_by: str,
    now: dt.datetime,
) -> AlertPolicy:
    """A new policy of ``business`` (None: the platform's), checked and stored."""
    owner = business.id if business is not None else None
    pinned = scope_matchers(
        session,
        kind=scope.kind,
        cluster=scope.cluster,
        node=scope.node,
        app=scope.app,
        business=business,
    )
    extra = check_matchers(matchers)
    clash = [k for k in extra if k in pinned and extra[k] != pinned[k]]
    if clash:
        raise InvalidRequest(f"matchers {', '.join(clash)} contradict the policy's scope")
    all_matchers = {**extra, **pinned}
    check_metric(metric, scope.kind, all_matchers)
    ensure_targets_owned(
        session,
        owner,
        receiver_ids=targets.receiver_ids,
        group_ids=targets.group_ids,
        channel_ids=targets.channel_ids,
    )
    check_repeat(repeat_seconds)
    ensure_unique_name(session, AlertPolicy, business_id=owner, name=name, what="policy")
    policy = AlertPolicy(
        business_id=owner,
        name=name,
        scope=scope.kind.value,
        matchers=all_matchers,
        metric=metric,
        comparison=comparison,
        threshold=threshold,
        for_seconds=for_seconds,
        severity=severity,
        repeat_seconds=repeat_seconds,
        enabled=enabled,
        receiver_ids=list(dict.fromkeys(targets.receiver_ids)),
        group_ids=list(dict.fromkeys(targets.group_ids)),
        channel_ids=list(dict.fromkeys(targets.channel_ids)),
        templates=check_templates(templates),
        summary=summary,
        description=description,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    add_policies(session, [policy])
    return policy


def update_policy(
    session: Session, policy: AlertPolicy, changes: Mapping[str, Any], *, now: dt.datetime
) -> list[str]:
    """Apply the fields a PATCH sent (``changes``: name to new value, None meaning "keep" except
    for the threshold); returns the fields sent, sorted, for the operation record."""
    fields = dict(changes)
    name = fields.get("name")
    if name is not None and name != policy.name:
        ensure_unique_name(
            session,
            AlertPolicy,
            business_id=policy.business_id,
            name=name,
            what="policy",
            skip=policy.id,
        )
    if fields.get("matchers") is not None:
        extra = check_matchers(fields["matchers"])
        pinned = {
            k: v
            for k, v in (policy.matchers or {}).items()
            if k in SCOPE_LABELS[ScopeKind(policy.scope)]
        }
        if any(k in pinned and extra[k] != pinned[k] for k in extra):
            raise InvalidRequest("matchers contradict the policy's scope")
        matchers = {**extra, **pinned}
        check_metric(policy.metric, ScopeKind(policy.scope), matchers)
        fields["matchers"] = matchers
    ensure_targets_owned(
        session,
        policy.business_id,
        receiver_ids=fields.get("receiver_ids") or [],
        group_ids=fields.get("group_ids") or [],
        channel_ids=fields.get("channel_ids") or [],
    )
    if fields.get("templates") is not None:
        fields["templates"] = check_templates(fields["templates"])
    check_repeat(fields.get("repeat_seconds"))
    apply_policy_changes(policy, fields, now=now)
    return sorted(fields)


def enable_builtin_rules(
    session: Session,
    *,
    cluster: str,
    keys: Sequence[str] | None,
    targets: Targets,
    created_by: str,
    now: dt.datetime,
) -> tuple[list[AlertPolicy], list[str]]:
    """One platform policy per built-in rule (``keys``; None: all), scoped to the cluster; rules
    already enabled there are left as they are. Returns the policies created and the keys that
    were enabled already."""
    require_cluster(session, cluster)
    wanted = list(keys) if keys is not None else [r.key for r in BUILTIN_RULES]
    unknown = [k for k in wanted if k not in BY_KEY]
    if unknown:
        raise InvalidRequest(
            f"unknown built-in rules {', '.join(unknown)}; GET /api/v1/alerts/builtin-rules"
        )
    ensure_targets_owned(
        session,
        None,
        receiver_ids=targets.receiver_ids,
        group_ids=targets.group_ids,
        channel_ids=targets.channel_ids,
    )
    existing = builtin_keys_enabled(session, cluster)
    created: list[AlertPolicy] = []
    for key in dict.fromkeys(wanted):
        if key in existing:
            continue
        policy = cluster_policy(
            BY_KEY[key],
            cluster,
            created_by=created_by,
            now=now,
            receiver_ids=targets.receiver_ids,
            group_ids=targets.group_ids,
            channel_ids=targets.channel_ids,
        )
        ensure_unique_name(session, AlertPolicy, business_id=None, name=policy.name, what="policy")
        created.append(policy)
    # built-in rules have distinct names, so checking each before any is added is enough
    add_policies(session, created)
    return created, sorted(k for k in wanted if k in existing)
