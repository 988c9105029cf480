"""Alert policies and the built-in rules (issue 20; docs/monitoring.md).

- ``/console/alerts/policies``: every policy the user sees, enabled or not, with enable /
  disable for those who may write it (developers and above of its business; cluster and node
  policies are the platform admins').
- ``/console/alerts/policies/new``: the form. The metric is picked from the catalogue
  (``GET /api/v1/monitoring/metrics``) with the labels each metric carries, so a user sees which
  scopes it can serve; the scope pickers (kind, cluster, node, app), the comparison and
  threshold, how long it must hold, the severity, how often to repeat, and the receivers,
  receiver groups and channels to notify. The API checks it all (``gaia.monitor.alerting``);
  its field messages land beside the fields.
- ``/console/alerts/policies/{id}``: the same form for an existing policy. Its owner, scope and
  metric are fixed (the API changes neither: a different metric is a different policy), the
  rest is a ``PATCH``; and delete (which resolves its firing alerts).
- ``/console/alerts/builtin``: the platform's built-in rules, and for platform admins a form
  that enables them (all or some) on a cluster.
"""

from __future__ import annotations

import math
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from gaia.console.listing import every_item
from gaia.console.pages.alerts import may_write, writable_businesses
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    User,
    redirect,
    refusal_page,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
PolicyId = Annotated[int, Path(ge=1, le=2**31)]
POLICIES = "/api/v1/alerts/policies"
SCOPES = ("app", "business", "cluster", "node")
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")
SEVERITIES = ("critical", "warning", "info")
FIELDS = (
    "business",
    "name",
    "scope",
    "cluster",
    "node",
    "app",
    "metric",
    "comparison",
    "threshold",
    "for_seconds",
    "severity",
    "repeat_seconds",
    "summary",
)
TARGETS = ("receiver_ids", "group_ids", "channel_ids")
# where a 422's field path lands in the form
ERROR_FIELDS = {
    "business": "business",
    "name": "name",
    "scope.kind": "scope",
    "scope.cluster": "cluster",
    "scope.node": "node",
    "scope.app": "app",
    "scope": "scope",
    "metric": "metric",
    "matchers": "scope",
    "comparison": "comparison",
    "threshold": "threshold",
    "for_seconds": "for_seconds",
    "severity": "severity",
    "repeat_seconds": "repeat_seconds",
    "receiver_ids": "receiver_ids",
    "group_ids": "group_ids",
    "channel_ids": "channel_ids",
    "summary": "summary",
}


def _refused(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="alert_error.html", section="alerts")


def form_errors(result: ApiResult) -> dict[str, str]:
    """The API's refusal on the form's fields: a 422's fields where they are, and its message
    without fields on the field it names (the metric, the scope) or above the form."""
    out: dict[str, str] = {}
    for path, message in result.field_errors.items():
        key = next(
            (ERROR_FIELDS[p] for p in sorted(ERROR_FIELDS, key=len, reverse=True)
             if path == p or path.startswith(p + ".")),
            "form",
        )  # fmt: skip
        out.setdefault(key, message)
    if not out:
        message = result.error
        fields = ("metric", "threshold", "app", "node", "cluster", "scope")
        named = next((k for k in fields if f"{k} " in message or f"{k}'" in message), "form")
        out[named] = message
    return out


def body_from_form(
    values: dict[str, str], targets: dict[str, list[str]], *, new: bool, _: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's create (``new``) or update body from the form, or per-field errors for what
    the form itself cannot read; the API checks the rest."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {
        "name": values["name"].strip(),
        "comparison": values["comparison"],
        "severity": values["severity"],
        "summary": values["summary"].strip(),
    }
    try:
        threshold = float(values["threshold"])
        if not math.isfinite(threshold):
            raise ValueError
        body["threshold"] = threshold
    except ValueError:
        errors["threshold"] = _("a number")
    for key in ("for_seconds", "repeat_seconds"):
        text = values[key].strip() or "0"
        if not text.isdigit() or len(text) > 7:
            errors[key] = _("seconds: a whole number")
        else:
            body[key] = int(text)
    for key in TARGETS:
        chosen = targets.get(key, [])
        if not all(i.isdigit() and len(i) < 11 for i in chosen):
            errors[key] = _("pick from the list")
        else:
            body[key] = [int(i) for i in chosen]
    if new:
        scope: dict[str, Any] = {"kind": values["scope"]}
        for key in ("cluster", "node", "app"):
            if values[key].strip():
                scope[key] = values[key].strip()
        body["scope"] = scope
        body["metric"] = values["metric"].strip()
        if values["business"]:
            body["business"] = values["business"]
        if not body["metric"]:
            errors["metric"] = _("pick a metric from the catalogue")
    return body, errors


async def _choices(api: ConsoleApi) -> dict[str, Any]:
    """What the form offers: the catalogue's metrics, the clusters, and the receivers, groups
    and channels the user sees (each labelled with its business)."""
    metrics = await every_item(api, "/api/v1/monitoring/metrics")
    clusters = await every_item(api, "/api/v1/clusters")
    out: dict[str, Any] = {
        "metrics": metrics.data if metrics.ok else [],
        "clusters": [c["name"] for c in clusters.data] if clusters.ok else [],
    }
    for key, path in (
        ("receivers", "/api/v1/alerts/receivers"),
        ("groups", "/api/v1/alerts/receiver-groups"),
        ("channels", "/api/v1/alerts/channels"),
    ):
        listed = await every_item(api, path)
        out[key] = listed.data if listed.ok else []
    return out


def _values_of(policy: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    matchers = policy.get("matchers") or {}
    values = {
        "business": policy.get("business") or "",
        "name": policy["name"],
        "scope": policy["scope"],
        "cluster": matchers.get("cluster", ""),
        "node": matchers.get("node", ""),
        "app": matchers.get("app", ""),
        "metric": policy["metric"],
        "comparison": policy["comparison"],
        "threshold": f"{policy['threshold']:g}",
        "for_seconds": str(policy["for_seconds"]),
        "severity": policy["severity"],
        "repeat_seconds": str(policy["repeat_seconds"]),
        "summary": policy["summary"],
    }
    return values, {k: [str(i) for i in policy[k]] for k in TARGETS}


def _read_form(form: FormData) -> tuple[dict[str, str], dict[str, list[str]]]:
    values = {k: str(form.get(k) or "")[:4000] for k in FIELDS}
    targets = {k: [str(v)[:20] for v in form.getlist(k)][:100] for k in TARGETS}
    return values, targets


# ---------------------------------------------------------------- the list


@router.get("/console/alerts/policies")
async def policies_list(request: Request, user: User) -> Response:
    api = ConsoleApi(request, user)
    listed = await every_item(api, POLICIES)
    writable = set(await writable_businesses(api, user))
    policies: list[dict[str, Any]] = listed.data if listed.ok else []
    for p in policies:
        p["write"] = user.is_admin or (p["business"] in writable)
    return render(
        request,
        user,
        "alert_policies.html",
        {
            "policies": policies,
            "error": listed.error,
            "may_create": bool(writable) or user.is_admin,
        },
        section="alerts",
    )


@router.post("/console/alerts/policies/{policy_id:int}/enabled", response_model=None)
async def policy_enable(request: Request, user: User, policy_id: PolicyId) -> Response:
    form = await request.form()
    enabled = form.get("enabled") == "true"
    result = await ConsoleApi(request, user).patch(f"{POLICIES}/{policy_id}", {"enabled": enabled})
    _ = translator(user.language)
    if not result.ok:
        return redirect("/console/alerts/policies", error=result.error)
    message = "enabled {name}" if enabled else "disabled {name}"
    return redirect("/console/alerts/policies", ok=_(message, name=result.data["name"]))


# ---------------------------------------------------------------- create and edit


async def _form_page(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str],
    targets: dict[str, list[str]],
    errors: dict[str, str],
    policy: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    businesses = await writable_businesses(api, user)
    if policy is None and not businesses and not user.is_admin:
        message = "you may create alert policies in none of your businesses"
        return _refused(request, user, ApiResult(403, {"message": message}))
    write = policy is None or await may_write(api, user, policy["business"])
    return render(
        request,
        user,
        "alert_policy.html",
        {
            "policy": policy,
            "write": write,
            "businesses": businesses,
            "values": values,
            "targets": targets,
            "errors": errors,
            "scopes": SCOPES,
            "comparisons": COMPARISONS,
            "severities": SEVERITIES,
            **await _choices(api),
        },
        section="alerts",
        status=status,
    )


@router.get("/console/alerts/policies/new")
async def policy_new(request: Request, user: User) -> Response:
    values = {k: "" for k in FIELDS} | {
        "scope": "app",
        "comparison": ">",
        "for_seconds": "60",
        "severity": "warning",
        "repeat_seconds": "0",
    }
    businesses = await writable_businesses(ConsoleApi(request, user), user)
    values["business"] = businesses[0] if businesses else ""
    return await _form_page(request, user, values=values, targets={}, errors={})


@router.post("/console/alerts/policies/new", response_model=None)
async def policy_create(request: Request, user: User) -> Response:
    values, targets = _read_form(await request.form())
    _ = translator(user.language)
    body, errors = body_from_form(values, targets, new=True, _=_)
    if not errors:
        result = await ConsoleApi(request, user).post(POLICIES, body)
        if result.ok:
            return redirect(
                f"/console/alerts/policies/{result.data['id']}",
                ok=_("created policy {name}", name=result.data["name"]),
            )
        if result.status not in (400, 422):
            return _refused(request, user, result)
        errors = form_errors(result)
    return await _form_page(
        request, user, values=values, targets=targets, errors=errors, status=422
    )


@router.get("/console/alerts/policies/{policy_id:int}")
async def policy_page(request: Request, user: User, policy_id: PolicyId) -> Response:
    policy = await ConsoleApi(request, user).get(f"{POLICIES}/{policy_id}")
    if not policy.ok:
        return _refused(request, user, policy)
    values, targets = _values_of(policy.data)
    return await _form_page(
        request, user, values=values, targets=targets, errors={}, policy=policy.data
    )


@router.post("/console/alerts/policies/{policy_id}", response_model=None)
async def policy_update(request: Request, user: User, policy_id: PolicyId) -> Response:
    api = ConsoleApi(request, user)
    policy = await api.get(f"{POLICIES}/{policy_id}")
    if not policy.ok:
        return _refused(request, user, policy)
    values, targets = _read_form(await request.form())
    fixed, _targets = _values_of(policy.data)
    for key in ("business", "scope", "cluster", "node", "app", "metric"):
        values[key] = fixed[key]  # what the API does not change is shown as it is
    _ = translator(user.language)
    body, errors = body_from_form(values, targets, new=False, _=_)
    if not errors:
        result = await api.patch(f"{POLICIES}/{policy_id}", body)
        if result.ok:
            return redirect(
                f"/console/alerts/policies/{policy_id}",
                ok=_("saved policy {name}", name=result.data["name"]),
            )
        if result.status not in (400, 422):
            return redirect(f"/console/alerts/policies/{policy_id}", error=result.error)
        errors = form_errors(result)
    return await _form_page(
        request,
        user,
        values=values,
        targets=targets,
        errors=errors,
        policy=policy.data,
        status=422,
    )


@router.post("/console/alerts/policies/{policy_id:int}/delete", response_model=None)
async def policy_delete(request: Request, user: User, policy_id: PolicyId) -> Response:
    result = await ConsoleApi(request, user).delete(f"{POLICIES}/{policy_id}")
    if result.ok:
        return redirect(
            "/console/alerts/policies", ok=translator(user.language)("deleted the policy")
        )
    return redirect(f"/console/alerts/policies/{policy_id}", error=result.error)


# ---------------------------------------------------------------- built-in rules


@router.get("/console/alerts/builtin")
async def builtin_rules(request: Request, user: User) -> Response:
    api = ConsoleApi(request, user)
    rules = await every_item(api, "/api/v1/alerts/builtin-rules")
    clusters: list[str] = []
    if user.is_admin:
        listed = await every_item(api, "/api/v1/clusters")
        clusters = [c["name"] for c in listed.data] if listed.ok else []
    return render(
        request,
        user,
        "alert_builtin.html",
        {"rules": rules.data if rules.ok else [], "error": rules.error, "clusters": clusters},
        section="alerts",
    )


@router.post("/console/alerts/builtin", response_model=None)
async def builtin_enable(request: Request, user: User) -> Response:
    form = await request.form()
    cluster = str(form.get("cluster") or "")[:63]
    keys = [str(k)[:100] for k in form.getlist("rules")][:200]
    _ = translator(user.language)
    if not cluster:
        return redirect("/console/alerts/builtin", error=_("pick a cluster"))
    body: dict[str, Any] = {"rules": keys} if keys else {}
    result = await ConsoleApi(request, user).post(
        f"/api/v1/clusters/{quote(cluster)}/alert-rules", body
    )
    if not result.ok:
        return redirect("/console/alerts/builtin", error=result.error)
    return redirect(
        "/console/alerts/policies",
        ok=_(
            "enabled {created} built-in rules on {cluster} ({already} already were)",
            created=len(result.data["created"]),
            cluster=cluster,
            already=len(result.data["already_enabled"]),
        ),
    )
