"""Console pages: apps — the list across businesses, creation, and one app's tabs.

**Reads.** Every page asks the API as the logged-in user (``ConsoleApi``) and filters and pages
what comes back here, on the server: the apps list gathers ``GET /businesses/{biz}/apps`` for
every business the user sees. An app's instance table is one call of ``GET .../instances``
with the filters (status, version, part of the node's or the instance's name), the page size
and the cursor the browser came with: the API filters, counts (per status, per version) and
pages by keyset, so a 10,000-instance app costs one page, and the table's links carry the
API's ``next_cursor`` and ``prev_cursor``. Events, operation records and upgrades are paged
by the API itself too, so their pages also carry ``cursor`` instead of a page number (an
upgrade's page shows each one's instances counted by the API, and the upgrade in progress).

**Actions.** Each action is a ``<form method="post">`` to a route below that calls the API and
redirects back with the API's message (POST/redirect/GET). Scale in by a count removes the
newest instances: it reads the API's list newest first (``order=newest``) until it has as many
ids as asked, a page of a few, never the whole list. The instance table is one form whose
buttons post to different routes (``formaction``): gray-upgrade, delete (scale in by ids) or
restart the ticked instances. Stop and start are app-level: the API has no per-instance stop.

**Live parts.** While an app is busy (an upgrade runs, or fewer instances are ready than wanted)
the instance table and the upgrade panel poll their own fragment (``?fragment=1``) every two
seconds with htmx; the fragment carries the polling attributes itself, so polling stops on its
own once the app is quiet. Row checkboxes have stable ids and ``hx-preserve``: a refresh does
not untick what the user chose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote, urlencode

import yaml
from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import Response

from gaia.console.listing import Cursor, cursor_page, every_item, instance_links, paginate
from gaia.console.pages.network import bandwidth_of
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    PageNumber,
    PageSize,
    Translate,
    User,
    permissions_in,
    platform_now,
    plural_translator,
    redirect,
    refusal_page,
    render,
    translator,
)
from gaia.domain.rbac import Permission, Role, allows
from gaia.domain.upgrades import Prepull
from gaia.domain.yaml_safe import MAX_YAML_BYTES, UnsafeYaml, load_untrusted_yaml

router = APIRouter(include_in_schema=False)
Biz = Annotated[str, Path(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", max_length=63)]
AppName = Annotated[str, Path(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", max_length=40)]
Text = Annotated[str, Query(max_length=200)]
Ids = Annotated[list[int], Form()]

ACTIVE_UPGRADE = {"Running", "Paused", "RollingBack"}


# ---------------------------------------------------------------- helpers


def _base(biz: str, app: str) -> str:
    return f"/console/b/{biz}/apps/{app}"


def _api_path(biz: str, app: str = "") -> str:
    return f"/api/v1/businesses/{biz}/apps" + (f"/{app}" if app else "")


async def _every(api: ConsoleApi, path: str) -> list[dict[str, Any]]:
    """All items of a short API list (businesses, clusters) for a choice; none if refused."""
    result = await every_item(api, path)
    return list(result.data) if result.ok else []


def _failed(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="app_error.html", section="apps")


def _upgrade_active(app: Mapping[str, Any]) -> bool:
    upgrade = app.get("upgrade") or {}
    return upgrade.get("state") in ACTIVE_UPGRADE


def _busy(app: Mapping[str, Any]) -> bool:
    """Worth polling: an upgrade runs, or the app is running with fewer ready than wanted."""
    if _upgrade_active(app):
        return True
    ready = app.get("ready")
    return app.get("state") == "running" and ready is not None and ready != app.get("replicas")


def _ids_text(ids: list[int]) -> str:
    shown = ", ".join(map(str, sorted(ids)[:10]))
    return shown + (" …" if len(ids) > 10 else "")


async def _load_app(
    request: Request, user: ConsoleUser, api: ConsoleApi, biz: str, app: str
) -> dict[str, Any] | Response:
    """The app as the API shows it, or the error page to answer instead."""
    result, may = await asyncio.gather(api.get(_api_path(biz, app)), permissions_in(api, biz))
    if not result.ok:
        return _failed(request, user, result)
    data: dict[str, Any] = result.data
    # the app's pages show its actions only to whom may take them (viewers see none)
    data["may_write"] = "app.write" in may
    return data


# ---------------------------------------------------------------- the apps list


@router.get("/console/apps")
async def apps_list(
    request: Request,
    user: User,
    biz: Text = "",
    cluster: Text = "",
    state: Text = "",
    name: Text = "",
    page: PageNumber = 1,
    size: PageSize = 50,
) -> Response:
    api = ConsoleApi(request, user)
    businesses = [b["name"] for b in await _every(api, "/api/v1/businesses")]
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for b in businesses:
        if biz and b != biz:
            continue
        result = await every_item(api, _api_path(b))
        if not result.ok:
            errors.append(f"{b}: {result.error}")
            continue
        rows.extend(result.data)
    clusters = sorted({r["cluster"] for r in rows})
    if cluster:
        rows = [r for r in rows if r["cluster"] == cluster]
    if state:
        rows = [r for r in rows if r["state"] == state]
    if name:
        rows = [r for r in rows if name.lower() in r["name"]]
    rows.sort(key=lambda r: (r["business"], r["name"]))
    query = {"biz": biz, "cluster": cluster, "state": state, "name": name, "size": size}
    return render(
        request,
        user,
        "apps.html",
        {
            "paged": paginate(rows, page=page, size=size, query=query),
            "businesses": businesses,
            "clusters": clusters,
            "states": ["running", "stopped", "deleting"],
            "filters": query,
            "errors": errors,
            "active_states": ACTIVE_UPGRADE,
        },
        section="apps",
    )


# ---------------------------------------------------------------- create


FORM_FIELDS = (
    "name",
    "cluster",
    "replicas",
    "description",
    "version",
    "image",
    "cpu",
    "memory",
    "gpu",
    "port",
    "probe",
    "probe_path",
    "domain",
    "prepull",
)
# where a 422's field path lands in the form (longest prefix wins)
ERROR_FIELDS = {
    "name": "name",
    "cluster": "cluster",
    "replicas": "replicas",
    "description": "description",
    "domain": "domain",
    "prepull": "prepull",
    "templates.0.name": "version",
    "templates.0.image": "image",
    "templates.0.resources.cpu": "cpu",
    "templates.0.resources.memory": "memory",
    "templates.0.resources.gpu": "gpu",
    "templates.0.ports": "port",
    "templates.0.readiness": "probe",
    "templates.0": "template",
    "templates": "template",
}


def _form_errors(field_errors: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path, message in field_errors.items():
        key = next(
            (
                ERROR_FIELDS[p]
                for p in sorted(ERROR_FIELDS, key=len, reverse=True)
                if path == p or path.startswith(p + ".")
            ),
            "template",
        )
        out.setdefault(key, message)
    return out


def _number(text: str) -> Any:
    """A number for the API, or the text as typed so that the API's 422 names the field."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def template_from_form(values: Mapping[str, str]) -> dict[str, Any]:
    """The API's ``TemplateIn`` from the simple form: one port, one readiness probe."""
    resources: dict[str, Any] = {
        "cpu": _number(values.get("cpu") or "0"),
        "memory": _number(values.get("memory") or "0"),
    }
    if (values.get("gpu") or "").strip() not in ("", "0"):
        resources["gpu"] = _number(values["gpu"])
    template: dict[str, Any] = {
        "name": values.get("version", "").strip(),
        "image": values.get("image", "").strip(),
        "resources": resources,
    }
    port = (values.get("port") or "").strip()
    if port:
        template["ports"] = [{"port": _number(port)}]
    probe = values.get("probe") or ""
    if probe in ("http", "tcp"):
        template["readiness"] = {"kind": probe, "port": _number(port or "0")}
        if probe == "http":
            template["readiness"]["path"] = values.get("probe_path") or "/"
    return template


def body_from_form(values: Mapping[str, str]) -> dict[str, Any]:
    """The API's ``AppIn`` from the simple form: one template (``template_from_form``)."""
    template = template_from_form(values)
    body: dict[str, Any] = {
        "name": values.get("name", "").strip(),
        "cluster": values.get("cluster", "").strip(),
        "replicas": _number(values.get("replicas") or "1"),
        "templates": [template],
    }
    # the form's select always posts ``prepull``; a post without it leaves the API's default
    for optional in ("description", "domain", "prepull"):
        if (values.get(optional) or "").strip():
            body[optional] = values[optional].strip()
    return body


def body_from_yaml(text: str) -> tuple[Any, str]:
    """The API body from YAML, or a syntax error naming the line; ``UnsafeYaml`` when the text
    breaks a rule of ``load_untrusted_yaml``: no anchors or aliases (a few hundred bytes of them
    expand to megabytes, the "billion laughs"), at most ``MAX_YAML_BYTES``, bounded nesting."""
    try:
        return load_untrusted_yaml(text), ""
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return None, f"{where}{exc.problem or exc}"
    except yaml.YAMLError as exc:
        return None, str(exc)


class PrepullChoice(NamedTuple):
    """One value of an app's ``prepull`` as the pages offer it: the API's word, a label and a
    hint that says what it costs, in the user's language."""

    value: str
    label: str
    hint: str


def prepull_choices(_: Translate) -> list[PrepullChoice]:
    """Every ``Prepull`` value, in the enum's order (the default first), worded once for the
    creation form and the overview."""
    words = {
        Prepull.UPGRADES: (
            _("During upgrades (default)"),
            _(
                "While a gray upgrade runs, its target image is pulled onto the nodes of the "
                "next batches, so a batch waits for its restart only."
            ),
        ),
        Prepull.TEMPLATES: (
            _("Upgrades and the newest version"),
            _(
                "That, and with no upgrade running, the newest version no instance runs yet is "
                "pulled onto the nodes of the instances that would move to it, so the first "
                "batch of its upgrade does not wait either. Costs disk and network on those "
                "nodes for a version that may never roll out."
            ),
        ),
        Prepull.OFF: (
            _("Off"),
            _("Nothing is pulled ahead of time: each instance pulls its image in its turn."),
        ),
    }
    return [PrepullChoice(choice.value, *words[choice]) for choice in Prepull]


async def _may_create_apps(api: ConsoleApi, biz: str) -> ApiResult:
    """Whether the user may create apps in ``biz``, asked before anything they posted is parsed:
    the API's own answer for the business (404 for one they do not see) and their role there."""
    if not biz:
        return ApiResult(422, {"message": "choose a business first"})
    result = await api.get(f"/api/v1/businesses/{quote(biz, safe='')}")
    if not result.ok or not isinstance(result.data, dict):
        return result
    role = result.data.get("role")
    if role is None or not allows(Role(role), Permission.APP_WRITE):
        message = f"your role '{role}' in business '{biz}' does not allow 'app.write'"
        return ApiResult(403, {"code": "forbidden", "message": message})
    return result


YAML_EXAMPLE = """\
name: web
cluster: sim-1
replicas: 2
templates:
  - name: v1
    image: registry.example.com/web:1.0
    resources: {cpu: 1, memory: 1024}
    ports: [{port: 8080}]
    readiness: {kind: http, port: 8080, path: /ready}
"""


async def _new_context(api: ConsoleApi, biz: str) -> dict[str, Any]:
    businesses = [b for b in await _every(api, "/api/v1/businesses")]
    clusters = [c["name"] for c in await _every(api, "/api/v1/clusters")]
    return {"biz": biz, "businesses": businesses, "clusters": clusters}


@router.get("/console/apps/new")
async def app_new(
    request: Request, user: User, biz: Annotated[str, Query(max_length=63)] = ""
) -> Response:
    api = ConsoleApi(request, user)
    context = await _new_context(api, biz)
    if biz and biz not in {b["name"] for b in context["businesses"]}:
        return _failed(request, user, ApiResult(404, {"message": f"business '{biz}' not found"}))
    values = {
        "replicas": "1",
        "version": "v1",
        "cpu": "1",
        "memory": "1024",
        "probe": "none",
        "prepull": Prepull.UPGRADES.value,
    }
    if context["clusters"]:
        values["cluster"] = context["clusters"][0]
    return render(
        request,
        user,
        "app_new.html",
        {
            **context,
            "values": values,
            "errors": {},
            "mode": "form",
            "yaml_text": YAML_EXAMPLE,
            "prepull_choices": prepull_choices(translator(user.language)),
        },
        section="apps",
    )


@router.post("/console/apps/new", response_model=None)
async def app_create(request: Request, user: User) -> Response:
    form = await request.form()
    biz = str(form.get("biz") or "")
    mode = "yaml" if form.get("mode") == "yaml" else "form"
    values = {k: str(form.get(k) or "") for k in FORM_FIELDS}
    yaml_text = str(form.get("yaml") or "")
    api = ConsoleApi(request, user)
    _ = translator(user.language)
    errors: dict[str, str] = {}
    body: Any = None
    allowed = await _may_create_apps(api, biz)
    if not allowed.ok:
        # refused before the form is parsed: a user who may not create apps here costs us no
        # YAML parsing, and learns nothing from how their YAML would have been read
        return _failed(request, user, allowed)
    if mode == "yaml":
        try:
            body, problem = body_from_yaml(yaml_text)
        except UnsafeYaml as exc:
            body, problem = None, ""
            errors["yaml"] = exc.message
            yaml_text = yaml_text[:MAX_YAML_BYTES]  # the page echoes what was typed, bounded
        if problem:
            errors["yaml"] = _("YAML syntax error at {where}", where=problem)
        elif "yaml" not in errors and not isinstance(body, dict):
            errors["yaml"] = _("The YAML must be a mapping (the API's JSON body).")
    else:
        body = body_from_form(values)
    if not errors:
        result = await api.post(_api_path(biz), body)
        if result.ok:
            name = result.data["name"]
            return redirect(_base(biz, name), ok=_("App {name} created", name=name))
        errors = _form_errors(result.field_errors) if result.status == 422 else {}
        if mode == "yaml" and errors:
            errors = {"yaml": "; ".join(f"{k}: {v}" for k, v in result.field_errors.items())}
        if not errors or result.status != 422:
            errors["form"] = result.error
    context = await _new_context(api, biz)
    return render(
        request,
        user,
        "app_new.html",
        {
            **context,
            "values": values,
            "errors": errors,
            "mode": mode,
            "yaml_text": yaml_text,
            "prepull_choices": prepull_choices(_),
        },
        section="apps",
        status=422,
    )


# ---------------------------------------------------------------- one app: overview


@router.get("/console/b/{biz}/apps/{app}")
async def app_overview(request: Request, user: User, biz: Biz, app: AppName) -> Response:
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    templates = await every_item(api, f"{_api_path(biz, app)}/templates")
    service = await api.get(f"{_api_path(biz, app)}/service")
    # the API counts every instance; one instance's page carries the counts
    counted = await api.get(f"{_api_path(biz, app)}/instances", limit=1)
    counts = counted.data if counted.ok else {}
    return render(
        request,
        user,
        "app_overview.html",
        {
            "biz": biz,
            "app": data,
            "tab": "overview",
            "templates": templates.data if templates.ok else [],
            "service": service.data if service.ok else None,
            "states": sorted(counts.get("by_status", {}).items()),
            "running_versions": counts.get("by_version", {}),
            "prepull_choices": prepull_choices(translator(user.language)),
        },
        section="apps",
    )


@router.post("/console/b/{biz}/apps/{app}/prepull", response_model=None)
async def app_prepull(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    prepull: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """What the platform pulls onto the app's nodes ahead of time: ``PATCH`` of ``prepull``.
    The value is one of the choices before the API sees it; a viewer gets the API's 403."""
    _ = translator(user.language)
    url = _base(biz, app)
    choices = {c.value: c for c in prepull_choices(_)}
    if prepull not in choices:
        return redirect(url, error=_("Choose what to pre-pull: upgrades, templates or off."))
    result = await ConsoleApi(request, user).patch(_api_path(biz, app), {"prepull": prepull})
    if not result.ok:
        return redirect(url, error=result.error)
    return redirect(url, ok=_("Pre-pull images: {choice}", choice=choices[prepull].label))


# ---------------------------------------------------------------- instances


LIVE_WINDOW_S = 120  # the newest value a collection (every 15 s by default) has written


async def _latest(api: ConsoleApi, metric: str, biz: str, app: str, now: float) -> dict[str, float]:
    """Each instance's newest value of ``metric`` (the last two minutes), by instance name;
    empty when nothing is collected."""
    window = {"start": now - LIVE_WINDOW_S, "end": now, "step": 15, "business": biz, "app": app}
    result = await api.get("/api/v1/monitoring/series", metric=metric, **window)
    out: dict[str, float] = {}
    if result.ok and isinstance(result.data, list):
        for row in result.data:
            name = (row.get("labels") or {}).get("instance")
            points = row.get("points") or []
            if name and points:
                out[name] = float(points[-1][1])
    return out


def age_of(created: Any, now: float) -> str:
    """How long ago ``created`` (an ISO time) was, in its largest units: ``45s``, ``12m``,
    ``3h 5m``, ``4d 2h``; "" when unknown."""
    if not created:
        return ""
    try:
        seconds = int(now - dt.datetime.fromisoformat(str(created)).timestamp())
    except ValueError:
        return ""
    seconds = max(seconds, 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes}m"
    if days < 1:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


@router.get("/console/b/{biz}/apps/{app}/instances")
async def app_instances(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    status: Text = "",
    version: Text = "",
    node: Text = "",
    name: Text = "",
    cursor: Cursor = "",
    size: PageSize = 50,
    fragment: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    """One page of the instances, as the API pages, filters and counts them: one call however
    many instances the app has."""
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    filters = {"status": status, "version": version, "node": node, "name": name}
    result = await api.get(
        f"{_api_path(biz, app)}/instances", **filters, limit=size, cursor=cursor or None
    )
    if not result.ok:
        return _failed(request, user, result)
    page: dict[str, Any] = result.data
    rows: list[dict[str, Any]] = page["items"]
    now = platform_now(request)
    cpu, memory, templates = await asyncio.gather(
        _latest(api, "gaia_instance_cpu_usage_percent", biz, app, now),
        _latest(api, "gaia_instance_memory_usage_bytes", biz, app, now),
        every_item(api, f"{_api_path(biz, app)}/templates"),
    )
    for row in rows:
        row["age"] = age_of(row.get("created_at"), now)
        row["cpu_now"] = cpu.get(row["name"])
        row["memory_now"] = memory.get(row["name"])
    bandwidth = await bandwidth_of(
        api,
        biz=biz,
        app=app,
        instances=rows,
        templates=templates.data if templates.ok else [],
        now=now,
    )
    here = f"{_base(biz, app)}/instances"
    query = {**filters, "size": size}
    links = instance_links(here, query=query, page=page)
    this_page = (
        here
        + "?"
        + urlencode({k: v for k, v in {**query, "cursor": cursor}.items() if v not in ("", None)})
    )
    context = {
        "biz": biz,
        "app": data,
        "tab": "instances",
        "instances": rows,
        "links": links,
        "bandwidth": bandwidth,
        "filters": query,
        "by_status": page["by_status"],
        "matched": page["matched"],
        "total": page["total"],
        "busy": _busy(data),
        "fragment_url": this_page + "&fragment=1",
        "back": this_page,
    }
    template = "app_instances_table.html" if fragment else "app_instances.html"
    return render(request, user, template, context, section="apps")


def _back(form_back: str, biz: str, app: str, tab: str = "instances") -> str:
    base = f"{_base(biz, app)}/{tab}"
    return form_back if form_back.startswith(base) else base


Back = Annotated[str, Form(max_length=1000)]


@router.post("/console/b/{biz}/apps/{app}/instances/upgrade", response_model=None)
async def upgrade_chosen(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    version: Annotated[str, Form(max_length=63)] = "",
    max_unavailable: Annotated[int, Form(ge=1, le=10_000)] = 1,
    ids: Annotated[list[int] | None, Form()] = None,
    back: Back = "",
) -> Response:
    _ = translator(user.language)
    url = _back(back, biz, app)
    if not ids:
        return redirect(url, error=_("Choose the instances to upgrade first."))
    if not version:
        return redirect(url, error=_("Choose the version to upgrade to."))
    result = await ConsoleApi(request, user).post(
        f"{_api_path(biz, app)}/upgrades",
        {"template": version, "instance_ids": ids, "max_unavailable": max_unavailable},
    )
    if not result.ok:
        return redirect(url, error=result.error)
    return redirect(
        url,
        ok=plural_translator(user.language)(
            "Upgrade {id} started: {count} instance to {version}",
            "Upgrade {id} started: {count} instances to {version}",
            len(ids),
            id=result.data["id"],
            version=version,
        ),
    )


@router.post("/console/b/{biz}/apps/{app}/instances/delete", response_model=None)
async def delete_chosen(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    ids: Annotated[list[int] | None, Form()] = None,
    back: Back = "",
    confirmed: Annotated[int, Form(ge=0, le=1)] = 0,
) -> Response:
    """First answer a page that says how many instances (and which) will go; then delete."""
    _ = translator(user.language)
    url = _back(back, biz, app)
    if not ids:
        return redirect(url, error=_("Choose the instances to delete first."))
    api = ConsoleApi(request, user)
    if not confirmed:
        data = await _load_app(request, user, api, biz, app)
        if isinstance(data, Response):
            return data
        return render(
            request,
            user,
            "app_delete_confirm.html",
            {"biz": biz, "app": data, "tab": "instances", "ids": sorted(ids), "back": url},
            section="apps",
        )
    result = await api.post(f"{_api_path(biz, app)}/scale-in", {"instance_ids": ids})
    if not result.ok:
        return redirect(url, error=result.error)
    return redirect(
        url,
        ok=plural_translator(user.language)(
            "Deleted {count} instance: {ids}",
            "Deleted {count} instances: {ids}",
            len(ids),
            ids=_ids_text(ids),
        ),
    )


@router.post("/console/b/{biz}/apps/{app}/instances/restart", response_model=None)
async def restart_chosen(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    ids: Annotated[list[int] | None, Form()] = None,
    back: Back = "",
) -> Response:
    _ = translator(user.language)
    url = _back(back, biz, app)
    if not ids:
        return redirect(url, error=_("Choose the instances to restart first."))
    if len(ids) > 100:
        return redirect(url, error=_("Restart at most 100 instances at a time."))
    api = ConsoleApi(request, user)
    failures = []
    for iid in ids:
        result = await api.post(f"{_api_path(biz, app)}/instances/{iid}/restart")
        if not result.ok:
            failures.append(f"{iid}: {result.error}")
    if failures:
        return redirect(url, error="; ".join(failures[:5]))
    return redirect(
        url,
        ok=plural_translator(user.language)(
            "Restarted {count} instance: {ids}",
            "Restarted {count} instances: {ids}",
            len(ids),
            ids=_ids_text(ids),
        ),
    )


async def _stop_or_start_chosen(
    request: Request,
    user: ConsoleUser,
    biz: str,
    app: str,
    ids: list[int] | None,
    back: str,
    *,
    stop: bool,
) -> Response:
    _ = translator(user.language)
    url = _back(back, biz, app)
    if not ids:
        return redirect(url, error=_("Choose the instances first."))
    verb = "stop" if stop else "start"
    result = await ConsoleApi(request, user).post(
        f"{_api_path(biz, app)}/instances/{verb}", {"instance_ids": sorted(set(ids))}
    )
    if not result.ok:
        return redirect(url, error=result.error)
    n_ = plural_translator(user.language)
    chosen = sorted(set(ids))
    if stop:
        message = n_("Stopped {count} instance: {ids}", "Stopped {count} instances: {ids}",
                     len(chosen), ids=_ids_text(chosen))  # fmt: skip
    else:
        message = n_("Started {count} instance: {ids}", "Started {count} instances: {ids}",
                     len(chosen), ids=_ids_text(chosen))  # fmt: skip
    return redirect(url, ok=message)


@router.post("/console/b/{biz}/apps/{app}/instances/stop", response_model=None)
async def stop_chosen(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    ids: Annotated[list[int] | None, Form()] = None,
    back: Back = "",
) -> Response:
    return await _stop_or_start_chosen(request, user, biz, app, ids, back, stop=True)


@router.post("/console/b/{biz}/apps/{app}/instances/start", response_model=None)
async def start_chosen(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    ids: Annotated[list[int] | None, Form()] = None,
    back: Back = "",
) -> Response:
    return await _stop_or_start_chosen(request, user, biz, app, ids, back, stop=False)


@router.post("/console/b/{biz}/apps/{app}/scale-out", response_model=None)
async def scale_out(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    count: Annotated[int, Form(ge=1, le=10_000)],
    version: Annotated[str, Form(max_length=63)] = "",
    back: Back = "",
) -> Response:
    _ = translator(user.language)
    url = _back(back, biz, app)
    body: dict[str, Any] = {"count": count}
    if version:
        body["template"] = version
    result = await ConsoleApi(request, user).post(f"{_api_path(biz, app)}/scale-out", body)
    if not result.ok:
        return redirect(url, error=result.error)
    return redirect(
        url,
        ok=plural_translator(user.language)(
            "Added {count} instance", "Added {count} instances", count
        ),
    )


async def newest_wanted(api: ConsoleApi, path: str, *, count: int) -> ApiResult:
    """The ids of the ``count`` newest instances the app wants (an instance still in the
    cluster that it no longer wants has no template), highest first: the API's list newest
    first, page by page until there are enough, so removing one of 10,000 reads one short page."""
    found: list[int] = []
    cursor = None
    while len(found) < count:
        # a few more than needed: instances being removed are listed too
        result = await api.get(path, order="newest", limit=min(500, count + 10), cursor=cursor)
        if not result.ok:
            return result
        found += [r["id"] for r in result.data["items"] if r["template"]]
        cursor = result.data.get("next_cursor")
        if not cursor:
            break
    return ApiResult(200, found[:count])


@router.post("/console/b/{biz}/apps/{app}/scale-in", response_model=None)
async def scale_in(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    count: Annotated[int, Form(ge=1, le=10_000)],
    back: Back = "",
) -> Response:
    """Remove ``count`` instances, the newest (highest ids) first."""
    _ = translator(user.language)
    url = _back(back, biz, app)
    api = ConsoleApi(request, user)
    result = await newest_wanted(api, f"{_api_path(biz, app)}/instances", count=count)
    if not result.ok:
        return redirect(url, error=result.error)
    wanted: list[int] = result.data
    if not wanted:
        return redirect(url, error=_("The app has no instances to remove."))
    done = await api.post(f"{_api_path(biz, app)}/scale-in", {"instance_ids": wanted})
    if not done.ok:
        return redirect(url, error=done.error)
    return redirect(
        url,
        ok=plural_translator(user.language)(
            "Deleted {count} instance: {ids}",
            "Deleted {count} instances: {ids}",
            len(wanted),
            ids=_ids_text(wanted),
        ),
    )


async def _app_verb(
    request: Request, user: ConsoleUser, *, biz: str, app: str, verb: str, back: str
) -> Response:
    """Start, stop or delete the whole app (the API has no per-instance stop or start)."""
    _ = translator(user.language)
    api = ConsoleApi(request, user)
    if verb == "delete":
        result = await api.delete(_api_path(biz, app))
        if not result.ok:
            return redirect(_base(biz, app), error=result.error)
        return redirect("/console/apps", ok=_("Deleting app {name}", name=app))
    url = back if back.startswith(_base(biz, app)) else _base(biz, app)
    result = await api.post(f"{_api_path(biz, app)}/{verb}")
    if not result.ok:
        return redirect(url, error=result.error)
    message = _("App {name} started") if verb == "start" else _("App {name} stopped")
    return redirect(url, ok=message.format(name=app))


@router.post("/console/b/{biz}/apps/{app}/start", response_model=None)
async def app_start(
    request: Request, user: User, biz: Biz, app: AppName, back: Back = ""
) -> Response:
    return await _app_verb(request, user, biz=biz, app=app, verb="start", back=back)


@router.post("/console/b/{biz}/apps/{app}/stop", response_model=None)
async def app_stop(
    request: Request, user: User, biz: Biz, app: AppName, back: Back = ""
) -> Response:
    return await _app_verb(request, user, biz=biz, app=app, verb="stop", back=back)


@router.post("/console/b/{biz}/apps/{app}/delete", response_model=None)
async def app_delete(request: Request, user: User, biz: Biz, app: AppName) -> Response:
    return await _app_verb(request, user, biz=biz, app=app, verb="delete", back="")


# ---------------------------------------------------------------- upgrades


@router.get("/console/b/{biz}/apps/{app}/upgrade")
async def app_upgrade(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    cursor: Cursor = "",
    size: PageSize = 20,
    fragment: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    """The upgrade in progress and one page of the app's upgrades, newest first, as the API
    pages them (each one's instances counted, not listed): a page costs one call, however many
    upgrades of however many instances the app has had."""
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    here = f"{_base(biz, app)}/upgrade"
    listed = await cursor_page(
        api,
        f"{_api_path(biz, app)}/upgrades",
        filters={},
        cursor=cursor,
        limit=size,
        keep={"size": size if size != 20 else ""},
        here=here,
    )
    if not listed.result.ok:
        return _failed(request, user, listed.result)
    # the upgrade in progress: on this page, or the app's latest (the app's answer has it with
    # its progress), or, rolled back from an older page, asked for alone
    active_id = listed.data.get("active")
    latest = data.get("upgrade") or {}
    active = next((u for u in listed.items if u["id"] == active_id), None)
    if active is None and active_id is not None:
        if latest.get("id") == active_id:
            active = latest
        else:
            one = await api.get(f"{_api_path(biz, app)}/upgrades/{active_id}")
            active = one.data if one.ok else None
    templates = await every_item(api, f"{_api_path(biz, app)}/templates")
    newest = templates.data[-1] if templates.ok and templates.data else None
    own = {**({"cursor": cursor} if cursor else {}), **({"size": size} if size != 20 else {})}
    context = {
        "biz": biz,
        "app": data,
        "tab": "upgrade",
        "upgrades": listed.items,
        "first_page": listed.first,
        "older": listed.older,
        "newest": listed.newest,
        "total": listed.data.get("total", len(listed.items)),
        "by_state": listed.data.get("by_state", {}),
        "active": active,
        "busy": active is not None,
        "prefill": prefill_from(newest),
        "fragment_url": f"{here}?{urlencode({**own, 'fragment': 1})}",
    }
    template = "app_upgrade_panel.html" if fragment else "app_upgrade.html"
    return render(request, user, template, context, section="apps")


@router.post("/console/b/{biz}/apps/{app}/upgrade", response_model=None)
async def upgrade_all(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    version: Annotated[str, Form(max_length=63)],
    max_unavailable: Annotated[int, Form(ge=1, le=10_000)] = 1,
) -> Response:
    _ = translator(user.language)
    url = f"{_base(biz, app)}/upgrade"
    result = await ConsoleApi(request, user).post(
        f"{_api_path(biz, app)}/upgrades",
        {"template": version, "all": True, "max_unavailable": max_unavailable},
    )
    if not result.ok:
        return redirect(url, error=result.error)
    return redirect(
        url,
        ok=_(
            "Upgrade {id} started: every instance to {version}",
            id=result.data["id"],
            version=version,
        ),
    )


@router.post("/console/b/{biz}/apps/{app}/upgrades/{upgrade}/{verb}", response_model=None)
async def upgrade_verb(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    upgrade: Annotated[int, Path(ge=1, le=2**31 - 1)],
    verb: Annotated[str, Path(pattern=r"^(pause|resume|rollback)$")],
) -> Response:
    _ = translator(user.language)
    url = f"{_base(biz, app)}/upgrade"
    result = await ConsoleApi(request, user).post(
        f"{_api_path(biz, app)}/upgrades/{upgrade}/{verb}"
    )
    if not result.ok:
        return redirect(url, error=result.error)
    messages = {
        "pause": _("Upgrade {id} paused"),
        "resume": _("Upgrade {id} resumed"),
        "rollback": _("Upgrade {id} is rolling back"),
    }
    return redirect(url, ok=messages[verb].format(id=upgrade))


TEMPLATE_FIELDS = ("version", "image", "cpu", "memory", "gpu", "port", "probe", "probe_path")
TEMPLATE_LABELS = {
    "version": "New version name",
    "image": "Image",
    "cpu": "CPU cores",
    "memory": "Memory (MiB)",
    "gpu": "GPU cards",
    "port": "Port",
    "probe": "Readiness probe",
    "template": "Version",
}


def prefill_from(template: Mapping[str, Any] | None) -> dict[str, str]:
    """Values for the add-version form, copied from an existing template (the newest)."""
    if not template:
        return {"cpu": "1", "memory": "1024", "probe": "none"}
    spec = template.get("spec") or {}
    ports = spec.get("ports") or []
    readiness = spec.get("readiness") or {}
    resources = template.get("resources") or {}
    return {
        "image": str(template.get("image", "")),
        "cpu": str(resources.get("cpu", "")),
        "memory": str(resources.get("memory", "")),
        "gpu": ""
        if str(resources.get("gpu", "0")) in ("0", "0.0", "0.00")
        else str(resources["gpu"]),
        "port": str(ports[0]["port"]) if ports else "",
        "probe": str(readiness.get("kind", "none")) if readiness else "none",
        "probe_path": str(readiness.get("path", "")) if readiness else "",
    }


@router.post("/console/b/{biz}/apps/{app}/templates", response_model=None)
async def add_version(request: Request, user: User, biz: Biz, app: AppName) -> Response:
    """Add a version (templates are immutable: a change is a new version), then upgrade to it."""
    _ = translator(user.language)
    form = await request.form()
    values = {k: str(form.get(k) or "") for k in TEMPLATE_FIELDS}
    url = f"{_base(biz, app)}/upgrade"
    result = await ConsoleApi(request, user).post(
        f"{_api_path(biz, app)}/templates", template_from_form(values)
    )
    if not result.ok:
        fields = _form_errors({f"templates.0.{k}": v for k, v in result.field_errors.items()})
        detail = "; ".join(f"{_(TEMPLATE_LABELS.get(k, k))}: {v}" for k, v in fields.items())
        return redirect(url, error=detail or result.error)
    return redirect(url, ok=_("Version {name} added", name=result.data["name"]))


# ---------------------------------------------------------------- events and records


@router.get("/console/b/{biz}/apps/{app}/events")
async def app_events(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    type: Annotated[str, Query(pattern=r"^(|Normal|Warning)$")] = "",
    cursor: Annotated[str, Query(max_length=400)] = "",
    size: PageSize = 50,
) -> Response:
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    listed = await cursor_page(
        api,
        "/api/v1/events",
        filters={"business": biz, "app": app, "type": type},
        cursor=cursor,
        limit=size,
        keep={"type": type, "size": size},
        here=f"{_base(biz, app)}/events",
    )
    if not listed.result.ok:
        return _failed(request, user, listed.result)
    return render(
        request,
        user,
        "app_events.html",
        {
            "biz": biz,
            "app": data,
            "tab": "events",
            "rows": listed.items,
            "filters": {"type": type, "size": size},
            "first_link": listed.refresh,
            "next_link": listed.older,
            "is_first": listed.first,
        },
        section="apps",
    )


@router.get("/console/b/{biz}/apps/{app}/records")
async def app_records(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    cursor: Annotated[str, Query(max_length=400)] = "",
    size: PageSize = 50,
) -> Response:
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    target = f"business/{biz}/app/{app}"
    listed = await cursor_page(
        api,
        "/api/v1/records",
        filters={"business": biz, "target": target},
        cursor=cursor,
        limit=size,
        keep={"size": size},
        here=f"{_base(biz, app)}/records",
    )
    if not listed.result.ok:
        return _failed(request, user, listed.result)
    # the API matches a target prefix: keep out another app whose name starts with this one's
    rows = [
        r for r in listed.items if r["target"] == target or r["target"].startswith(target + "/")
    ]
    return render(
        request,
        user,
        "app_records.html",
        {
            "biz": biz,
            "app": data,
            "tab": "records",
            "rows": rows,
            "first_link": listed.refresh,
            "next_link": listed.older,
            "is_first": listed.first,
        },
        section="apps",
    )
