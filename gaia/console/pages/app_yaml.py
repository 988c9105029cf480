"""An existing app's version as YAML (issue 20): view it, edit it, see the difference against
the version it came from, and save it as a new version.

``GET /console/b/{biz}/apps/{app}/yaml[?version=v1]`` shows one version (default: the newest)
as the YAML the API takes (``TemplateIn``: resources in API units, an instance configuration by
name). Versions are immutable, so an edit is saved as a new one:

1. ``POST .../yaml`` with ``action=preview``: the YAML is parsed with the console's rules
   (``load_untrusted_yaml``: no anchors, bounded size and nesting) and shown as a unified diff
   against the version it was opened from, with the save button;
2. ``action=save``: ``POST /api/v1/businesses/{biz}/apps/{app}/templates`` with it; the API
   validates it (errors shown on the page with the YAML kept), then back to the Upgrade tab,
   where the new version can be rolled out.

Only roles that may write the app see the form; the API refuses the others anyway.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from gaia.console.listing import every_item
from gaia.console.pages.apps import AppName, Biz, _api_path, _base, _load_app, body_from_yaml
from gaia.console.web import ConsoleApi, User, redirect, render, translator
from gaia.domain.yaml_safe import MAX_YAML_BYTES, UnsafeYaml

router = APIRouter(include_in_schema=False)
Version = Annotated[str, Query(max_length=63, pattern=r"^[A-Za-z0-9._-]*$")]


def version_yaml(template: dict[str, Any]) -> str:
    """A version as the YAML the API takes back: its stored document, with its resources in
    API units (or its instance configuration by name), zero amounts left out."""
    doc = {k: v for k, v in (template.get("spec") or {}).items() if v not in (None, [], {})}
    doc.pop("name", None)
    if doc.get("instance_config"):
        doc.pop("resources", None)
    else:
        amounts = template.get("resources") or {}
        doc["resources"] = {k: v for k, v in amounts.items() if v}
    body = {"name": template["name"], **doc}
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True, default_flow_style=False)


def diff(before: str, after: str, *, old: str, new: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) rows: kind is ``add``, ``del``, ``hunk`` or ``same``."""
    rows = []
    for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), fromfile=old, tofile=new, lineterm=""
    ):
        if line.startswith(("---", "+++")):
            continue
        kind = (
            "hunk"
            if line.startswith("@@")
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "same"
        )
        rows.append((kind, line))
    return rows


async def _versions(api: ConsoleApi, biz: str, app: str) -> list[dict[str, Any]]:
    result = await every_item(api, f"{_api_path(biz, app)}/templates")
    return result.data if result.ok else []


@router.get("/console/b/{biz}/apps/{app}/yaml")
async def app_yaml(
    request: Request, user: User, biz: Biz, app: AppName, version: Version = ""
) -> Response:
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    versions = await _versions(api, biz, app)
    chosen = next((t for t in versions if t["name"] == version), versions[-1] if versions else None)
    text = version_yaml(chosen) if chosen else ""
    return _page(request, user, biz, data, versions, chosen, text=text)


def _page(
    request: Request,
    user: Any,
    biz: str,
    app: dict[str, Any],
    versions: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    *,
    text: str,
    error: str = "",
    changes: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    return render(
        request,
        user,
        "app_yaml.html",
        {
            "biz": biz,
            "app": app,
            "tab": "yaml",
            "versions": [t["name"] for t in versions],
            "chosen": chosen["name"] if chosen else "",
            "text": text,
            "error": error,
            "changes": changes,
            "max_bytes": MAX_YAML_BYTES,
        },
        section="apps",
        status=status,
    )


@router.post("/console/b/{biz}/apps/{app}/yaml", response_model=None)
async def app_yaml_post(
    request: Request,
    user: User,
    biz: Biz,
    app: AppName,
    text: Annotated[str, Form(max_length=MAX_YAML_BYTES)],
    base: Annotated[str, Form(max_length=63)] = "",
    action: Annotated[str, Form(pattern=r"^(preview|save)$")] = "preview",
) -> Response:
    _ = translator(user.language)
    api = ConsoleApi(request, user)
    data = await _load_app(request, user, api, biz, app)
    if isinstance(data, Response):
        return data
    versions = await _versions(api, biz, app)
    chosen = next((t for t in versions if t["name"] == base), versions[-1] if versions else None)

    def again(error: str, status: int = 422) -> Response:
        return _page(
            request, user, biz, data, versions, chosen, text=text, error=error, status=status
        )

    if not data.get("may_write"):
        return again(_("Your role in this business may not change this app."), 403)
    try:
        body, syntax = body_from_yaml(text)
    except UnsafeYaml as exc:
        return again(str(exc))
    if syntax:
        return again(_("The YAML does not parse: {error}", error=syntax))
    if not isinstance(body, dict) or not body.get("name"):
        return again(_("The YAML must be one version, with a new name (name: v2)."))
    if any(t["name"] == body["name"] for t in versions):
        return again(
            _("Version {name} exists and cannot change: give the new one another name.",
              name=body["name"])
        )  # fmt: skip
    if action == "preview":
        before = version_yaml(chosen) if chosen else ""
        after = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, default_flow_style=False)
        old = chosen["name"] if chosen else ""
        changes = diff(before, after, old=old, new=str(body["name"]))
        return _page(request, user, biz, data, versions, chosen, text=text, changes=changes)
    result = await api.post(f"{_api_path(biz, app)}/templates", body)
    if not result.ok:
        fields = "; ".join(f"{k}: {v}" for k, v in result.field_errors.items())
        return again(fields or result.error, result.status if result.status >= 400 else 422)
    return redirect(
        f"{_base(biz, app)}/upgrade", ok=_("Version {name} added", name=result.data["name"])
    )
