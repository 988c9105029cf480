"""Alert policies, the built-in rules and the Prometheus rule-file export:
``/alerts/policies``, ``/alerts/builtin-rules``, ``/clusters/{cluster}/alert-rules`` and
``/alerts/rules.yaml``.

Developers and above of a business write its policies; cluster and node policies and built-in
rules are the platform admins'. A policy is checked against the metric catalogue, its scope and
its templates by ``gaia.monitor.alerting.policies``. Deleting a policy resolves its firing alerts,
with notices, in the same transaction (``gaia.store.alerting.policies``), so no alert stays firing
forever for a rule that is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    audit,
    platform,
    require_platform_admin,
)
from gaia.api.pagination import Cursor, Limit, encode_cursor, kind_of, page_in_memory
from gaia.api.routes.alerts._owned import (
    BusinessQuery,
    Id,
    OwnedKind,
    owner_business,
    owner_name,
    owners_for,
)
from gaia.api.schemas.alerts import (
    BuiltinEnable,
    BuiltinEnableOut,
    BuiltinRuleOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
)
from gaia.api.schemas.base import Page
from gaia.domain.alerts import ScopeKind
from gaia.domain.rbac import Permission
from gaia.monitor.alerting import policies as checked
from gaia.monitor.alerting.builtin_rules import BUILTIN_RULES
from gaia.monitor.alerting.rulefiles import policy_rule, rule_file
from gaia.store.alerting import policies as stored
from gaia.store.models import AlertPolicy, utcnow

router = APIRouter(tags=["alerts"], route_class=CommittingRoute)
POLICIES = OwnedKind(AlertPolicy, "policy")


def _policy_out(p: AlertPolicy, names: Mapping[int, str]) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        business=owner_name(p.business_id, names),
        name=p.name,
        scope=p.scope,
        matchers=dict(p.matchers or {}),
        metric=p.metric,
        comparison=p.comparison,
        threshold=p.threshold,
        for_seconds=p.for_seconds,
        severity=p.severity,
        repeat_seconds=p.repeat_seconds,
        enabled=p.enabled,
        receiver_ids=list(p.receiver_ids or []),
        group_ids=list(p.group_ids or []),
        channel_ids=list(p.channel_ids or []),
        templates=dict(p.templates or {}),
        summary=p.summary,
        description=p.description,
        builtin_key=p.builtin_key,
        created_by=p.created_by,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


@router.get("/alerts/policies", response_model=Page[PolicyOut])
def list_policies(
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
    app: Annotated[str | None, Query(max_length=63)] = None,
    enabled: bool | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[PolicyOut]:
    where = [AlertPolicy.enabled == enabled] if enabled is not None else []
    listing = POLICIES.page(session, principal, business, limit=limit, cursor=cursor, where=where)
    rows, nxt, names = listing.rows, listing.next_cursor, listing.names
    if app:
        # the app is inside the JSON matchers: filter here, reading on until the page is full
        kept = [r for r in rows if (r.matchers or {}).get("app") == app]
        while nxt is not None and len(kept) < limit:
            more = POLICIES.page(session, principal, business, limit=limit, cursor=nxt, where=where)
            kept += [r for r in more.rows if (r.matchers or {}).get("app") == app]
            nxt = more.next_cursor
            names.update(more.names)
        if len(kept) > limit:
            kept = kept[:limit]
            nxt = encode_cursor(kind_of(AlertPolicy.id), kept[-1].id)
        rows = kept
    return Page[PolicyOut](items=[_policy_out(r, names) for r in rows], next_cursor=nxt)


@router.post("/alerts/policies", response_model=PolicyOut, status_code=201)
def create_policy(
    request: Request, body: PolicyCreate, principal: PrincipalDep, session: SessionDep
) -> PolicyOut:
    ctx = audit(request, action="alert_policy.create", target=f"alert-policy/{body.name}")
    row = checked.create_policy(
        session,
        business=owner_business(session, principal, body.business, Permission.ALERT_WRITE, ctx),
        name=body.name,
        scope=checked.PolicyScope(
            kind=ScopeKind(body.scope.kind),
            cluster=body.scope.cluster,
            node=body.scope.node,
            app=body.scope.app,
        ),
        metric=body.metric,
        matchers=body.matchers,
        comparison=body.comparison,
        threshold=body.threshold,
        for_seconds=body.for_seconds,
        severity=body.severity,
        repeat_seconds=body.repeat_seconds,
        targets=checked.Targets(body.receiver_ids, body.group_ids, body.channel_ids),
        templates={str(k): v.model_dump() for k, v in body.templates.items()},
        summary=body.summary,
        description=body.description,
        enabled=body.enabled,
        created_by=principal.username,
        now=utcnow(),
    )
    ctx.summary = (
        f"created policy '{body.name}': {body.metric} {body.comparison} {body.threshold:g} "
        f"for {body.for_seconds}s on {row.matchers}"
    )
    return _policy_out(row, POLICIES.names(session, row))


@router.get("/alerts/policies/{policy_id}", response_model=PolicyOut)
def get_policy(policy_id: Id, principal: PrincipalDep, session: SessionDep) -> PolicyOut:
    row = POLICIES.get(session, principal, policy_id, Permission.BUSINESS_READ)
    return _policy_out(row, POLICIES.names(session, row))


@router.patch("/alerts/policies/{policy_id}", response_model=PolicyOut)
def update_policy(
    request: Request,
    policy_id: Id,
    body: PolicyUpdate,
    principal: PrincipalDep,
    session: SessionDep,
) -> PolicyOut:
    """Change a policy. Its firing alerts stay firing (and keep their records) unless the new
    rule no longer holds for them, in which case the next evaluation resolves them."""
    ctx = audit(request, action="alert_policy.update", target=f"alert-policy/{policy_id}")
    row = POLICIES.get(session, principal, policy_id, Permission.ALERT_WRITE)
    sent = checked.update_policy(session, row, body.model_dump(exclude_unset=True), now=utcnow())
    ctx.summary = f"updated policy '{row.name}': {', '.join(sent) or 'nothing'}"
    return _policy_out(row, POLICIES.names(session, row))


@router.delete("/alerts/policies/{policy_id}", status_code=204)
def delete_policy(
    request: Request, policy_id: Id, principal: PrincipalDep, session: SessionDep
) -> Response:
    ctx = audit(request, action="alert_policy.delete", target=f"alert-policy/{policy_id}")
    row = POLICIES.get(session, principal, policy_id, Permission.ALERT_WRITE)
    resolved = stored.delete_policy(session, row, now=platform(request).clock.now())
    ctx.summary = f"deleted policy '{row.name}' (resolved {resolved} firing alerts)"
    return Response(status_code=204)


# ---------------------------------------------------------------- built-in rules


@router.get("/alerts/builtin-rules", response_model=Page[BuiltinRuleOut])
def list_builtin_rules(
    principal: PrincipalDep, limit: Limit = 100, cursor: Cursor = None
) -> Page[BuiltinRuleOut]:
    """The built-in rules in catalogue order (paged over their position in the catalogue)."""
    rows, nxt = page_in_memory(
        list(enumerate(BUILTIN_RULES)),
        key=lambda pr: pr[0],
        kind="builtin-rules",
        limit=limit,
        cursor=cursor,
        numeric=True,
    )
    items = [
        BuiltinRuleOut(
            key=r.key,
            area=r.area,
            name=r.name,
            metric=r.metric,
            comparison=r.comparison.value,
            threshold=r.threshold,
            for_seconds=r.for_seconds,
            severity=r.severity.value,
            summary=r.summary,
        )
        for _, r in rows
    ]
    return Page[BuiltinRuleOut](items=items, next_cursor=nxt)


@router.post("/clusters/{cluster}/alert-rules", response_model=BuiltinEnableOut, status_code=201)
def enable_builtin_rules(
    request: Request,
    body: BuiltinEnable,
    principal: PrincipalDep,
    session: SessionDep,
    cluster: str = Path(max_length=63),
) -> BuiltinEnableOut:
    """Enable built-in rules on a cluster: one platform policy per rule, scoped to the cluster."""
    ctx = audit(request, action="alert_rules.enable", target=f"cluster/{cluster}", cluster=cluster)
    require_platform_admin(principal, "enable built-in alert rules")
    created, already = checked.enable_builtin_rules(
        session,
        cluster=cluster,
        keys=body.rules,
        targets=checked.Targets(body.receiver_ids, body.group_ids, body.channel_ids),
        created_by=principal.username,
        now=utcnow(),
    )
    ctx.summary = f"enabled {len(created)} built-in alert rules on cluster '{cluster}'"
    return BuiltinEnableOut(created=[_policy_out(p, {}) for p in created], already_enabled=already)


# ---------------------------------------------------------------- Prometheus rule files


@router.get("/alerts/rules.yaml", response_class=Response)
def export_rules(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    business: BusinessQuery = None,
) -> Response:
    """The enabled policies you can see as a Prometheus rule file (``promtool check rules``)."""
    policies, names = stored.enabled_policies(
        session, owners=owners_for(session, principal, business)
    )
    groups: dict[str, list[dict[str, object]]] = {}
    for p in policies:
        group = (
            "gaia-platform" if p.business_id is None else f"gaia-business-{names[p.business_id]}"
        )
        groups.setdefault(group, []).append(
            policy_rule(
                policy_id=p.id,
                name=p.name,
                metric=p.metric,
                matchers=p.matchers or {},
                comparison=p.comparison,
                threshold=p.threshold,
                for_seconds=p.for_seconds,
                severity=p.severity,
                summary=p.summary,
            )
        )
    interval = platform(request).settings.alert_eval_interval_seconds
    return Response(rule_file(groups, interval=interval), media_type="application/yaml")
