"""The web console, first cut: log in and see the overview (clusters, businesses, quota use, apps).

Server-rendered with Jinja2 from the same process and over the same rules as the API (the session
is the login token in an HttpOnly, SameSite=Strict cookie). The console issue builds the full
set of pages on this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from gaia.api.deps import SESSION_COOKIE, audit, authenticate, platform
from gaia.api.routes.apps import app_out
from gaia.api.routes.auth import check_credentials, start_session
from gaia.api.routes.overview import overview
from gaia.domain.errors import GaiaError
from gaia.store.models import App, Business, Cluster, Token, utcnow

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _secure(request: Request) -> bool:
    # Browsers accept Secure cookies on http://localhost; elsewhere plain http would drop them.
    return request.url.scheme == "https" or request.url.hostname in ("localhost", "127.0.0.1")


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=303)


@router.get("/console/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/console/login", response_model=None)
def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=63)],
    password: Annotated[str, Form(max_length=256)],
) -> Response:
    ctx = audit(request)
    ctx.actor = username if username.isprintable() else "anonymous"
    ctx.action = "auth.login"
    ctx.target = f"user/{username}"
    plat = platform(request)
    try:
        with plat.db.write_session() as session:
            user = check_credentials(session, username, password, throttle=plat.login_throttle)
            token, _row = start_session(session, user, plat.settings.session_ttl_seconds)
    except GaiaError as exc:
        ctx.error = exc.message
        return templates.TemplateResponse(
            request, "login.html", {"error": exc.message}, status_code=401
        )
    ctx.summary = "logged in (console)"
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        secure=_secure(request),
        samesite="strict",
        max_age=plat.settings.session_ttl_seconds,
        path="/",
    )
    return response


@router.post("/console/logout", response_model=None)
def logout_submit(request: Request) -> Response:
    audit(request).action = "auth.logout"
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with platform(request).db.write_session() as session:
            try:
                principal = authenticate(session, token)
            except GaiaError:
                principal = None
            if principal is not None:
                audit(request).actor = principal.username
                tok = session.get(Token, principal.token_id)
                if tok is not None:
                    tok.revoked_at = utcnow()
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/console", response_class=HTMLResponse, response_model=None)
async def dashboard(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return RedirectResponse("/console/login", status_code=303)
    plat = platform(request)
    with plat.db.read_session() as session:
        try:
            principal = authenticate(session, token)
        except GaiaError:
            return RedirectResponse("/console/login", status_code=303)
        data = overview(principal, session)
        stmt = select(App).order_by(App.name)
        if not principal.is_platform_admin:
            stmt = stmt.where(App.business_id.in_(principal.business_ids()))
        apps = []
        for app in session.scalars(stmt):
            business = session.get(Business, app.business_id)
            cluster = session.get(Cluster, app.cluster_id)
            assert business is not None and cluster is not None
            try:
                observed = await plat.providers.for_cluster(cluster).list_instances(
                    namespace=business.name, app=app.name
                )
            except (ConnectionError, GaiaError):
                observed = None
            apps.append(app_out(session, business, app, observed))
    return templates.TemplateResponse(
        request, "dashboard.html", {"user": principal.username, "data": data, "apps": apps}
    )
