"""The web console, served by the same process as the API (``gaia up``) over the same API and RBAC.

Server-rendered Jinja2 pages, progressively enhanced with htmx (``gaia.console.web`` explains the
shape). One module per group of pages in ``pages/``; ``install(app)`` mounts them all, the static
files, and the redirect to the login page for requests without a session.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from gaia.console.pages import apps, businesses, clusters, home, live, records
from gaia.console.web import STATIC, LoginRequired

__all__ = ["install"]


def install(app: FastAPI) -> None:
    for module in (home, clusters, businesses, apps, live, records):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    async def login_required(request: Request, exc: Exception) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"/console/login?next={target}", status_code=303)
        if request.headers.get("HX-Request") == "true":
            response.headers["HX-Redirect"] = "/console/login"
        return response

    app.add_exception_handler(LoginRequired, login_required)
