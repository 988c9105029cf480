"""Console pages: log in and out, the language switch, and the overview (clusters and businesses
with counts and usage against quota)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from gaia.api.deps import SESSION_COOKIE, audit, authenticate, platform
from gaia.console.web import (
    LANGUAGES,
    ConsoleApi,
    ConsoleUser,
    current_user,
    redirect,
    render,
)
from gaia.domain.errors import GaiaError
from gaia.store.identity import check_credentials, start_session
from gaia.store.models import Token, utcnow

router = APIRouter(include_in_schema=False)
User = Annotated[ConsoleUser, Depends(current_user)]


def _secure(request: Request) -> bool:
    # Browsers accept Secure cookies on http://localhost; elsewhere plain http would drop them.
    return request.url.scheme == "https" or request.url.hostname in ("localhost", "127.0.0.1")


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
def login_submit(
    request: Request,
    username: Annotated[str, Form(max_length=63)],
    password: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=500)] = "/console",
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
        return render(
            request,
            None,
            "login.html",
            {"error": exc.message, "next": _safe_next(next), "username": username},
            status=401,
        )
    ctx.summary = "logged in (console)"
    response = RedirectResponse(_safe_next(next), status_code=303)
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
async def overview(request: Request, user: User) -> Response:
    api = ConsoleApi(request, user)
    data = await api.get("/api/v1/overview")
    return render(
        request,
        user,
        "overview.html",
        {"data": data.data if data.ok else None, "error": data.error},
        section="overview",
    )
