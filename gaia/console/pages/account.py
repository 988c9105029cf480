"""Your account (issue 20): every user manages their own profile, password and API tokens.

- ``/console/account``: the display name and language, a password change (the current
  password is asked, as the API asks it), and the user's API tokens (newest first, revoked
  ones marked) with a form to create one and a button to revoke each.
- ``POST /console/account/tokens``: the page that answers a creation is the only place the
  token's value appears, as ``POST /api/v1/tokens`` gives it once; the list never shows it.

Everything goes through the API as the logged-in user (``PATCH /api/v1/users/{me}``,
``/api/v1/tokens``), so the API's rules (current password, token names) are the page's rules:
its 422s come back as messages on their fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gaia.console.listing import every_item
from gaia.console.web import (
    LANGUAGES,
    ConsoleApi,
    ConsoleUser,
    User,
    redirect,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]
HERE = "/console/account"


def _errors(result_errors: dict[str, str], message: str) -> dict[str, str]:
    errors = {k.split(".")[0]: v for k, v in result_errors.items()}
    return errors or {"form": message}


async def _page(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    me = await api.get("/api/v1/users/me")
    tokens = await every_item(api, "/api/v1/tokens")
    profile = me.data if me.ok and isinstance(me.data, dict) else {}
    return render(
        request,
        user,
        "account.html",
        {
            "me": profile,
            "tokens": tokens.data if tokens.ok else [],
            "values": values or {},
            "errors": errors or {},
        },
        status=status,
    )


@router.get("/console/account")
async def account_page(request: Request, user: User) -> Response:
    return await _page(request, user)


@router.post("/console/account/profile", response_model=None)
async def account_profile(request: Request, user: User) -> Response:
    form = await request.form()
    display_name = str(form.get("display_name") or "")[:500]
    language = str(form.get("language") or "")[:16]
    _ = translator(user.language)
    if language not in LANGUAGES:
        errors = {"language": _("Choose one of the listed languages.")}
        return await _page(
            request, user, values={"display_name": display_name}, errors=errors, status=422
        )
    body: dict[str, Any] = {"display_name": display_name or None, "language": language}
    result = await ConsoleApi(request, user).patch(f"/api/v1/users/{user.username}", body)
    if not result.ok:
        errors = _errors(result.field_errors, result.error)
        return await _page(
            request, user, values={"display_name": display_name}, errors=errors, status=422
        )
    return redirect(HERE, ok=translator(language)("Profile saved."))


@router.post("/console/account/password", response_model=None)
async def account_password(request: Request, user: User) -> Response:
    form = await request.form()
    current = str(form.get("current_password") or "")[:256]
    new = str(form.get("password") or "")[:1024]
    repeat = str(form.get("password_repeat") or "")[:1024]
    _ = translator(user.language)
    errors: dict[str, str] = {}
    if not current:
        errors["current_password"] = _("Type your current password.")
    if new != repeat:
        errors["password_repeat"] = _("The two new passwords differ.")
    if not errors:
        body = {"password": new, "current_password": current}
        result = await ConsoleApi(request, user).patch(f"/api/v1/users/{user.username}", body)
        if result.ok:
            return redirect(
                HERE, ok=_("Password changed; your other sessions and tokens have ended.")
            )
        errors = _errors(result.field_errors, result.error)
        if "current_password" in result.error:
            errors = {"current_password": _("The current password is wrong.")}
    # passwords are never put back into the form
    return await _page(request, user, errors=errors, status=422)


@router.post("/console/account/tokens", response_model=None)
async def token_create(request: Request, user: User) -> Response:
    form = await request.form()
    name = str(form.get("name") or "").strip()[:200]
    days = str(form.get("expires_in_days") or "").strip()[:10]
    values = {"name": name, "expires_in_days": days}
    _ = translator(user.language)
    body: dict[str, Any] = {"name": name}
    if days:
        if not days.isdigit():
            errors = {"expires_in_days": _("A whole number of days, or empty.")}
            return await _page(request, user, values=values, errors=errors, status=422)
        body["expires_in_days"] = int(days)
    result = await ConsoleApi(request, user).post("/api/v1/tokens", body)
    if not result.ok:
        errors = _errors(result.field_errors, result.error)
        return await _page(request, user, values=values, errors=errors, status=422)
    return render(request, user, "account_token_created.html", {"token": result.data}, status=201)


@router.post("/console/account/tokens/{token_id}/revoke", response_model=None)
async def token_revoke(request: Request, user: User, token_id: TokenId) -> Response:
    result = await ConsoleApi(request, user).delete(f"/api/v1/tokens/{token_id}")
    _ = translator(user.language)
    if not result.ok:
        return redirect(HERE, error=result.error)
    return redirect(HERE, ok=_("Token revoked."))
