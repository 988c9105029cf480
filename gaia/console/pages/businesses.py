"""Console pages: businesses (the tenants), their members, quotas, instance configurations, and
their ConfigMaps and Secrets.

Routes, all under ``/console/businesses``:

- ``""``: the businesses the user can see, filtered by name and paged here on the server, each
  with its member and cluster counts and its usage against quota (from ``/api/v1/overview``);
  platform admins create one.
- ``/{biz}``, ``/{biz}/quotas``, ``/{biz}/instance-configs``: one business as tabs
  (``business_tabs.html``), each tab its own URL so that each list pages on its own ``?page=``:
  members and roles (business and platform admins add, change and remove), the used/total table
  per cluster, and the business's and the platform's instance shapes.
- ``/{biz}/configs`` and ``/{biz}/configs/{kind}/{name}``: ConfigMaps and Secrets, listed
  together; create, replace and delete.

Every read and action goes through ``ConsoleApi`` as the logged-in user, so the API decides what
may be seen and done; the pages only hide the buttons a role cannot use (from ``role`` in
``GET /businesses/{biz}``). An action is a form posted here, answered with a redirect and a flash;
a 422 instead renders the form again with each message beside its field (such forms opt out of
``hx-boost``, since htmx does not swap a 4xx answer into the page).

**Secret values.** Lists and the Secret page show key names and sizes only. The values leave the
server only when a developer or above presses "Reveal": a POST here that calls
``GET .../secrets/{name}?reveal=true`` (the API writes that reading to the operation records) and
renders the values into that one response, marked ``no-store``; they are never put in a URL, a
redirect or a flash, and reloading the page hides them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from gaia.console.listing import every_item, mentions, paginate
from gaia.console.web import (
    EMPTY_FORM,
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    PageNumber,
    PageSize,
    RefusedForm,
    Translate,
    User,
    redirect,
    refusal_page,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
Filter = Annotated[str, Query(max_length=253)]

BASE = "/console/businesses"
ROLES = ("business-admin", "developer", "viewer")
# What a role may do here, mirroring gaia.domain.rbac: only to hide buttons; the API decides.
RANK = {"viewer": 1, "developer": 2, "business-admin": 3, "platform-admin": 4}
DIMENSIONS = (
    "cpu",
    "memory",
    "local_disk",
    "cloud_disk",
    "shared_disk",
    "bandwidth",
    "gpu",
    "gpu_memory",
)
KINDS = {"configmap": "configmaps", "secret": "secrets"}
TITLES = {"configmap": "ConfigMap", "secret": "Secret"}


# ---------------------------------------------------------------- shared helpers


def _error_page(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="business_error.html", section="businesses")


def _rank(business: Mapping[str, Any]) -> int:
    return RANK.get(str(business.get("role") or ""), 0)


def _can(business: Mapping[str, Any]) -> dict[str, bool]:
    rank = _rank(business)
    return {
        "write": rank >= RANK["developer"],  # configs, reveal
        "manage": rank >= RANK["business-admin"],  # members, instance configurations
    }


def _t(user: ConsoleUser) -> Translate:
    """Translation of the flash messages this module writes (the API's own stay English)."""
    return translator(user.language)


# ---------------------------------------------------------------- the list


@router.get("/console/businesses")
async def business_list(
    request: Request,
    user: User,
    name: Filter = "",
    page: PageNumber = 1,
    size: PageSize = 20,
) -> Response:
    return await _business_list(request, user, name=name, page=page, size=size)


async def _business_list(
    request: Request,
    user: ConsoleUser,
    *,
    name: str = "",
    page: int = 1,
    size: int = 20,
    refused: RefusedForm = EMPTY_FORM,
) -> Response:
    api = ConsoleApi(request, user)
    listed = await every_item(api, "/api/v1/businesses")
    if not listed.ok:
        return _error_page(request, user, listed)
    rows = [b for b in listed.data if mentions(name, b["name"], b["display_name"])]
    paged = paginate(rows, page=page, size=size, query={"name": name, "size": size})
    summaries = await _summaries(api, [b["name"] for b in paged.items])
    return render(
        request,
        user,
        "businesses.html",
        {
            "paged": paged,
            "name": name,
            "summaries": summaries,
            "form": refused.values,
            "errors": refused.errors,
        },
        section="businesses",
        status=refused.status,
    )


async def _summaries(api: ConsoleApi, names: list[str]) -> dict[str, dict[str, Any]]:
    """Members, clusters and usage per business: one overview call for the common case (it sums
    in the database), and the business's own lists for any it leaves out (it stops at 500)."""
    overview = await api.get("/api/v1/overview")
    known = (
        {b["name"]: b for b in overview.data.get("businesses", [])}
        if overview.ok and isinstance(overview.data, dict)
        else {}
    )
    out: dict[str, dict[str, Any]] = {}
    for biz in names:
        if biz in known:
            row = known[biz]
            out[biz] = {
                "members": row["members"],
                "clusters": row["clusters"],
                "usage": {u["dimension"]: u for u in row["usage"]},
            }
            continue
        members = await every_item(api, f"/api/v1/businesses/{biz}/members")
        quotas = await every_item(api, f"/api/v1/businesses/{biz}/quotas")
        usage: dict[str, dict[str, Any]] = {}
        for quota in quotas.data if quotas.ok else []:
            for d in quota["dimensions"]:
                line = usage.setdefault(
                    d["dimension"],
                    {"dimension": d["dimension"], "unit": d["unit"], "used": 0, "total": 0},
                )
                line["used"] += d["used"]
                line["total"] += d["total"]
        out[biz] = {
            "members": len(members.data) if members.ok else None,
            "clusters": len(quotas.data) if quotas.ok else None,
            "usage": usage,
        }
    return out


@router.post("/console/businesses", response_model=None)
async def business_create(
    request: Request,
    user: User,
    name: Annotated[str, Form(max_length=200)] = "",
    display_name: Annotated[str, Form(max_length=400)] = "",
    description: Annotated[str, Form(max_length=4000)] = "",
    admins: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    body = {
        "name": name.strip(),
        "display_name": display_name.strip(),
        "description": description,
        "admins": [a for a in admins.replace(",", " ").split() if a],
    }
    result = await ConsoleApi(request, user).post("/api/v1/businesses", body)
    if result.ok:
        return redirect(
            f"{BASE}/{result.data['name']}",
            ok=_t(user)("created business {name}", name=result.data["name"]),
        )
    if result.status == 422 or result.status == 409:
        errors = result.field_errors or {"name": result.error}
        form = {
            "name": name,
            "display_name": display_name,
            "description": description,
            "admins": admins,
        }
        return await _business_list(request, user, refused=RefusedForm(form, errors, result.status))
    return redirect(BASE, error=result.error)


# ---------------------------------------------------------------- one business: members


async def _tab(
    request: Request, user: ConsoleUser, api: ConsoleApi, biz: str, tab: str
) -> dict[str, Any] | Response:
    """The head every tab of one business shows (the business, what the user may do there,
    which tab), or the API's refusal page to answer instead."""
    business = await api.get(f"/api/v1/businesses/{biz}")
    if not business.ok:
        return _error_page(request, user, business)
    return {"biz": business.data, "can": _can(business.data), "tab": tab}


@router.get("/console/businesses/{biz}")
async def business_members(
    request: Request,
    user: User,
    biz: str,
    member: Filter = "",
    page: PageNumber = 1,
    size: PageSize = 50,
) -> Response:
    api = ConsoleApi(request, user)
    head = await _tab(request, user, api, biz, "members")
    if isinstance(head, Response):
        return head
    members = await every_item(api, f"/api/v1/businesses/{biz}/members")
    if not members.ok:
        return _error_page(request, user, members)
    rows = [m for m in members.data if mentions(member, m["username"], m["display_name"])]
    paged = paginate(rows, page=page, size=size, query={"member": member, "size": size})
    return render(
        request,
        user,
        "business.html",
        {
            **head,
            "paged": paged,
            "member": member,
            "roles": ROLES,
        },
        section="businesses",
    )


@router.post("/console/businesses/{biz}/members", response_model=None)
async def member_add(
    request: Request,
    user: User,
    biz: str,
    username: Annotated[str, Form(max_length=200)] = "",
    role: Annotated[str, Form(max_length=40)] = "viewer",
) -> Response:
    username = username.strip()
    back = f"{BASE}/{biz}"
    if not username:
        return redirect(back, error=_t(user)("enter the username of the member to add"))
    return await _set_role(request, user, biz, username, role)


async def _set_role(
    request: Request, user: ConsoleUser, biz: str, username: str, role: str
) -> Response:
    """Add a member or change a role: the API's PUT does both."""
    back = f"{BASE}/{biz}"
    result = await ConsoleApi(request, user).put(
        f"/api/v1/businesses/{biz}/members/{username}", {"role": role}
    )
    if not result.ok:
        return redirect(back, error=result.error)
    return redirect(
        back,
        ok=_t(user)(
            "{username} is now {role} of {biz}", username=username, role=_t(user)(role), biz=biz
        ),
    )


@router.post("/console/businesses/{biz}/members/{username}/role", response_model=None)
async def member_role(
    request: Request,
    user: User,
    biz: str,
    username: str,
    role: Annotated[str, Form(max_length=40)],
) -> Response:
    return await _set_role(request, user, biz, username, role)


@router.post("/console/businesses/{biz}/members/{username}/delete", response_model=None)
async def member_remove(request: Request, user: User, biz: str, username: str) -> Response:
    back = f"{BASE}/{biz}"
    result = await ConsoleApi(request, user).delete(f"/api/v1/businesses/{biz}/members/{username}")
    if not result.ok:
        return redirect(back, error=result.error)
    return redirect(back, ok=_t(user)("removed {username} from {biz}", username=username, biz=biz))


# ---------------------------------------------------------------- one business: quotas


@router.get("/console/businesses/{biz}/quotas")
async def business_quotas(request: Request, user: User, biz: str) -> Response:
    api = ConsoleApi(request, user)
    head = await _tab(request, user, api, biz, "quotas")
    if isinstance(head, Response):
        return head
    quotas = await every_item(api, f"/api/v1/businesses/{biz}/quotas")
    if not quotas.ok:
        return _error_page(request, user, quotas)
    return render(
        request,
        user,
        "business_quotas.html",
        {**head, "quotas": quotas.data},
        section="businesses",
    )


# ---------------------------------------------------------------- one business: instance shapes


@router.get("/console/businesses/{biz}/instance-configs")
async def business_instance_configs(
    request: Request,
    user: User,
    biz: str,
    name: Filter = "",
    page: PageNumber = 1,
    size: PageSize = 50,
) -> Response:
    return await _instance_configs(request, user, biz, name=name, page=page, size=size)


async def _instance_configs(
    request: Request,
    user: ConsoleUser,
    biz: str,
    *,
    name: str = "",
    page: int = 1,
    size: int = 50,
    refused: RefusedForm = EMPTY_FORM,
) -> Response:
    api = ConsoleApi(request, user)
    head = await _tab(request, user, api, biz, "instance-configs")
    if isinstance(head, Response):
        return head
    own = await every_item(api, f"/api/v1/businesses/{biz}/instance-configs")
    shared = await every_item(api, "/api/v1/instance-configs")
    for result in (own, shared):
        if not result.ok:
            return _error_page(request, user, result)
    own_names = {c["name"] for c in own.data}
    rows = [c for c in [*own.data, *shared.data] if mentions(name, c["name"], c["description"])]
    paged = paginate(rows, page=page, size=size, query={"name": name, "size": size})
    return render(
        request,
        user,
        "business_instance_configs.html",
        {
            **head,
            "paged": paged,
            "name": name,
            "own_names": own_names,
            "dimensions": DIMENSIONS,
            "form": refused.values,
            "errors": refused.errors,
        },
        section="businesses",
        status=refused.status,
    )


@router.post("/console/businesses/{biz}/instance-configs", response_model=None)
async def instance_config_create(request: Request, user: User, biz: str) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
    body = {
        "name": form.get("name", "").strip(),
        "description": form.get("description", ""),
        # Blank means none of it; the API validates the numbers and names a wrong one.
        "resources": {d: form.get(d, "").strip() or "0" for d in DIMENSIONS},
    }
    result = await ConsoleApi(request, user).post(
        f"/api/v1/businesses/{biz}/instance-configs", body
    )
    if result.ok:
        return redirect(
            f"{BASE}/{biz}/instance-configs",
            ok=_t(user)(
                "created instance configuration {name}: {summary}",
                name=result.data["name"],
                summary=result.data["summary"],
            ),
        )
    if result.status in (409, 422):
        errors = {k.removeprefix("resources."): v for k, v in result.field_errors.items()}
        return await _instance_configs(
            request,
            user,
            biz,
            refused=RefusedForm(form, errors or {"name": result.error}, result.status),
        )
    return redirect(f"{BASE}/{biz}/instance-configs", error=result.error)


@router.post("/console/businesses/{biz}/instance-configs/{name}/delete", response_model=None)
async def instance_config_delete(request: Request, user: User, biz: str, name: str) -> Response:
    back = f"{BASE}/{biz}/instance-configs"
    result = await ConsoleApi(request, user).delete(
        f"/api/v1/businesses/{biz}/instance-configs/{name}"
    )
    if not result.ok:
        return redirect(back, error=result.error)
    return redirect(back, ok=_t(user)("deleted instance configuration {name}", name=name))


# ---------------------------------------------------------------- ConfigMaps and Secrets


def parse_pairs(text: str) -> tuple[dict[str, str], list[str]]:
    """``key=value`` per line (the first ``=`` splits; blank lines and ``#`` lines are skipped)
    into data, and the numbers of lines that are not of that form."""
    data: dict[str, str] = {}
    bad: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            bad.append(str(number))
            continue
        data[key.strip()] = value
    return data, bad


def form_data(keys: list[str], values: list[str], pairs: str) -> tuple[dict[str, str], str]:
    """The data of a config form: the key/value rows, then the ``key=value`` lines (a key in
    both takes the line's value). A row whose key is blank is left out: that is how a key is
    removed. Returns the data and the numbers of the lines that could not be read ("" if none)."""
    data: dict[str, str] = {}
    for key, value in zip(keys, values, strict=False):
        if key.strip():
            data[key.strip()] = value.replace("\r\n", "\n")
    lines, bad = parse_pairs(pairs)
    data.update(lines)
    return data, ", ".join(bad)


def _config_errors(result: ApiResult) -> dict[str, str]:
    """422 messages by form field: ``name``, ``description`` and ``data`` (any key)."""
    errors: dict[str, str] = {}
    for field, message in result.field_errors.items():
        if field.startswith("data"):
            key = field.removeprefix("data").lstrip(".")
            errors["data"] = (errors.get("data", "") + f" {key}: {message}".rstrip(": ")).strip()
        else:
            errors[field] = message
    return errors or {"name": result.error}


@router.get("/console/businesses/{biz}/configs")
async def config_list(
    request: Request,
    user: User,
    biz: str,
    name: Filter = "",
    kind: Annotated[str, Query(max_length=20)] = "",
    page: PageNumber = 1,
    size: PageSize = 50,
) -> Response:
    return await _config_list(request, user, biz, name=name, kind=kind, page=page, size=size)


async def _config_list(
    request: Request,
    user: ConsoleUser,
    biz: str,
    *,
    name: str = "",
    kind: str = "",
    page: int = 1,
    size: int = 50,
    refused: RefusedForm = EMPTY_FORM,
) -> Response:
    api = ConsoleApi(request, user)
    head = await _tab(request, user, api, biz, "configs")
    if isinstance(head, Response):
        return head
    rows: list[dict[str, Any]] = []
    for each, plural in KINDS.items():
        if kind and kind != each:
            continue
        listed = await every_item(api, f"/api/v1/businesses/{biz}/{plural}")
        if not listed.ok:
            return _error_page(request, user, listed)
        for item in listed.data:
            keys = [k["key"] for k in item["keys"]] if each == "secret" else sorted(item["data"])
            rows.append({**item, "kind": each, "keys": keys})
    rows = [r for r in rows if mentions(name, r["name"], r["description"])]
    rows.sort(key=lambda r: (r["name"], r["kind"]))
    paged = paginate(rows, page=page, size=size, query={"name": name, "kind": kind, "size": size})
    return render(
        request,
        user,
        "configs.html",
        {
            **head,
            "paged": paged,
            "name": name,
            "kind": kind,
            "form": refused.values,
            "errors": refused.errors,
        },
        section="businesses",
        status=refused.status,
    )


@router.post("/console/businesses/{biz}/configs", response_model=None)
async def config_create(
    request: Request,
    user: User,
    biz: str,
    kind: Annotated[str, Form(max_length=20)] = "configmap",
    name: Annotated[str, Form(max_length=300)] = "",
    description: Annotated[str, Form(max_length=4000)] = "",
    key: Annotated[list[str] | None, Form()] = None,
    value: Annotated[list[str] | None, Form()] = None,
    pairs: Annotated[str, Form(max_length=2 * 1024 * 1024)] = "",
) -> Response:
    keys, values = key or [], value or []
    form = {
        "kind": kind,
        "name": name,
        "description": description,
        "pairs": pairs,
        "rows": list(zip(keys, values, strict=False)),
    }
    if kind not in KINDS:
        return redirect(f"{BASE}/{biz}/configs", error=_t(user)("unknown kind {kind}", kind=kind))
    data, bad = form_data(keys, values, pairs)
    if bad:
        return await _config_list(
            request,
            user,
            biz,
            refused=RefusedForm(
                form, {"data": _t(user)("line {lines}: write key=value, one per line", lines=bad)}
            ),
        )
    result = await ConsoleApi(request, user).post(
        f"/api/v1/businesses/{biz}/{KINDS[kind]}",
        {"name": name.strip(), "description": description, "data": data},
    )
    if result.ok:
        return redirect(
            f"{BASE}/{biz}/configs/{kind}/{result.data['name']}",
            ok=_t(user)("created {kind} {name}", kind=TITLES[kind], name=result.data["name"]),
        )
    if result.status in (409, 422):
        return await _config_list(
            request, user, biz, refused=RefusedForm(form, _config_errors(result), result.status)
        )
    return redirect(f"{BASE}/{biz}/configs", error=result.error)


async def _config_page(
    request: Request,
    user: ConsoleUser,
    biz: str,
    kind: str,
    name: str,
    *,
    reveal: bool = False,
    refused: RefusedForm = EMPTY_FORM,
) -> Response:
    if kind not in KINDS:
        return _error_page(
            request, user, ApiResult(404, {"message": _t(user)("unknown kind {kind}", kind=kind)})
        )
    api = ConsoleApi(request, user)
    head = await _tab(request, user, api, biz, "configs")
    if isinstance(head, Response):
        return head
    path = f"/api/v1/businesses/{biz}/{KINDS[kind]}/{name}"
    item = await (api.get(path, reveal="true") if reveal else api.get(path))
    if not item.ok:
        if reveal and item.status == 403:
            return redirect(f"{BASE}/{biz}/configs/{kind}/{name}", error=item.error)
        return _error_page(request, user, item)
    config = item.data
    values: dict[str, str] | None = config["data"] if kind == "configmap" or reveal else None
    response = render(
        request,
        user,
        "config.html",
        {
            **head,
            "kind": kind,
            "config": config,
            "values": values,
            "revealed": reveal,
            "form": refused.values,
            "errors": refused.errors,
        },
        section="businesses",
        status=refused.status,
    )
    if reveal:
        response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/console/businesses/{biz}/configs/{kind}/{name}")
async def config_detail(request: Request, user: User, biz: str, kind: str, name: str) -> Response:
    return await _config_page(request, user, biz, kind, name)


@router.post("/console/businesses/{biz}/configs/secret/{name}/reveal", response_model=None)
async def secret_reveal(request: Request, user: User, biz: str, name: str) -> Response:
    """The Secret page with its values, in this response only (see the module docstring)."""
    return await _config_page(request, user, biz, "secret", name, reveal=True)


@router.post("/console/businesses/{biz}/configs/{kind}/{name}", response_model=None)
async def config_replace(
    request: Request,
    user: User,
    biz: str,
    kind: str,
    name: str,
    description: Annotated[str, Form(max_length=4000)] = "",
    key: Annotated[list[str] | None, Form()] = None,
    value: Annotated[list[str] | None, Form()] = None,
    pairs: Annotated[str, Form(max_length=2 * 1024 * 1024)] = "",
) -> Response:
    back = f"{BASE}/{biz}/configs/{kind}/{name}"
    if kind not in KINDS:
        return redirect(f"{BASE}/{biz}/configs", error=_t(user)("unknown kind {kind}", kind=kind))
    keys, values = key or [], value or []
    form = {
        "description": description,
        "pairs": pairs,
        "rows": list(zip(keys, values, strict=False)),
    }
    data, bad = form_data(keys, values, pairs)
    if bad:
        return await _config_page(
            request,
            user,
            biz,
            kind,
            name,
            refused=RefusedForm(
                form, {"data": _t(user)("line {lines}: write key=value, one per line", lines=bad)}
            ),
        )
    result = await ConsoleApi(request, user).put(
        f"/api/v1/businesses/{biz}/{KINDS[kind]}/{name}", {"description": description, "data": data}
    )
    if result.ok:
        return redirect(back, ok=_t(user)("saved {kind} {name}", kind=TITLES[kind], name=name))
    if result.status == 422:
        return await _config_page(
            request, user, biz, kind, name, refused=RefusedForm(form, _config_errors(result))
        )
    return redirect(back, error=result.error)


@router.post("/console/businesses/{biz}/configs/{kind}/{name}/delete", response_model=None)
async def config_delete(request: Request, user: User, biz: str, kind: str, name: str) -> Response:
    if kind not in KINDS:
        return redirect(f"{BASE}/{biz}/configs", error=_t(user)("unknown kind {kind}", kind=kind))
    result = await ConsoleApi(request, user).delete(
        f"/api/v1/businesses/{biz}/{KINDS[kind]}/{name}"
    )
    if not result.ok:
        return redirect(f"{BASE}/{biz}/configs/{kind}/{name}", error=result.error)
    return redirect(
        f"{BASE}/{biz}/configs", ok=_t(user)("deleted {kind} {name}", kind=TITLES[kind], name=name)
    )
