"""Who alerts reach and who is muted (issue 20): notification channels, receivers and receiver
groups, silences.

- ``/console/alerts/channels``: the channels the user sees; a business's admins (the API's
  ``channel.manage``) create, edit, enable, delete and "send a test" (the API sends one now and
  answers the server's receipt or the reason it failed). Credentials are write-only: their
  inputs are always empty (left empty, the stored value is kept, as the API's ``PATCH`` does)
  and the page shows only what the API shows, which masks them.
- ``/console/alerts/receivers``: people (an email address, a phone number) and groups of them;
  developers and above write them (``alert.write``): create, edit (``?edit_receiver=`` /
  ``?edit_group=`` opens a row's form under the tables, saved with the API's ``PATCH``; a
  group's members are the boxes ticked) and delete.
- ``/console/alerts/silences``: active and expired silences, a form for a new one (label
  matchers, how long, a comment), and expire-now.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from gaia.console.listing import every_item
from gaia.console.pages.alerts import WRITERS
from gaia.console.web import ApiResult, ConsoleApi, ConsoleUser, User, redirect, render, translator

router = APIRouter(include_in_schema=False)
Id = Annotated[int, Path(ge=1, le=2**31)]
CHANNELS = "/api/v1/alerts/channels"
RECEIVERS = "/api/v1/alerts/receivers"
GROUPS = "/api/v1/alerts/receiver-groups"
SILENCES = "/api/v1/alerts/silences"
ADMINS = ("business-admin", "platform-admin")


@dataclass(frozen=True, slots=True)
class ConfigField:
    """One setting of a channel kind as the form shows it; ``secret``: write-only."""

    key: str
    label: str
    hint: str = ""
    secret: bool = False
    kind: str = "text"  # text | number | lines (a list, one per line) | headers | bool


CONFIG_FIELDS: dict[str, tuple[ConfigField, ...]] = {
    "email": (
        ConfigField("host", "SMTP host"),
        ConfigField("port", "Port", "empty: the security's default", kind="number"),
        ConfigField("security", "Security", "starttls, tls or none"),
        ConfigField("sender", "Sender address"),
        ConfigField("username", "User name"),
        ConfigField("password", "Password", secret=True),
    ),
    "sms": (
        ConfigField("region", "Region"),
        ConfigField("secret_id", "SecretId"),
        ConfigField("secret_key", "SecretKey", secret=True),
        ConfigField("sdk_app_id", "SDK app id"),
        ConfigField("sign_name", "Signature name"),
        ConfigField("template_id", "Template id"),
    ),
    "wecom": (
        ConfigField("webhook_url", "Group robot webhook URL", secret=True),
        ConfigField("mention_mobiles", "Mention receivers by phone", kind="bool"),
    ),
    "webhook": (
        ConfigField("url", "URL", "https://; shown cut to its origin once saved"),
        ConfigField("hmac_secret", "HMAC signing secret", "at least 16 characters", secret=True),
        ConfigField("headers", "Headers", "one Name: value per line", secret=True, kind="headers"),
    ),
}
KINDS = tuple(CONFIG_FIELDS)


async def _roles(api: ConsoleApi, user: ConsoleUser) -> dict[str, str]:
    listed = await every_item(api, "/api/v1/businesses")
    rows: list[dict[str, Any]] = listed.data if listed.ok else []
    role = "platform-admin" if user.is_admin else ""
    return {b["name"]: role or b.get("role") or "" for b in rows}


def _field_key(path: str, kind: str) -> str:
    """Where a refusal's field lands: a config key on its input, others on theirs."""
    key = path.removeprefix("config.")
    if any(f.key == key.split(".")[0] for f in CONFIG_FIELDS.get(kind, ())):
        return "cfg_" + key.split(".")[0]
    return key if key in ("name", "kind", "business", "rate_limit_per_minute") else "form"


def _errors(result: ApiResult, kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for path, message in result.field_errors.items():
        out.setdefault(_field_key(path, kind), message)
    return out or {"form": result.error}


def config_from_form(
    form: FormData, kind: str, *, new: bool, _: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """The channel's config from the form: a secret left empty is left out (kept, on an edit),
    an empty setting is left out (the kind's default)."""
    config: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in CONFIG_FIELDS.get(kind, ()):
        raw = str(form.get(f"cfg_{f.key}") or "")[:8000]
        if f.kind == "bool":
            config[f.key] = raw == "true"
        elif not raw.strip():
            continue
        elif f.kind == "number":
            if not raw.strip().isdigit():
                errors[f"cfg_{f.key}"] = _("a whole number")
            else:
                config[f.key] = int(raw)
        elif f.kind == "headers":
            headers: dict[str, str] = {}
            for line in raw.splitlines():
                name, sep, value = line.partition(":")
                if not line.strip():
                    continue
                if not sep or not name.strip():
                    errors[f"cfg_{f.key}"] = _("one Name: value per line")
                    break
                headers[name.strip()] = value.strip()
            config[f.key] = headers
        else:
            config[f.key] = raw.strip()
    return config, errors


# ---------------------------------------------------------------- channels


async def _channels_page(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    editing: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    listed = await every_item(api, CHANNELS)
    roles = await _roles(api, user)
    channels: list[dict[str, Any]] = listed.data if listed.ok else []
    for c in channels:
        c["manage"] = user.is_admin or roles.get(c["business"] or "") in ADMINS
    managed = [b for b, r in roles.items() if r in ADMINS]
    return render(
        request,
        user,
        "alert_channels.html",
        {
            "channels": channels,
            "error": listed.error,
            "businesses": managed,
            "may_create": bool(managed) or user.is_admin,
            "kinds": KINDS,
            "fields": CONFIG_FIELDS,
            "values": values or {"kind": "email", "rate_limit_per_minute": "60"},
            "errors": errors or {},
            "editing": editing,
            "test": request.query_params.get("test", ""),
        },
        section="alerts",
        status=status,
    )


@router.get("/console/alerts/channels")
async def channels_list(request: Request, user: User, edit: int = 0) -> Response:
    editing = None
    if edit:
        found = await ConsoleApi(request, user).get(f"{CHANNELS}/{edit}")
        editing = found.data if found.ok and found.data.get("config") is not None else None
    return await _channels_page(request, user, editing=editing)


def _channel_values(form: FormData) -> dict[str, str]:
    keys = ("business", "name", "kind", "rate_limit_per_minute")
    values = {k: str(form.get(k) or "")[:200] for k in keys}
    # what was typed comes back, except credentials (never rendered back)
    secret = {f"cfg_{f.key}" for fs in CONFIG_FIELDS.values() for f in fs if f.secret}
    for fs in CONFIG_FIELDS.values():
        for f in fs:
            name = f"cfg_{f.key}"
            if name not in secret:
                values[name] = str(form.get(name) or "")[:2000]
    return values


@router.post("/console/alerts/channels", response_model=None)
async def channel_create(request: Request, user: User) -> Response:
    form = await request.form()
    values = _channel_values(form)
    kind = values["kind"] if values["kind"] in KINDS else "email"
    _ = translator(user.language)
    config, errors = config_from_form(form, kind, new=True, _=_)
    rate = values["rate_limit_per_minute"].strip() or "60"
    if not rate.isdigit() or len(rate) > 6:
        errors["rate_limit_per_minute"] = _("a whole number")
    if not errors:
        body: dict[str, Any] = {
            "name": values["name"].strip(),
            "kind": kind,
            "config": config,
            "rate_limit_per_minute": int(rate),
        }
        if values["business"]:
            body["business"] = values["business"]
        result = await ConsoleApi(request, user).post(CHANNELS, body)
        if result.ok:
            return redirect(
                "/console/alerts/channels", ok=_("created channel {name}", name=result.data["name"])
            )
        errors = _errors(result, kind)
    return await _channels_page(request, user, values=values, errors=errors, status=422)


@router.post("/console/alerts/channels/{channel_id}", response_model=None)
async def channel_update(request: Request, user: User, channel_id: Id) -> Response:
    api = ConsoleApi(request, user)
    found = await api.get(f"{CHANNELS}/{channel_id}")
    if not found.ok:
        return redirect("/console/alerts/channels", error=found.error)
    form = await request.form()
    kind = found.data["kind"]
    _ = translator(user.language)
    config, errors = config_from_form(form, kind, new=False, _=_)
    body: dict[str, Any] = {
        "name": str(form.get("name") or "").strip()[:200],
        "enabled": form.get("enabled") == "true",
        "config": config,
    }
    if not errors:
        result = await api.patch(f"{CHANNELS}/{channel_id}", body)
        if result.ok:
            return redirect(
                "/console/alerts/channels", ok=_("saved channel {name}", name=result.data["name"])
            )
        errors = _errors(result, kind)
    return await _channels_page(
        request,
        user,
        errors=errors,
        editing=found.data,
        status=422,
    )


@router.post("/console/alerts/channels/{channel_id}/test", response_model=None)
async def channel_test(request: Request, user: User, channel_id: Id) -> Response:
    result = await ConsoleApi(request, user).post(f"{CHANNELS}/{channel_id}/test")
    _ = translator(user.language)
    if not result.ok:
        return redirect("/console/alerts/channels", error=result.error)
    if result.data["ok"]:
        message = _("test sent; the server answered: {receipt}", receipt=result.data["receipt"])
        return redirect("/console/alerts/channels", ok=message)
    return redirect(
        "/console/alerts/channels",
        error=_("the test failed: {reason}", reason=result.data["error"]),
    )


@router.post("/console/alerts/channels/{channel_id}/delete", response_model=None)
async def channel_delete(request: Request, user: User, channel_id: Id) -> Response:
    result = await ConsoleApi(request, user).delete(f"{CHANNELS}/{channel_id}")
    if result.ok:
        return redirect(
            "/console/alerts/channels", ok=translator(user.language)("deleted the channel")
        )
    return redirect("/console/alerts/channels", error=result.error)


# ---------------------------------------------------------------- receivers and groups


async def _receivers_page(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    edit_receiver: int = 0,
    edit_group: int = 0,
    typed: dict[str, Any] | None = None,
) -> Response:
    """The lists and the create forms; ``edit_receiver`` / ``edit_group``: also the edit form of
    that row if the user may write it, filled with ``typed`` (what a refused save held) over the
    row as the API has it."""
    api = ConsoleApi(request, user)
    receivers = await every_item(api, RECEIVERS)
    groups = await every_item(api, GROUPS)
    roles = await _roles(api, user)
    writable = [b for b, r in roles.items() if r in WRITERS]
    rows: list[dict[str, Any]] = receivers.data if receivers.ok else []
    names = {r["id"]: r["name"] for r in rows}
    group_rows: list[dict[str, Any]] = groups.data if groups.ok else []
    for item in rows + group_rows:
        item["write"] = user.is_admin or roles.get(item["business"] or "") in WRITERS
    for g in group_rows:
        g["members"] = [names.get(i, f"#{i}") for i in g["receiver_ids"]]
    editing_receiver = _writable_row(rows, edit_receiver, typed)
    editing_group = _writable_row(group_rows, edit_group, typed)
    return render(
        request,
        user,
        "alert_receivers.html",
        {
            "receivers": rows,
            "groups": group_rows,
            "editing_receiver": editing_receiver,
            "editing_group": editing_group,
            # the receivers a group of that owner may hold (the API refuses another owner's)
            "group_choices": [
                r for r in rows if editing_group and r["business"] == editing_group["business"]
            ],
            "error": receivers.error or groups.error,
            "businesses": writable,
            "may_create": bool(writable) or user.is_admin,
            "values": values or {},
            "errors": errors or {},
        },
        section="alerts",
        status=status,
    )


def _writable_row(
    rows: list[dict[str, Any]], row_id: int, typed: dict[str, Any] | None
) -> dict[str, Any] | None:
    found = next((r for r in rows if r["id"] == row_id and r["write"]), None)
    return {**found, **(typed or {})} if found else None


@router.get("/console/alerts/receivers")
async def receivers_list(
    request: Request, user: User, edit_receiver: int = 0, edit_group: int = 0
) -> Response:
    return await _receivers_page(request, user, edit_receiver=edit_receiver, edit_group=edit_group)


@router.post("/console/alerts/receivers", response_model=None)
async def receiver_create(request: Request, user: User) -> Response:
    form = await request.form()
    values = {
        k: str(form.get(k) or "").strip()[:300] for k in ("business", "name", "email", "phone")
    }
    body: dict[str, Any] = {k: v for k, v in values.items() if v or k != "business"}
    result = await ConsoleApi(request, user).post(RECEIVERS, body)
    if result.ok:
        ok = translator(user.language)("added receiver {name}", name=result.data["name"])
        return redirect("/console/alerts/receivers", ok=ok)
    errors = result.field_errors or {"form": result.error}
    return await _receivers_page(request, user, values=values, errors=errors, status=422)


@router.post("/console/alerts/receivers/{receiver_id}", response_model=None)
async def receiver_update(request: Request, user: User, receiver_id: Id) -> Response:
    form = await request.form()
    # every field is sent: an emptied email or phone is removed, as the user sees it
    typed = {k: str(form.get(k) or "").strip()[:300] for k in ("name", "email", "phone")}
    result = await ConsoleApi(request, user).patch(f"{RECEIVERS}/{receiver_id}", typed)
    if result.ok:
        ok = translator(user.language)("saved receiver {name}", name=result.data["name"])
        return redirect("/console/alerts/receivers", ok=ok)
    if result.status not in (400, 422):
        return redirect("/console/alerts/receivers", error=result.error)
    errors = {f"edit_{k}": v for k, v in result.field_errors.items()}
    return await _receivers_page(
        request,
        user,
        errors=errors or {"edit_form": result.error},
        status=422,
        edit_receiver=receiver_id,
        typed=typed,
    )


@router.post("/console/alerts/receivers/{receiver_id}/delete", response_model=None)
async def receiver_delete(request: Request, user: User, receiver_id: Id) -> Response:
    result = await ConsoleApi(request, user).delete(f"{RECEIVERS}/{receiver_id}")
    if result.ok:
        ok = translator(user.language)("deleted the receiver")
        return redirect("/console/alerts/receivers", ok=ok)
    return redirect("/console/alerts/receivers", error=result.error)


@router.post("/console/alerts/groups", response_model=None)
async def group_create(request: Request, user: User) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "").strip()[:300] for k in ("business", "group_name")}
    members = [str(i) for i in form.getlist("receiver_ids")][:100]
    body: dict[str, Any] = {
        "name": values["group_name"],
        "receiver_ids": [int(i) for i in members if i.isdigit() and len(i) < 11],
    }
    if values["business"]:
        body["business"] = values["business"]
    result = await ConsoleApi(request, user).post(GROUPS, body)
    if result.ok:
        ok = translator(user.language)("added group {name}", name=result.data["name"])
        return redirect("/console/alerts/receivers", ok=ok)
    errors = {("group_" + k if k == "name" else k): v for k, v in result.field_errors.items()}
    errors = errors or {"group_form": result.error}
    return await _receivers_page(request, user, values=values, errors=errors, status=422)


@router.post("/console/alerts/groups/{group_id}", response_model=None)
async def group_update(request: Request, user: User, group_id: Id) -> Response:
    form = await request.form()
    members = [str(i) for i in form.getlist("receiver_ids")][:100]
    body: dict[str, Any] = {
        "name": str(form.get("group_name") or "").strip()[:300],
        # the boxes ticked are the members: none ticked empties the group
        "receiver_ids": [int(i) for i in members if i.isdigit() and len(i) < 11],
    }
    result = await ConsoleApi(request, user).patch(f"{GROUPS}/{group_id}", body)
    if result.ok:
        ok = translator(user.language)("saved group {name}", name=result.data["name"])
        return redirect("/console/alerts/receivers", ok=ok)
    if result.status not in (400, 422):
        return redirect("/console/alerts/receivers", error=result.error)
    errors = {
        ("edit_group_name" if k == "name" else f"edit_{k}"): v
        for k, v in result.field_errors.items()
    }
    return await _receivers_page(
        request,
        user,
        errors=errors or {"edit_group_form": result.error},
        status=422,
        edit_group=group_id,
        typed=body,
    )


@router.post("/console/alerts/groups/{group_id}/delete", response_model=None)
async def group_delete(request: Request, user: User, group_id: Id) -> Response:
    result = await ConsoleApi(request, user).delete(f"{GROUPS}/{group_id}")
    if result.ok:
        ok = translator(user.language)("deleted the group")
        return redirect("/console/alerts/receivers", ok=ok)
    return redirect("/console/alerts/receivers", error=result.error)


# ---------------------------------------------------------------- silences


async def _silences_page(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    listed = await every_item(api, SILENCES)
    roles = await _roles(api, user)
    writable = [b for b, r in roles.items() if r in WRITERS]
    rows: list[dict[str, Any]] = listed.data if listed.ok else []
    for s in rows:
        s["write"] = user.is_admin or roles.get(s["business"] or "") in WRITERS
    return render(
        request,
        user,
        "alert_silences.html",
        {
            "silences": rows,
            "error": listed.error,
            "businesses": writable,
            "may_create": bool(writable) or user.is_admin,
            "values": values or {"hours": "4"},
            "errors": errors or {},
        },
        section="alerts",
        status=status,
    )


@router.get("/console/alerts/silences")
async def silences_list(request: Request, user: User) -> Response:
    return await _silences_page(request, user)


def matchers_from_text(text: str) -> dict[str, str] | None:
    """``name=value`` pairs, one per line or separated by commas; None when a pair is bad."""
    out: dict[str, str] = {}
    for part in text.replace(",", "\n").splitlines():
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            return None
        out[name.strip()] = value.strip()
    return out


@router.post("/console/alerts/silences", response_model=None)
async def silence_create(request: Request, user: User) -> Response:
    form = await request.form()
    keys = ("business", "matchers", "hours", "comment")
    values = {k: str(form.get(k) or "")[:2000] for k in keys}
    _ = translator(user.language)
    errors: dict[str, str] = {}
    matchers = matchers_from_text(values["matchers"])
    if not matchers:
        errors["matchers"] = _("one name=value or more, e.g. app=web")
    try:
        hours = float(values["hours"])
    except ValueError:
        hours = 0
    if not 0 < hours <= 24 * 365:
        errors["hours"] = _("a number of hours, more than 0 and at most a year")
    if not errors:
        now = request.app.state.platform.clock.now().astimezone(dt.UTC)
        body: dict[str, Any] = {
            "matchers": matchers,
            "ends_at": (now + dt.timedelta(hours=hours)).isoformat(),
            "comment": values["comment"].strip(),
        }
        if values["business"]:
            body["business"] = values["business"]
        result = await ConsoleApi(request, user).post(SILENCES, body)
        if result.ok:
            return redirect("/console/alerts/silences", ok=_("silence created"))
        errors = result.field_errors or {"form": result.error}
    return await _silences_page(request, user, values=values, errors=errors, status=422)


@router.post("/console/alerts/silences/{silence_id}/expire", response_model=None)
async def silence_expire(request: Request, user: User, silence_id: Id) -> Response:
    result = await ConsoleApi(request, user).delete(f"{SILENCES}/{silence_id}")
    if result.ok:
        ok = translator(user.language)("the silence has ended")
        return redirect("/console/alerts/silences", ok=ok)
    return redirect("/console/alerts/silences", error=result.error)
