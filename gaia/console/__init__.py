"""The web console, served by the same process as the API (``gaia up``) over the same API and RBAC.

Server-rendered Jinja2 pages, progressively enhanced with htmx (``gaia.console.web`` explains the
shape). One module per group of pages in ``pages/``; ``install(app)`` mounts them all, the static
files, the redirect to the login page for requests without a session, and the browser guard
(``gaia.console.browser_guard``: form tokens on every POST, security headers on every answer).
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from gaia.console.browser_guard import CsrfRefused, SecurityHeaders, require_csrf
from gaia.console.pages import (
    account,
    alert_policies,
    alert_targets,
    alerts,
    app_yaml,
    apps,
    backups,
    businesses,
    clusters,
    components,
    home,
    live,
    network,
    pipelines,
    records,
    registry,
    users,
)
from gaia.console.web import STATIC, LoginRequired, render

__all__ = ["install"]


def install(app: FastAPI) -> None:
    for module in (
        home,
        clusters,
        businesses,
        apps,
        app_yaml,
        pipelines,
        registry,
        live,
        records,
        alerts,
        alert_policies,
        alert_targets,
        network,
        components,
        backups,
        account,
        users,
    ):
        # every console POST carries this session's form token (gaia.console.browser_guard)
        app.include_router(module.router, dependencies=[Depends(require_csrf)])
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    async def login_required(request: Request, exc: Exception) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/console/login?next={target}", status_code=303)
        if request.headers.get("HX-Request") == "true":
            response.headers["HX-Redirect"] = "/console/login"
        return response

    app.add_exception_handler(LoginRequired, login_required)

    async def csrf_refused(request: Request, exc: Exception) -> HTMLResponse:
        message = exc.message if isinstance(exc, CsrfRefused) else str(exc)
        return render(request, None, "csrf_refused.html", {"message": message}, status=403)

    app.add_exception_handler(CsrfRefused, csrf_refused)
    # security headers on every answer, the API's included (this is the one place that wraps
    # the whole application after the API is built)
    app.add_middleware(SecurityHeaders)
