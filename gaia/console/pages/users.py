"""Users and roles (issue 20), for platform administrators only.

- ``/console/users``: every account (disabled ones marked) and a form to create one.
- ``/console/users/{username}``: disable or enable it, reset its password, and its role in
  each business (grant or change with ``PUT .../members/{username}``, revoke with ``DELETE``).

A password the console makes up (the admin left the field empty) is shown once, on the page
that answers the POST, and never stored or shown again. Nothing here decides who may do what:
the API refuses a non-admin (403), and the page shows that refusal; the navigation entry is
only drawn for admins.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from gaia.console.listing import every_item
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    User,
    redirect,
    refusal_page,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
Username = Annotated[str, Path(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")]
Biz = Annotated[str, Path(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
ROLES = ("viewer", "developer", "business-admin")


def _refused(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="user_error.html", section="users")


def _errors(result: ApiResult) -> dict[str, str]:
    errors = {k.split(".")[0]: v for k, v in result.field_errors.items()}
    return errors or {"form": result.error}


def _generated_password() -> str:
    return secrets.token_urlsafe(15)


async def _list_page(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    listed = await every_item(ConsoleApi(request, user), "/api/v1/users")
    if not listed.ok:
        return _refused(request, user, listed)
    context = {"users": listed.data, "values": values or {}, "errors": errors or {}}
    return render(request, user, "users.html", context, section="users", status=status)


@router.get("/console/users")
async def users_list(request: Request, user: User) -> Response:
    return await _list_page(request, user)


@router.post("/console/users", response_model=None)
async def user_create(request: Request, user: User) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "")[:500] for k in ("username", "display_name")}
    values["platform_admin"] = "on" if form.get("platform_admin") else ""
    password = str(form.get("password") or "")[:1024]
    generated = not password
    body: dict[str, Any] = {
        "username": values["username"].strip(),
        "display_name": values["display_name"],
        "password": password or _generated_password(),
        "platform_admin": bool(values["platform_admin"]),
    }
    result = await ConsoleApi(request, user).post("/api/v1/users", body)
    if result.status == 403:
        return _refused(request, user, result)
    if not result.ok:
        return await _list_page(request, user, values=values, errors=_errors(result), status=422)
    context = {"account": result.data, "password": body["password"] if generated else ""}
    return render(request, user, "user_created.html", context, section="users", status=201)


async def _memberships(api: ConsoleApi, username: str) -> list[dict[str, Any]]:
    """The user's role in each business (the API has no per-user list: each business's
    members are read; a platform admin sees every business)."""
    businesses = await every_item(api, "/api/v1/businesses")
    rows: list[dict[str, Any]] = []
    for b in businesses.data if businesses.ok else []:
        members = await every_item(api, f"/api/v1/businesses/{quote(b['name'])}/members")
        for m in members.data if members.ok else []:
            if m["username"] == username:
                rows.append({"business": b["name"], "role": m["role"], "since": m["since"]})
    return rows


async def _user_page(
    request: Request,
    user: ConsoleUser,
    username: str,
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    account = await api.get(f"/api/v1/users/{quote(username)}")
    if not account.ok or not user.is_admin:
        if account.ok:  # a user reading their own account here: the admin page is not theirs
            account = ApiResult(403, {"message": "only a platform administrator manages users"})
        return _refused(request, user, account)
    businesses = await every_item(api, "/api/v1/businesses")
    context = {
        "account": account.data,
        "memberships": await _memberships(api, username),
        "businesses": [b["name"] for b in businesses.data] if businesses.ok else [],
        "roles": ROLES,
        "errors": errors or {},
    }
    return render(request, user, "user.html", context, section="users", status=status)


@router.get("/console/users/{username}")
async def user_page(request: Request, user: User, username: Username) -> Response:
    return await _user_page(request, user, username)


def _here(username: str) -> str:
    return f"/console/users/{quote(username)}"


@router.post("/console/users/{username}/disable", response_model=None)
async def user_disable(request: Request, user: User, username: Username) -> Response:
    return await _set_disabled(request, user, username, disabled=True)


@router.post("/console/users/{username}/enable", response_model=None)
async def user_enable(request: Request, user: User, username: Username) -> Response:
    return await _set_disabled(request, user, username, disabled=False)


async def _set_disabled(
    request: Request, user: ConsoleUser, username: str, *, disabled: bool
) -> Response:
    _ = translator(user.language)
    result = await ConsoleApi(request, user).patch(
        f"/api/v1/users/{quote(username)}", {"disabled": disabled}
    )
    if result.status in (403, 404):
        return _refused(request, user, result)
    if not result.ok:
        return redirect(_here(username), error=result.error)
    message = _("Account disabled.") if disabled else _("Account enabled.")
    return redirect(_here(username), ok=message)


@router.post("/console/users/{username}/password", response_model=None)
async def user_password(request: Request, user: User, username: Username) -> Response:
    form = await request.form()
    password = str(form.get("password") or "")[:1024]
    generated = not password
    new = password or _generated_password()
    result = await ConsoleApi(request, user).patch(
        f"/api/v1/users/{quote(username)}", {"password": new}
    )
    if result.status in (403, 404):
        return _refused(request, user, result)
    if not result.ok:
        return await _user_page(request, user, username, errors=_errors(result), status=422)
    context = {"account": result.data, "password": new if generated else "", "reset": True}
    return render(request, user, "user_created.html", context, section="users")


@router.post("/console/users/{username}/roles", response_model=None)
async def role_grant(request: Request, user: User, username: Username) -> Response:
    form = await request.form()
    biz = str(form.get("business") or "")[:63]
    role = str(form.get("role") or "")[:32]
    _ = translator(user.language)
    errors: dict[str, str] = {}
    if not biz:
        errors["business"] = _("Choose a business.")
    if role not in ROLES:
        errors["role"] = _("Choose a role.")
    if errors:
        return await _user_page(request, user, username, errors=errors, status=422)
    result = await ConsoleApi(request, user).put(
        f"/api/v1/businesses/{quote(biz)}/members/{quote(username)}", {"role": role}
    )
    if result.status == 403:
        return _refused(request, user, result)
    if not result.ok:
        return await _user_page(request, user, username, errors=_errors(result), status=422)
    return redirect(
        _here(username), ok=_("Role {role} granted in {business}.", role=role, business=biz)
    )


@router.post("/console/users/{username}/roles/{biz}/revoke", response_model=None)
async def role_revoke(request: Request, user: User, username: Username, biz: Biz) -> Response:
    _ = translator(user.language)
    result = await ConsoleApi(request, user).delete(
        f"/api/v1/businesses/{quote(biz)}/members/{quote(username)}"
    )
    if result.status == 403:
        return _refused(request, user, result)
    if not result.ok:
        return redirect(_here(username), error=result.error)
    return redirect(_here(username), ok=_("Role in {business} revoked.", business=biz))
