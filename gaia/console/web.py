"""What every console page uses: who is logged in, the API, translation, rendering.

**Same API, same rules.** A page reads and acts through the platform's own HTTP API, called
in-process (``ConsoleApi``: httpx over ASGI into the same app, with the user's session token), so
the console can never show or do more than the API allows that user, every action lands in the
operation records exactly as an API call does, and validation errors come back with the API's
messages, which the page shows next to the form. Logging in and out are API calls too
(``POST /api/v1/auth/login``, whose token the console keeps in an HttpOnly cookie), and the
logged-in user is whatever ``GET /api/v1/users/me`` says of that token. The console imports no
store, scheduler or platform module (the ``console-through-api`` contract in pyproject.toml);
list pages are built by ``gaia.console.listing``.

**Pages without JavaScript first.** Every page is complete server-rendered HTML and every action
is a plain ``<form method="post">`` answered with a redirect (POST/redirect/GET) carrying a
flash message. htmx (from npm, see ``gaia.console.assets``) then turns links and forms into
partial updates (``hx-boost``) and refreshes the live parts (an upgrade's instances, log follow)
without reloads; without it the console still works, only less live.

**Languages.** Simplified Chinese and English, per user (``users.language``), switched on any
page and remembered. Strings are written in English in the templates (``_("Apps")``) and looked
up in ``locales/zh-CN/*.json`` (one file per page group); a missing entry falls back to English.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import httpx
from babel import Locale
from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.requests import HTTPConnection

from gaia.api.client_address import request_client_address
from gaia.api.deps import SESSION_COOKIE
from gaia.console import assets
from gaia.console.browser_guard import csrf_input
from gaia.console.charts import format_value

HERE = Path(__file__).parent
STATIC = HERE / "static"
LANGUAGES = {"en": "English", "zh-CN": "简体中文"}
templates = Jinja2Templates(directory=str(HERE / "templates"))


class LoginRequired(Exception):
    """Raised by ``current_user`` when there is no valid session; answered with a redirect."""


# ---------------------------------------------------------------- languages


@cache
def catalog(language: str) -> Mapping[str, str]:
    folder = HERE / "locales" / language
    merged: dict[str, str] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


Translate = Callable[..., str]


def translator(language: str) -> Translate:
    table = catalog(language) if language != "en" else {}

    def translate(text: str, /, **values: Any) -> str:
        out = table.get(text, text)
        return out.format(**values) if values else out

    return translate


@cache
def _locale(language: str) -> Locale:
    return Locale.parse(language.replace("-", "_"))


def context_translator(language: str) -> Translate:
    """``_p(context, text, **values)``: ``text`` where one English word means two things (a
    notification "sent" is 已发送, bytes "sent" are 发送). The catalog's key is
    ``"{context}|{text}"``; English, and a missing entry, show ``text``."""
    table = catalog(language) if language != "en" else {}

    def translate(context: str, text: str, /, **values: Any) -> str:
        out = table.get(f"{context}|{text}", text)
        return out.format(**values) if values else out

    return translate


def plural_translator(language: str) -> Callable[..., str]:
    """``_n(singular, plural, count, **values)``: the form of ``count`` by the language's CLDR
    plural rules (Babel): English has "one" and "other", Chinese "other" only. The catalog's
    entry for ``singular`` is a string (one form) or ``{"one": ..., "other": ...}``; with no
    entry, the English forms given are used. ``count`` is also a value of the text."""
    table = catalog(language) if language != "en" else {}
    locale = _locale(language)

    def translate(singular: str, plural: str, count: int, /, **values: Any) -> str:
        form = locale.plural_form(count)
        entry: Any = table.get(singular)
        if isinstance(entry, dict):
            out = str(entry.get(form) or entry.get("other") or plural)
        elif isinstance(entry, str):
            out = entry
        else:
            out = singular if form == "one" else plural
        return out.format(count=count, **values)

    return translate


# ---------------------------------------------------------------- who is logged in


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """Who is logged in, as ``GET /api/v1/users/me`` answers, and the session token the
    console calls the API with."""

    token: str
    username: str
    display_name: str
    language: str
    is_admin: bool


async def current_user(request: Request) -> ConsoleUser:
    """The logged-in user (a FastAPI dependency); ``LoginRequired`` without a valid session.

    The API decides: the session cookie's token goes to ``GET /api/v1/users/me`` like any
    client's, so a revoked session, an expired one or a disabled user ends here too."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired
    me = await ConsoleApi(request, token).get("/api/v1/users/me")
    if not me.ok or not isinstance(me.data, dict):
        raise LoginRequired
    return ConsoleUser(
        token=token,
        username=me.data["username"],
        display_name=me.data["display_name"] or me.data["username"],
        language=me.data["language"] if me.data["language"] in LANGUAGES else "en",
        is_admin=bool(me.data["platform_admin"]),
    )


# The parameters every page module declares alike; FastAPI reads the limits from them.
User = Annotated[ConsoleUser, Depends(current_user)]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=500)]


# ---------------------------------------------------------------- the API, in-process


@dataclass(frozen=True, slots=True)
class ApiResult:
    status: int
    data: Any

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def error(self) -> str:
        """The API's message for a failed call ("" when it succeeded)."""
        if self.ok:
            return ""
        if isinstance(self.data, dict):
            return str(self.data.get("message") or self.data.get("detail") or self.status)
        return f"HTTP {self.status}"

    @property
    def field_errors(self) -> dict[str, str]:
        """Per-field messages of a 422 (``{"body.name": "..."}`` → ``{"name": "..."}``)."""
        out: dict[str, str] = {}
        if not isinstance(self.data, dict):
            return out
        details = self.data.get("details")
        rows = details.get("errors") if isinstance(details, dict) else details
        if isinstance(rows, list):
            for row in rows:
                if isinstance(row, dict) and row.get("field"):
                    out[str(row["field"])] = str(row.get("message", ""))
                elif isinstance(row, dict) and row.get("loc"):
                    loc = [str(p) for p in row["loc"] if p not in ("body", "query", "path")]
                    out[".".join(loc)] = str(row.get("msg", ""))
        return out


class ConsoleApi:
    """The platform's API as the logged-in user, over ASGI into the same app.

    ``user`` is the logged-in user, or a bare session token (before the user is known: the
    current-user check, the terminal's socket), or ``None`` for the anonymous calls (login).
    ``connection`` is the page's request or the terminal's WebSocket."""

    def __init__(self, connection: HTTPConnection, user: ConsoleUser | str | None) -> None:
        self._app = connection.app
        token = user.token if isinstance(user, ConsoleUser) else user
        # The API sees the browser's address as its socket peer (the login throttle and the
        # operation records key on it): an in-process call would otherwise come from one
        # made-up peer for every user, and one attacker's failed logins through this form
        # would throttle everyone's.
        self._client = (request_client_address(connection), 0)
        self._headers = {"User-Agent": "gaia-console"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> ApiResult:
        transport = httpx.ASGITransport(app=self._app, client=self._client)
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            response = await client.request(
                method,
                path,
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v not in (None, "")},
                headers=self._headers,
                timeout=60,
            )
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = response.text
        return ApiResult(response.status_code, data)

    async def get(self, path: str, **params: Any) -> ApiResult:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> ApiResult:
        return await self.call("POST", path, json_body=body if body is not None else {})

    async def put(self, path: str, body: Any) -> ApiResult:
        return await self.call("PUT", path, json_body=body)

    async def patch(self, path: str, body: Any) -> ApiResult:
        return await self.call("PATCH", path, json_body=body)

    async def delete(self, path: str) -> ApiResult:
        return await self.call("DELETE", path)


def platform_now(request: Request) -> float:
    """The platform's clock (simulated in tests): the one the metric store's series are stamped
    with, so a page's "last five minutes" are the store's."""
    return float(request.app.state.platform.clock.now().timestamp())


# ---------------------------------------------------------------- rendering


def flash_of(request: Request) -> tuple[str, str] | None:
    """The message a redirect carried (``?ok=`` or ``?error=``)."""
    if request.query_params.get("error"):
        return ("error", request.query_params["error"][:500])
    if request.query_params.get("ok"):
        return ("ok", request.query_params["ok"][:500])
    return None


def redirect(url: str, *, ok: str = "", error: str = "") -> RedirectResponse:
    """POST/redirect/GET with a flash message in the query (shown once, never stored)."""
    message = {"ok": ok} if ok else {"error": error} if error else {}
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (sep + urlencode(message) if message else ""), status_code=303)


NAV = (
    ("overview", "/console", "Overview"),
    ("clusters", "/console/clusters", "Clusters"),
    ("businesses", "/console/businesses", "Businesses"),
    ("apps", "/console/apps", "Apps"),
    ("pipelines", "/console/pipelines", "Pipelines"),
    ("registry", "/console/registry", "Registry"),
    ("alerts", "/console/alerts", "Alerts"),
    ("records", "/console/records", "Records"),
    ("events", "/console/events", "Events"),
)
# admins only: floating-IP pools, the platform's own components, backups
ADMIN_NAV = (
    ("network", "/console/network", "Network"),
    ("components", "/console/components", "Components"),
    ("backups", "/console/backups", "Backups"),
)


def render(
    request: Request,
    user: ConsoleUser | None,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    section: str = "",
    status: int = 200,
) -> HTMLResponse:
    language = user.language if user is not None else _browser_language(request)
    page = {
        "_": translator(language),
        "_n": plural_translator(language),
        "_p": context_translator(language),
        "lang": language,
        "languages": LANGUAGES,
        "user": user,
        "nav": NAV + ADMIN_NAV if user is not None and user.is_admin else NAV,
        "section": section,
        "vendor": assets.installed(),
        "flash": flash_of(request),
        "path": request.url.path,
        # every <form method="post"> writes {{ csrf_input }} (gaia.console.browser_guard)
        "csrf_input": csrf_input(user.token if user is not None else None),
        "full_path": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        "partial": request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-Boosted") != "true",
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, page, status_code=status)


@dataclass(frozen=True, slots=True)
class RefusedForm:
    """A posted form the API refused, shown again on its page (above its list): what was
    typed, the API's message per field, and the status the page answers with."""

    values: Mapping[str, Any]
    errors: Mapping[str, str]
    status: int = 422


EMPTY_FORM = RefusedForm({}, {}, 200)  # a page as it first shows, its form empty


async def permissions_in(api: ConsoleApi, biz: str) -> frozenset[str]:
    """What the user may do in business ``biz``, as the API says (``BusinessOut.permissions``):
    pages show an action only to whom may take it. Empty when the business is not theirs."""
    result = await api.get(f"/api/v1/businesses/{quote(biz, safe='')}")
    if not result.ok or not isinstance(result.data, dict):
        return frozenset()
    return frozenset(result.data.get("permissions") or ())


def refusal_page(
    request: Request, user: ConsoleUser, result: ApiResult, *, template: str, section: str
) -> HTMLResponse:
    """The API's refusal (404, 403, ...) as a small page of ``template`` with its message and
    the same status (each section words it its own way and links back to its list)."""
    return render(
        request,
        user,
        template,
        {"status": result.status, "message": result.error},
        section=section,
        status=result.status if result.status >= 400 else 502,
    )


def _browser_language(request: Request) -> str:
    accept = request.headers.get("accept-language", "").lower()
    return "zh-CN" if accept.startswith("zh") else "en"


# ---------------------------------------------------------------- template helpers


def _when(value: Any) -> str:
    """An ISO time from the API as ``YYYY-MM-DD HH:MM:SS`` UTC ("" for none)."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return str(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))


def _bytes(value: float | None) -> str:
    """Bytes for people: ``512 MiB``, ``1.5 GiB`` (as the charts write them)."""
    return "" if value is None else format_value(value, "bytes")


def _percent(used: float | None, total: float | None) -> float:
    if not total or used is None:
        return 0.0
    return max(0.0, min(100.0, 100.0 * float(used) / float(total)))


def _bar(used: float | None, total: float | None, label: str = "") -> Markup:
    """A used/total bar, readable without colour (the numbers are beside it)."""
    pct = _percent(used, total)
    level = "high" if pct >= 90 else "mid" if pct >= 70 else "low"
    text = label or f"{pct:.0f}%"
    return Markup(
        '<span class="bar {level}" role="meter" aria-valuemin="0" aria-valuemax="100" '
        'aria-valuenow="{pct:.0f}" aria-label="{text}"><span style="width:{pct:.1f}%"></span>'
        "</span>"
    ).format(level=level, pct=pct, text=text)


templates.env.filters["when"] = _when
templates.env.filters["percent"] = _percent
templates.env.filters["bytes"] = _bytes
templates.env.globals["bar"] = _bar
