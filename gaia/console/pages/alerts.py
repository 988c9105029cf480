"""Alerting (issue 20; docs/monitoring.md): the alert records the evaluator and the
Alertmanager receiver wrote, and silencing one from its page.

- ``/console/alerts``: the records newest first, filtered by status (firing / resolved) and
  severity, paged by the API's cursor (``GET /api/v1/alerts/records``) like the operation
  records: "older" carries ``cursor``, "newest" drops it.
- ``/console/alerts/{id}``: one record with every notification of it, per receiver and channel
  (pending, sent with the server's receipt, retrying with the next attempt, failed with the
  reason), and for those who may write alerts of its business (developers and above, as the
  API's ``alert.write``): a form that silences alerts with the record's labels for a while
  (``POST /api/v1/alerts/silences``, the record's labels as the matchers).

Everything comes from the API as the logged-in user: another business's record is the API's
404, and a silence the user may not create is the API's refusal shown on the page.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import Response

from gaia.console.charts import format_measure
from gaia.console.listing import cursor_page, every_item
from gaia.console.web import (
    ConsoleApi,
    ConsoleUser,
    Translate,
    User,
    redirect,
    refusal_page,
    render,
    translator,
)

router = APIRouter(include_in_schema=False)
RecordId = Annotated[int, Path(ge=1, le=2**62)]
Cursor = Annotated[str, Query(max_length=128)]
Short = Annotated[str, Query(max_length=16)]
# the roles the API grants ``alert.write`` in a business (gaia.domain.rbac)
WRITERS = ("developer", "business-admin", "platform-admin")
SIZE = 50
SILENCE_HOURS = (1, 4, 24, 72, 168)


async def metric_units(api: ConsoleApi) -> dict[str, str]:
    """The unit of each metric in the catalogue, by name (empty when it cannot be read: the
    values are then shown to three significant digits)."""
    listed = await every_item(api, "/api/v1/monitoring/metrics")
    return {m["name"]: m["unit"] for m in listed.data} if listed.ok else {}


def with_measures(record: dict[str, Any], units: dict[str, str]) -> dict[str, Any]:
    """The record with its value, resolved value and threshold as people read them
    (``value_text``, ``resolved_value_text``, ``threshold_text``), in its metric's unit."""
    unit = units.get(record.get("metric") or "", "")
    shown = {
        f"{key}_text": format_measure(record.get(key), unit) if record.get(key) is not None else ""
        for key in ("value", "resolved_value", "threshold")
    }
    return {**record, **shown}


async def writable_businesses(api: ConsoleApi, user: ConsoleUser) -> list[str]:
    """The businesses whose alerting the user may change (every one, for a platform admin)."""
    listed = await every_item(api, "/api/v1/businesses")
    rows: list[dict[str, Any]] = listed.data if listed.ok else []
    return [b["name"] for b in rows if user.is_admin or b.get("role") in WRITERS]


async def may_write(api: ConsoleApi, user: ConsoleUser, business: str | None) -> bool:
    """Whether the user may change the alerting of ``business`` (``None``: the platform's)."""
    if user.is_admin:
        return True
    if not business:
        return False
    answer = await api.get(f"/api/v1/businesses/{quote(business)}")
    return answer.ok and answer.data.get("role") in WRITERS


@router.get("/console/alerts")
async def alerts_list(
    request: Request,
    user: User,
    status: Short = "",
    severity: Short = "",
    cursor: Cursor = "",
) -> Response:
    filters = {
        "status": status if status in ("firing", "resolved") else "",
        "severity": severity if severity in ("critical", "warning", "info") else "",
    }
    api = ConsoleApi(request, user)
    listed = await cursor_page(
        api,
        "/api/v1/alerts/records",
        filters=filters,
        cursor=cursor,
        limit=SIZE,
        keep=filters,
    )
    answer = listed.result
    units = await metric_units(api) if listed.items else {}
    return render(
        request,
        user,
        "alerts.html",
        {
            "items": [with_measures(a, units) for a in listed.items] if listed.items else [],
            "error": answer.error,
            "filters": filters,
            "first_page": listed.first,
            "older": listed.older,
            "newest": listed.newest,
        },
        section="alerts",
        status=200 if answer.ok or answer.status == 422 else answer.status,
    )


async def _record_page(
    request: Request,
    user: User,
    record_id: int,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    api = ConsoleApi(request, user)
    record = await api.get(f"/api/v1/alerts/records/{record_id}")
    if not record.ok:
        return refusal_page(request, user, record, template="alert_error.html", section="alerts")
    return render(
        request,
        user,
        "alert.html",
        {
            "record": with_measures(record.data, await metric_units(api)),
            "write": await may_write(api, user, record.data["business"]),
            "hours": SILENCE_HOURS,
            "values": values or {"hours": "4", "comment": ""},
            "errors": errors or {},
        },
        section="alerts",
        status=status,
    )


@router.get("/console/alerts/{record_id:int}")
async def alert_page(request: Request, user: User, record_id: RecordId) -> Response:
    return await _record_page(request, user, record_id)


@router.post("/console/alerts/{record_id:int}/silence", response_model=None)
async def alert_silence(
    request: Request,
    user: User,
    record_id: RecordId,
    hours: Annotated[str, Form(max_length=8)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _ = translator(user.language)
    values = {"hours": hours, "comment": comment}
    api = ConsoleApi(request, user)
    record = await api.get(f"/api/v1/alerts/records/{record_id}")
    if not record.ok:
        return refusal_page(request, user, record, template="alert_error.html", section="alerts")
    errors = _silence_errors(hours, record.data["labels"], _)
    if not errors:
        now = request.app.state.platform.clock.now().astimezone(dt.UTC)
        body: dict[str, Any] = {
            "business": record.data["business"],
            "matchers": dict(record.data["labels"]),
            "ends_at": (now + dt.timedelta(hours=float(hours))).isoformat(),
            "comment": comment.strip(),
        }
        result = await api.post("/api/v1/alerts/silences", body)
        back = f"/console/alerts/{record_id}"
        if result.ok:
            until = result.data["ends_at"][:19].replace("T", " ")
            return redirect(back, ok=_("silenced until {until}", until=until))
        if result.status != 422:
            return redirect(back, error=result.error)
        errors = {"comment": result.error, **result.field_errors}
    return await _record_page(request, user, record_id, values=values, errors=errors, status=422)


def _silence_errors(hours: str, labels: dict[str, str], _: Translate) -> dict[str, str]:
    """What the silence form itself can tell before asking the API."""
    try:
        length = float(hours)
    except ValueError:
        length = 0
    if not 0 < length <= 24 * 365:
        return {"hours": _("a number of hours, more than 0 and at most a year")}
    if not labels:
        return {"hours": _("this alert has no labels to match")}
    return {}
