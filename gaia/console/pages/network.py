"""The Galaxy network in the console (issue 19; docs/network.md).

- ``/console/b/{biz}/apps/{app}/network`` (members of the business): the app's network mode
  (overlay, floating-ip, nat, host), its release policy, and each instance's address, pool,
  node and NAT host ports, from ``GET .../apps/{app}/network``; each instance's bandwidth
  guarantee and live use (below). The instances are one page of ``GET .../instances`` (the
  API's cursors in the links) and their addresses one page of ``GET .../network`` asked for
  those ids (``?instance=``), so an app of 10,000 costs one page of each; the addresses kept
  for instances scaled away are a page of their own (``?kept=true``, ``kept_cursor`` in the
  links), read only when the API counts any (``kept_total``). Developers and above
  get a form to change the mode and the release policy. Templates are immutable, so the form
  adds a version, a copy of the default template with the new network, and makes it the default
  (the API's ``POST .../templates`` and ``PATCH .../apps/{app}``, both refused to viewers by the
  API itself); running instances move to it by a gray upgrade, as for any other change.
- ``/console/network`` (platform admins; in the top navigation for them only): per cluster its
  floating-IP pools with how many addresses are used and free, which pool each node's
  ``gaia.io/subnet`` label selects, and forms to create and delete pools.

**Bandwidth.** An instance's guarantee is its template's bandwidth quota (``resources.bandwidth``,
Mbit/s of egress: what ``gaia.domain.qos`` shapes to). Live use is the metric store's
``gaia_instance_network_transmit_bytes_per_second``, newest point of the last few minutes; the
collector writes it only where the provider counts network bytes, and an instance without a
point shows "not collected" rather than a made-up zero. ``bandwidth_of`` is shared with the
apps' instance table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gaia.console.listing import Cursor, every_item, instance_links, instance_page
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    User,
    platform_now,
    redirect,
    refusal_page,
    render,
    translator,
)
from gaia.domain.rbac import Permission, Role, allows

router = APIRouter(include_in_schema=False)
NamePattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
Biz = Annotated[str, Path(pattern=NamePattern, max_length=63)]
Name = Annotated[str, Path(pattern=NamePattern, max_length=63)]
AppName = Annotated[str, Path(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", max_length=40)]

MODES = ("overlay", "floating-ip", "nat", "host")
POLICIES = ("on-delete", "app", "never")
SUBNET_LABEL = "gaia.io/subnet"
LIVE_METRIC = "gaia_instance_network_transmit_bytes_per_second"
LIVE_WINDOW_S = 300  # a point older than this is no "live" use
INSTANCES_PER_PAGE = 50  # rows of the addresses table, as the instances tab shows
KEPT_PER_PAGE = 50  # rows of the table of addresses kept for instances scaled away
POOL_FIELDS = ("cluster", "name", "subnet", "zone", "gateway", "range_start", "range_end")
# the keys of a stored template that the API's TemplateIn takes back (besides name/resources)
TEMPLATE_KEYS = (
    "image",
    "command",
    "args",
    "env",
    "ports",
    "liveness",
    "readiness",
    "configs",
    "profile",
    "node_selector",
    "placement",
    "zone",
    "gpu_model",
    "gpu_link",
)


def _app_api(biz: str, app: str) -> str:
    return f"/api/v1/businesses/{quote(biz)}/apps/{quote(app)}"


def _app_page(biz: str, app: str) -> str:
    return f"/console/b/{biz}/apps/{app}/network"


# ---------------------------------------------------------------- bandwidth


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """An instance's bandwidth: its guarantee (Mbit/s, 0 for none) and its live egress
    (Mbit/s, None when the metric store has no recent point for it)."""

    guarantee_mbps: int
    live_mbps: float | None


async def bandwidth_of(
    api: ConsoleApi,
    *,
    biz: str,
    app: str,
    instances: Iterable[Mapping[str, Any]],
    templates: Iterable[Mapping[str, Any]],
    now: float,
) -> dict[str, Bandwidth]:
    """Per instance name: its guarantee (its template's bandwidth quota) and live use."""
    guarantee = {
        str(t["name"]): int(float((t.get("resources") or {}).get("bandwidth") or 0))
        for t in templates
    }
    result = await api.get(
        "/api/v1/monitoring/series",
        metric=LIVE_METRIC,
        business=biz,
        app=app,
        start=now - LIVE_WINDOW_S,
        end=now,
        step=15,
    )
    live: dict[str, float] = {}
    if result.ok and isinstance(result.data, list):
        for series in result.data:
            points = series.get("points") or []
            name = (series.get("labels") or {}).get("instance")
            if name and points:
                live[name] = float(points[-1][1]) * 8 / 1_000_000  # bytes/s -> Mbit/s
    return {
        str(i["name"]): Bandwidth(
            guarantee_mbps=guarantee.get(str(i.get("template") or i.get("version") or ""), 0),
            live_mbps=live.get(str(i["name"])),
        )
        for i in instances
    }


# ---------------------------------------------------------------- an app's network


def template_with_network(
    template: Mapping[str, Any], *, name: str, mode: str, policy: str
) -> dict[str, Any]:
    """The API's ``TemplateIn`` for a copy of ``template`` (a ``TemplateOut``) whose network is
    ``mode`` (and release ``policy``, floating-ip only)."""
    spec = template.get("spec") or {}
    body: dict[str, Any] = {k: spec[k] for k in TEMPLATE_KEYS if spec.get(k) is not None}
    body |= {"name": name, "image": template["image"], "resources": template["resources"]}
    body["network_mode"] = mode
    if mode == "floating-ip" and policy:
        body["ip_release"] = policy
    return body


def next_version(default: str, mode: str, taken: Iterable[str]) -> str:
    """A free version label for the copy: ``<default>-<mode>``, then ``-2``, ``-3`` ..."""
    used = set(taken)
    stem = f"{default}-{mode}"[:55].strip("-.")
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def network_form_errors(mode: str, policy: str, current: Mapping[str, Any]) -> dict[str, str]:
    """What the form itself refuses (the API validates again), in English: the page translates."""
    errors: dict[str, str] = {}
    if mode not in MODES:
        errors["mode"] = "choose one of the listed modes"
    if policy and policy not in POLICIES:
        errors["ip_release"] = "choose one of the listed policies"
    elif policy and mode != "floating-ip":
        errors["ip_release"] = "a release policy applies to floating-ip only"
    if not errors and mode == current.get("mode"):
        same_policy = mode != "floating-ip" or (policy or "on-delete") == current.get("ip_release")
        if same_policy:
            errors["mode"] = "the app already uses this network"
    return errors


async def _may_write(api: ConsoleApi, user: ConsoleUser, biz: str) -> bool:
    """Whether the API's ``writable_app`` lets the user change the app (``app.write``): the form
    is shown only to them, and refused before any call to the others."""
    if user.is_admin:
        return True
    business = await api.get(f"/api/v1/businesses/{quote(biz)}")
    role = business.data.get("role") if business.ok else None
    return role in {r.value for r in Role} and allows(Role(role), Permission.APP_WRITE)


async def _app_network_page(
    request: Request,
    user: ConsoleUser,
    *,
    biz: str,
    app: str,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    status: int = 200,
    cursor: str = "",
    kept_cursor: str = "",
) -> Response:
    api = ConsoleApi(request, user)
    data = await api.get(_app_api(biz, app))
    if not data.ok:
        return refusal_page(request, user, data, template="app_error.html", section="apps")
    page = await instance_page(
        api, f"{_app_api(biz, app)}/instances", limit=INSTANCES_PER_PAGE, cursor=cursor
    )
    rows: list[dict[str, Any]] = page["items"]
    ids = [int(i["id"]) for i in rows]
    # the addresses of the page's instances only (a page of one when there are none: the
    # answer's mode and counts are what the page needs then)
    network = await api.get(
        f"{_app_api(biz, app)}/network", instance=ids or None, limit=max(1, len(ids))
    )
    if not network.ok:
        return refusal_page(request, user, network, template="app_error.html", section="apps")
    templates = await every_item(api, f"{_app_api(biz, app)}/templates")
    bandwidth = await bandwidth_of(
        api,
        biz=biz,
        app=app,
        instances=rows,
        templates=templates.data if templates.ok else [],
        now=platform_now(request),
    )
    addresses = {a["pod"]: a for a in network.data["items"]} if ids else {}
    # addresses an instance keeps while it is scaled away (release policy app or never), a page
    # at a time; one still being removed is in the table above while it is on its page
    kept: list[dict[str, Any]] = []
    kept_next = None
    if network.data["kept_total"]:
        held = await api.get(
            f"{_app_api(biz, app)}/network",
            kept=True,
            limit=KEPT_PER_PAGE,
            cursor=kept_cursor or None,
        )
        if held.ok:
            on_page = {str(i["name"]) for i in rows}
            kept = [a for a in held.data["items"] if a["pod"] not in on_page]
            kept_next = held.data.get("next_cursor")
    here = f"/console/b/{biz}/apps/{app}/network"
    stay = {"cursor": cursor} if cursor else {}
    kept_links = {
        "next": f"{here}?{urlencode({**stay, 'kept_cursor': kept_next})}" if kept_next else "",
        "first": f"{here}?{urlencode(stay)}" if kept_cursor else "",
    }
    shown = values or {"mode": network.data["mode"], "ip_release": network.data["ip_release"] or ""}
    return render(
        request,
        user,
        "app_network.html",
        {
            "biz": biz,
            "app": data.data,
            "tab": "network",
            "network": network.data,
            "instances": rows,
            "links": instance_links(here, query={}, page=page),
            "total": page["total"],
            "addresses": addresses,
            "kept": kept,
            "kept_total": network.data["kept_total"],
            "kept_links": kept_links,
            "bandwidth": bandwidth,
            "write": await _may_write(api, user, biz),
            "values": shown,
            "errors": errors or {},
            "modes": MODES,
            "policies": POLICIES,
        },
        section="apps",
        status=status,
    )


@router.get("/console/b/{biz}/apps/{app}/network")
async def app_network(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    cursor: Cursor = "",
    kept_cursor: Cursor = "",
) -> Response:
    return await _app_network_page(
        request, user, biz=biz, app=app, cursor=cursor, kept_cursor=kept_cursor
    )


@router.post("/console/b/{biz}/apps/{app}/network", response_model=None)
async def app_network_set(request: Request, user: User, biz: Biz, app: AppName) -> Response:
    """Add a version with the chosen network and make it the default."""
    form = await request.form()
    values = {
        "mode": str(form.get("mode") or "")[:40],
        "ip_release": str(form.get("ip_release") or "")[:40],
    }
    _ = translator(user.language)
    api = ConsoleApi(request, user)
    current = await api.get(f"{_app_api(biz, app)}/network", limit=1)  # its mode and policy
    if not current.ok:
        return refusal_page(request, user, current, template="app_error.html", section="apps")
    if not await _may_write(api, user, biz):
        # the API would refuse both calls below; say so before trying
        refused = ApiResult(403, {"message": _("developers and above change an app's network")})
        return refusal_page(request, user, refused, template="app_error.html", section="apps")
    errors = {
        k: _(v)
        for k, v in network_form_errors(values["mode"], values["ip_release"], current.data).items()
    }
    if not errors:
        app_row = await api.get(_app_api(biz, app))
        templates = await every_item(api, f"{_app_api(biz, app)}/templates")
        if not app_row.ok or not templates.ok:
            errors["form"] = app_row.error or templates.error
        else:
            default = app_row.data["default_template"]
            by_name = {t["name"]: t for t in templates.data}
            name = next_version(default, values["mode"], by_name)
            body = template_with_network(
                by_name[default], name=name, mode=values["mode"], policy=values["ip_release"]
            )
            added = await api.post(f"{_app_api(biz, app)}/templates", body)
            if added.ok:
                switched = await api.patch(_app_api(biz, app), {"default_template": name})
                if switched.ok:
                    return redirect(
                        _app_page(biz, app),
                        ok=_(
                            "Version {name} with network {mode} is the default now; upgrade "
                            "the instances to move them to it",
                            name=name,
                            mode=values["mode"],
                        ),
                    )
                return redirect(_app_page(biz, app), error=switched.error)
            if added.status == 403:
                return refusal_page(request, user, added, template="app_error.html", section="apps")
            fields = added.field_errors
            errors = {
                key: fields[api_key]
                for key, api_key in (("mode", "network_mode"), ("ip_release", "ip_release"))
                if api_key in fields
            }
            if not errors:
                errors["form"] = added.error
    return await _app_network_page(
        request, user, biz=biz, app=app, values=values, errors=errors, status=422
    )


# ---------------------------------------------------------------- pools (platform admins)


def _not_admin(request: Request, user: ConsoleUser) -> Response:
    message = translator(user.language)("floating-IP pools are the platform admins'")
    refused = ApiResult(403, {"message": message})
    return refusal_page(request, user, refused, template="network_error.html", section="network")


def subnet_of(labels: Mapping[str, str]) -> str:
    """A node's underlay subnet from its label (``10.0.3.0_24`` -> ``10.0.3.0/24``)."""
    return labels.get(SUBNET_LABEL, "").replace("_", "/")


async def _pools_page(
    request: Request,
    user: ConsoleUser,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    clusters = await every_item(api, "/api/v1/clusters")
    if not clusters.ok:
        return refusal_page(
            request, user, clusters, template="network_error.html", section="network"
        )
    shown: list[dict[str, Any]] = []
    for c in sorted(clusters.data, key=lambda c: c["name"]):
        pools = await every_item(api, f"/api/v1/clusters/{quote(c['name'])}/ip-pools")
        nodes = await every_item(api, f"/api/v1/clusters/{quote(c['name'])}/nodes")
        by_subnet = {p["subnet"]: p["name"] for p in pools.data} if pools.ok else {}
        node_rows = [
            {
                "name": n["name"],
                "subnet": subnet_of(n.get("labels") or {}),
                "pool": by_subnet.get(subnet_of(n.get("labels") or {}), ""),
            }
            for n in (nodes.data if nodes.ok else [])
        ]
        shown.append(
            {
                "name": c["name"],
                "pools": pools.data if pools.ok else [],
                "error": pools.error,
                "nodes": sorted(node_rows, key=lambda n: n["name"]),
                "nodes_error": nodes.error,
            }
        )
    first = shown[0]["name"] if shown else ""
    return render(
        request,
        user,
        "network.html",
        {
            "clusters": shown,
            "values": values or {"cluster": first},
            "errors": errors or {},
        },
        section="network",
        status=status,
    )


def pool_form_errors(result: ApiResult) -> dict[str, str]:
    """A refused pool on its form's fields: a 422 of the body's schema names them as usual; the
    domain's address checks name one field in ``details.field`` (``gaia.domain.network``)."""
    errors = {k: v for k, v in result.field_errors.items() if k in POOL_FIELDS}
    details = result.data.get("details") if isinstance(result.data, dict) else None
    if isinstance(details, dict) and details.get("field") in POOL_FIELDS:
        errors.setdefault(str(details["field"]), result.error)
    return errors


@router.get("/console/network")
async def pools_list(request: Request, user: User) -> Response:
    if not user.is_admin:
        return _not_admin(request, user)
    return await _pools_page(request, user)


@router.post("/console/network/pools", response_model=None)
async def pool_create(request: Request, user: User) -> Response:
    if not user.is_admin:
        return _not_admin(request, user)
    form = await request.form()
    values = {k: str(form.get(k) or "").strip()[:200] for k in POOL_FIELDS}
    body: dict[str, Any] = {"name": values["name"], "subnet": values["subnet"]}
    body |= {k: values[k] for k in ("zone", "gateway", "range_start", "range_end") if values[k]}
    result = await ConsoleApi(request, user).post(
        f"/api/v1/clusters/{quote(values['cluster'])}/ip-pools", body
    )
    if result.ok:
        _ = translator(user.language)
        return redirect(
            "/console/network",
            ok=_(
                "Created pool {name} of {subnet}",
                name=result.data["name"],
                subnet=result.data["subnet"],
            ),
        )
    errors = pool_form_errors(result)
    if not errors:
        errors["form"] = result.error
    return await _pools_page(request, user, values=values, errors=errors, status=422)


@router.post("/console/network/{cluster}/pools/{pool}/delete", response_model=None)
async def pool_delete(request: Request, user: User, cluster: Name, pool: Name) -> Response:
    if not user.is_admin:
        return _not_admin(request, user)
    result = await ConsoleApi(request, user).delete(
        f"/api/v1/clusters/{quote(cluster)}/ip-pools/{quote(pool)}"
    )
    if result.ok:
        _ = translator(user.language)
        return redirect("/console/network", ok=_("Deleted pool {name}", name=pool))
    return redirect("/console/network", error=result.error)
