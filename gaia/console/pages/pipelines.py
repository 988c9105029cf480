"""CI/CD pipelines and their build records (issue 18; docs/pipelines.md).

- ``/console/pipelines``: every pipeline of the user's businesses, with its newest run (a
  failed one names its failing step), filtered by business and name.
- ``/console/pipelines/new``: link a git repository (URL, branch, Dockerfile, context, build
  args, git credentials, deploy target, schedule). The webhook secret is shown once, on the page
  that answers the creation, as the API gives it once.
- ``/console/b/{biz}/pipelines/{name}``: its settings and webhook, its runs newest first (a
  page at a time, by the API's cursor), and for developers and above: run now, rotate the
  webhook secret, delete.
- ``/console/b/{biz}/pipelines/{name}/runs/{n}``: the build record. Where it failed comes
  first (the step, and for a build step the Dockerfile instruction and line), then the steps
  with their durations, the image digest and the upgrade it started, then the log. A run that
  has not finished streams its new lines live (``pipeline.js``: an ``EventSource`` on the API's
  ``?follow=true``, which the session cookie authenticates for reads) and reloads itself when
  the run ends; without JavaScript the page is complete and reloadable.

Everything comes from the API as the logged-in user, so a page shows exactly what the API lets
that user see, and every button is also refused by the API to a user who may not press it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from gaia.console.listing import cursor_page, every_item, mentions, paginate
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    PageNumber,
    User,
    redirect,
    refusal_page,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
Biz = Annotated[str, Path(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Name = Annotated[str, Path(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
Number = Annotated[int, Path(ge=1, le=2**53)]
Text = Annotated[str, Query(max_length=200)]
Cursor = Annotated[str, Query(max_length=500)]
After = Annotated[int, Query(ge=-1, le=2**53)]
WRITERS = ("developer", "business-admin", "platform-admin")
LOG_PAGE = 2000
RUNS_PAGE = 25
ACTIVE = ("queued", "running")
FORM_FIELDS = (
    "biz",
    "name",
    "git_url",
    "branch",
    "dockerfile",
    "context",
    "build_args",
    "repository",
    "git_username",
    "deploy_app",
    "deploy_instances",
    "schedule_minutes",
)


def _api(biz: str, name: str = "") -> str:
    base = f"/api/v1/businesses/{quote(biz)}/pipelines"
    return f"{base}/{quote(name)}" if name else base


def _page(biz: str, name: str) -> str:
    return f"/console/b/{biz}/pipelines/{name}"


def _refused(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="pipeline_error.html", section="pipelines")


async def _businesses(api: ConsoleApi, user: ConsoleUser) -> list[dict[str, Any]]:
    listed = await every_item(api, "/api/v1/businesses")
    rows: list[dict[str, Any]] = listed.data if listed.ok else []
    for b in rows:
        b["write"] = user.is_admin or b.get("role") in WRITERS
    return rows


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"  # an en dash
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


# ---------------------------------------------------------------- the list


@router.get("/console/pipelines")
async def pipelines_list(
    request: Request, user: User, biz: Text = "", name: Text = "", page: PageNumber = 1
) -> Response:
    api = ConsoleApi(request, user)
    businesses = await _businesses(api, user)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for b in businesses:
        if biz and b["name"] != biz:
            continue
        result = await every_item(api, _api(b["name"]))
        if not result.ok:
            errors.append(f"{b['name']}: {result.error}")
            continue
        rows.extend(p for p in result.data if mentions(name, p["name"], p["repository"]))
    rows.sort(key=lambda p: (p["business"], p["name"]))
    query = {"biz": biz, "name": name}
    return render(
        request,
        user,
        "pipelines.html",
        {
            "paged": paginate(rows, page=page, size=50, query=query),
            "businesses": [b["name"] for b in businesses],
            "may_create": any(b["write"] for b in businesses),
            "filters": query,
            "errors": errors,
        },
        section="pipelines",
    )


# ---------------------------------------------------------------- create


def body_from_form(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API's create body from the form, or per-field errors for what the form itself
    cannot read (the API validates the rest and its 422 lands on the same fields)."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"name": values["name"].strip(), "git_url": values["git_url"].strip()}
    for key in ("branch", "dockerfile", "context", "repository"):
        if values[key].strip():
            body[key] = values[key].strip()
    args: dict[str, str] = {}
    for number, line in enumerate(values["build_args"].splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            errors["build_args"] = f"line {number}: write NAME=value"
            break
        args[key.strip()] = value
    if args:
        body["build_args"] = args
    if values["deploy_app"].strip():
        target: dict[str, Any] = {"app": values["deploy_app"].strip()}
        ids = values["deploy_instances"].replace(",", " ").split()
        if ids:
            if not all(i.isdigit() and len(i) < 16 for i in ids):
                errors["deploy_instances"] = "instance ids are numbers, separated by commas"
            else:
                target["instance_ids"] = [int(i) for i in ids]
        body["deploy"] = target
    schedule = values["schedule_minutes"].strip()
    if schedule:
        if not schedule.isdigit() or len(schedule) > 6:
            errors["schedule_minutes"] = "minutes between scheduled runs: a whole number"
        else:
            body["schedule_minutes"] = int(schedule)
    return body, errors


# where a 422's field path lands in the form
ERROR_FIELDS = {
    "name": "name",
    "git_url": "git_url",
    "branch": "branch",
    "dockerfile": "dockerfile",
    "context": "context",
    "build_args": "build_args",
    "repository": "repository",
    "git_credentials": "git_token",
    "deploy": "deploy_app",
    "deploy.app": "deploy_app",
    "deploy.instance_ids": "deploy_instances",
    "schedule_minutes": "schedule_minutes",
}


def _form_errors(field_errors: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path, message in field_errors.items():
        key = next(
            (ERROR_FIELDS[p] for p in sorted(ERROR_FIELDS, key=len, reverse=True)
             if path == p or path.startswith(p + ".")),
            "form",
        )  # fmt: skip
        out.setdefault(key, message)
    return out


async def _new_page(
    request: Request,
    user: ConsoleUser,
    values: dict[str, str],
    errors: dict[str, str],
    *,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    writable = [b["name"] for b in await _businesses(api, user) if b["write"]]
    if not writable:
        return _refused(
            request,
            user,
            ApiResult(403, {"message": "you may create pipelines in none of your businesses"}),
        )
    values.setdefault("biz", writable[0])
    return render(
        request,
        user,
        "pipeline_new.html",
        {"businesses": writable, "values": values, "errors": errors},
        section="pipelines",
        status=status,
    )


@router.get("/console/pipelines/new")
async def pipeline_new(request: Request, user: User, biz: Text = "") -> Response:
    values = {k: "" for k in FORM_FIELDS} | {"branch": "main", "dockerfile": "Dockerfile"}
    values["context"] = "."
    if biz:
        values["biz"] = biz
    return await _new_page(request, user, values, {})


@router.post("/console/pipelines/new", response_model=None)
async def pipeline_create(request: Request, user: User) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "")[:20_000] for k in FORM_FIELDS}
    token = str(form.get("git_token") or "")[:4096]
    body, errors = body_from_form(values)
    if token:
        username = values["git_username"].strip()
        body["git_credentials"] = f"{username}:{token}" if username else token
    biz = values["biz"]
    if not errors:
        result = await ConsoleApi(request, user).post(_api(biz), body)
        if result.ok:
            return render(
                request,
                user,
                "pipeline_created.html",
                {"pipeline": result.data, "rotated": False},
                section="pipelines",
                status=201,
            )
        errors = _form_errors(result.field_errors) if result.status == 422 else {}
        if not errors or result.status != 422:
            errors["form"] = result.error
    return await _new_page(request, user, values, errors, status=422)


# ---------------------------------------------------------------- one pipeline


@router.get("/console/b/{biz}/pipelines/{name}")
async def pipeline_page(
    request: Request, user: User, biz: Biz, name: Name, cursor: Cursor = ""
) -> Response:
    api = ConsoleApi(request, user)
    pipeline = await api.get(_api(biz, name))
    if not pipeline.ok:
        return _refused(request, user, pipeline)
    runs = await cursor_page(
        api,
        f"{_api(biz, name)}/runs",
        filters={},
        cursor=cursor,
        limit=RUNS_PAGE,
        keep={},
        here=_page(biz, name),
    )
    for r in runs.items:
        took = [s["duration"] for s in r["steps"] if s.get("duration") is not None]
        r["took"] = sum(took) if took else None
    business = await api.get(f"/api/v1/businesses/{quote(biz)}")
    role = business.data.get("role") if business.ok else None
    return render(
        request,
        user,
        "pipeline.html",
        {
            "p": pipeline.data,
            "runs": runs,
            "base": _page(biz, name),
            "write": user.is_admin or role in WRITERS,
            "active": ACTIVE,
            "duration": duration,
        },
        section="pipelines",
    )


@router.post("/console/b/{biz}/pipelines/{name}/run", response_model=None)
async def pipeline_run(request: Request, user: User, biz: Biz, name: Name) -> Response:
    result = await ConsoleApi(request, user).post(f"{_api(biz, name)}/runs")
    if result.ok:
        number = result.data["number"]
        return redirect(
            f"{_page(biz, name)}/runs/{number}",
            ok=translator(user.language)("run {number} queued", number=number),
        )
    return redirect(_page(biz, name), error=result.error)


@router.post("/console/b/{biz}/pipelines/{name}/rotate-secret", response_model=None)
async def pipeline_rotate(request: Request, user: User, biz: Biz, name: Name) -> Response:
    result = await ConsoleApi(request, user).patch(_api(biz, name), {"rotate_webhook_secret": True})
    if not result.ok:
        return redirect(_page(biz, name), error=result.error)
    return render(
        request,
        user,
        "pipeline_created.html",
        {"pipeline": result.data, "rotated": True},
        section="pipelines",
    )


@router.post("/console/b/{biz}/pipelines/{name}/delete", response_model=None)
async def pipeline_delete(request: Request, user: User, biz: Biz, name: Name) -> Response:
    result = await ConsoleApi(request, user).delete(_api(biz, name))
    if result.ok:
        return redirect(
            f"/console/pipelines?biz={quote(biz)}",
            ok=translator(user.language)("deleted pipeline {name}", name=name),
        )
    return redirect(_page(biz, name), error=result.error)


# ---------------------------------------------------------------- one run: the build record


@router.get("/console/b/{biz}/pipelines/{name}/runs/{number}")
async def run_page(
    request: Request, user: User, biz: Biz, name: Name, number: Number, after: After = -1
) -> Response:
    api = ConsoleApi(request, user)
    run = await api.get(f"{_api(biz, name)}/runs/{number}")
    if not run.ok:
        return _refused(request, user, run)
    logs = await api.get(f"{_api(biz, name)}/runs/{number}/logs", after=after, limit=LOG_PAGE)
    lines: list[dict[str, Any]] = logs.data["items"] if logs.ok else []
    last = lines[-1]["seq"] if lines else after
    more = bool(lines) and last + 1 < run.data["log_lines"]
    business = await api.get(f"/api/v1/businesses/{quote(biz)}")
    role = business.data.get("role") if business.ok else None
    data = run.data
    failure = data.get("failure")
    base = f"{_page(biz, name)}/runs/{number}"
    return render(
        request,
        user,
        "pipeline_run.html",
        {
            "biz": biz,
            "name": name,
            "run": data,
            "failure": failure,
            "lines": lines,
            "log_error": logs.error,
            "failing_step": failure["step"] if failure else None,
            "base": base,
            "pipeline_url": _page(biz, name),
            "next_lines": f"{base}?after={last}" if more else "",
            "first_lines": base if after >= 0 else "",
            # follow only from the end of what the page shows
            "follow_url": (
                f"{_api(biz, name)}/runs/{number}/logs?follow=true&after={last}"
                if data["state"] in ACTIVE and not more
                else ""
            ),
            "write": user.is_admin or role in WRITERS,
            "active": ACTIVE,
            "duration": duration,
        },
        section="pipelines",
    )


@router.post("/console/b/{biz}/pipelines/{name}/runs/{number}/cancel", response_model=None)
async def run_cancel(
    request: Request, user: User, biz: Biz, name: Name, number: Number
) -> Response:
    back = f"{_page(biz, name)}/runs/{number}"
    result = await ConsoleApi(request, user).post(f"{_api(biz, name)}/runs/{number}/cancel")
    if result.ok:
        return redirect(back, ok=translator(user.language)("cancel requested"))
    return redirect(back, error=result.error)
