"""Console pages: log in and out, the language switch, and the overview (clusters and businesses
with counts and usage against quota)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from gaia.api.deps import SESSION_COOKIE, audit
from gaia.console.browser_guard import request_is_https
from gaia.console.listing import paginate
from gaia.console.web import LANGUAGES, ConsoleApi, PageNumber, User, redirect, render

router = APIRouter(include_in_schema=False)


def _secure(request: Request) -> bool:
    """Secure when the browser came over TLS (ours, or a trusted proxy's: ``request_is_https``).
    Browsers accept Secure cookies on http://localhost; elsewhere plain http would drop them."""
    return request_is_https(request) or request.url.hostname in ("localhost", "127.0.0.1")


def _safe_next(target: str | None) -> str:
    """Only a path of this console (no open redirect to another site)."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=303)


@router.get("/console/login")
def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=500)] = None
) -> Response:
    return render(request, None, "login.html", {"error": None, "next": _safe_next(next)})


@router.post("/console/login", response_model=None)
async def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=63)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=500)] = "/console",
) -> Response:
    """Log in through ``POST /api/v1/auth/login`` and keep its session token as an HttpOnly
    cookie (scripts on the page never see it)."""
    # The API's call writes the operation record, accepted or refused; this request of the
    # console's own would only repeat it.
    ctx = audit(request, action="auth.login", target=f"user/{username}")
    ctx.actor = username if username.isprintable() else "anonymous"
    ctx.delegated = True
    result = await ConsoleApi(request, None).post(
        "/api/v1/auth/login", {"username": username, "password": password}
    )
    if not result.ok:
        ctx.error = result.error
        return render(
            request,
            None,
            "login.html",
            {"error": result.error, "next": _safe_next(next), "username": username},
            status=401,
        )
    expires = dt.datetime.fromisoformat(result.data["expires_at"])
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        result.data["token"],
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        max_age=max(0, round((expires - dt.datetime.now(dt.UTC)).total_seconds())),
        path="/",
    )
    return response


@router.post("/console/logout", response_model=None)
async def logout_submit(request: Request) -> Response:
    """Revoke the session through ``POST /api/v1/auth/logout`` (an invalid one is simply
    forgotten) and drop the cookie."""
    audit(request, action="auth.logout").delegated = True  # the API's call is the record
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await ConsoleApi(request, token).post("/api/v1/auth/logout")
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/console/language", response_model=None)
async def switch_language(
    request: Request,
    user: User,
    language: Annotated[str, Form(max_length=16)],
    next: Annotated[str, Form(max_length=500)] = "/console",
) -> Response:
    """Remember the user's language (``PATCH /api/v1/users/{me}``) and show the page again."""
    if language not in LANGUAGES:
        return redirect(_safe_next(next), error=f"unknown language {language!r}")
    result = await ConsoleApi(request, user).patch(
        f"/api/v1/users/{user.username}", {"language": language}
    )
    if not result.ok:
        return redirect(_safe_next(next), error=result.error)
    return redirect(_safe_next(next))


@router.get("/console")
async def overview(request: Request, user: User, page: PageNumber = 1) -> Response:
    api = ConsoleApi(request, user)
    data = await api.get("/api/v1/overview")
    body = data.data if data.ok and isinstance(data.data, dict) else None
    businesses = None
    if body is not None:
        rows = [business_row(b) for b in body.get("businesses", [])]
        rows.sort(key=lambda r: (-r["busiest"], r["name"]))
        businesses = paginate(rows, page=page, size=BUSINESSES_PER_PAGE)
    return render(
        request,
        user,
        "overview.html",
        {"data": body, "error": data.error, "businesses": businesses, "shown": SHOWN},
        section="overview",
    )


BUSINESSES_PER_PAGE = 25
# the overview's columns per business (the business's own page has every dimension)
SHOWN = ("cpu", "memory", "gpu")


def business_row(b: Mapping[str, Any]) -> dict[str, Any]:
    """One business as one row of the overview: its used/quota on the shown dimensions (None
    where it has no quota: a dash, not a bar of zeros), and its busiest dimension's share, by
    which the rows are sorted (the businesses near their quota first)."""
    usage = {u["dimension"]: u for u in b.get("usage", [])}
    cells = {d: usage[d] if d in usage and usage[d]["total"] else None for d in SHOWN}
    shares = [u["used"] / u["total"] for u in usage.values() if u["total"]]
    return {
        "name": b["name"],
        "display_name": b.get("display_name") or b["name"],
        "members": b.get("members", 0),
        "clusters": b.get("clusters", 0),
        "cells": cells,
        "busiest": max(shares, default=0.0),
    }


@router.get("/console/search")
async def search_page(
    request: Request, user: User, q: Annotated[str, Query(max_length=100)] = ""
) -> Response:
    """The results of the header's search box (``GET /api/v1/search``), each a link."""
    hits: list[dict[str, Any]] = []
    error = ""
    q = q.strip()
    if q:
        result = await ConsoleApi(request, user).get("/api/v1/search", q=q, limit=20)
        if result.ok and isinstance(result.data, dict):
            hits = [dict(h, href=_href(h)) for h in result.data.get("items", [])]
        else:
            error = result.error
    return render(request, user, "search.html", {"q": q, "hits": hits, "error": error}, section="")


def _href(hit: Mapping[str, Any]) -> str:
    kind, name = hit.get("kind"), str(hit.get("name", ""))
    biz, app, cluster = (
        quote(str(hit.get(k) or ""), safe="") for k in ("business", "app", "cluster")
    )
    if kind == "business":
        return f"/console/businesses/{biz}"
    if kind == "app":
        return f"/console/b/{biz}/apps/{app}"
    if kind == "instance":
        return f"/console/b/{biz}/apps/{app}/instances"
    if kind == "node":
        return f"/console/clusters/{cluster}/nodes/{quote(name, safe='')}"
    return "/console"
