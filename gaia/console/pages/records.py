"""Console pages: the platform's operation records (``/console/records``) and events
(``/console/events``).

Both are the API's lists (``GET /api/v1/records``, ``GET /api/v1/events``) shown as tables,
filtered on the server by the query string (every filter is a plain GET form, so a filtered
view is a link one can share) and paged by the API's cursor: the API pages newest first by id,
so "older" carries ``cursor`` and "newest" drops it. The API scopes both lists to the caller
(platform admins see everything; others their businesses' rows), so the page needs no rules of
its own. Records filter by a time window too, computed here from the platform's clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gaia.console.listing import CursorPage, cursor_page
from gaia.console.web import ConsoleApi, ConsoleUser, PageSize, User, render

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Query(max_length=200)]
Cursor = Annotated[str, Query(max_length=128)]

WINDOWS = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
WINDOW_LABELS = {
    "1h": "last hour",
    "24h": "last 24 hours",
    "7d": "last 7 days",
    "30d": "last 30 days",
}
SIZES = (20, 50, 100, 200)


def _size(size: int) -> int:
    return size if size in SIZES else 50


def _table(
    request: Request,
    user: ConsoleUser,
    listed: CursorPage,
    *,
    template: str,
    section: str,
    filters: dict[str, str],
    size: int,
    **context: Any,
) -> Response:
    """The list as a table under its filter form, with the API's message (and a 422's field
    messages beside the filters) when it refused them."""
    answer = listed.result
    return render(
        request,
        user,
        template,
        {
            "items": listed.items,
            "error": answer.error,
            "field_errors": answer.field_errors,
            "filters": filters,
            "size": size,
            "sizes": SIZES,
            "first_page": listed.first,
            "older": listed.older,
            "newest": listed.newest,
            **context,
        },
        section=section,
        status=200 if answer.ok or answer.status == 422 else answer.status,
    )


@router.get("/console/records")
async def records(
    request: Request,
    user: User,
    actor: Text = "",
    business: Text = "",
    cluster: Text = "",
    action: Text = "",
    target: Text = "",
    result: Annotated[str, Query(max_length=8)] = "",
    window: Annotated[str, Query(max_length=4)] = "",
    size: PageSize = 50,
    cursor: Cursor = "",
) -> Response:
    result = result if result in ("success", "failure") else ""
    window = window if window in WINDOWS else ""
    size = _size(size)
    since = ""
    if window:
        now = request.app.state.platform.clock.now()
        since = (now - dt.timedelta(seconds=WINDOWS[window])).astimezone(dt.UTC).isoformat()
    filters = {
        "actor": actor.strip(),
        "business": business.strip(),
        "cluster": cluster.strip(),
        "action": action.strip(),
        "target": target.strip(),
        "result": result,
    }
    listed = await cursor_page(
        ConsoleApi(request, user),
        "/api/v1/records",
        filters={**filters, "since": since},
        cursor=cursor,
        limit=size,
        keep={**filters, "window": window, "size": size if size != 50 else ""},
    )
    return _table(
        request,
        user,
        listed,
        template="records.html",
        section="records",
        filters=filters,
        size=size,
        window=window,
        windows=WINDOW_LABELS,
    )


@router.get("/console/events")
async def events(
    request: Request,
    user: User,
    type: Annotated[str, Query(max_length=8)] = "",
    business: Text = "",
    cluster: Text = "",
    object_kind: Text = "",
    object_name: Text = "",
    reason: Text = "",
    size: PageSize = 50,
    cursor: Cursor = "",
) -> Response:
    type = type if type in ("Normal", "Warning") else ""
    size = _size(size)
    filters = {
        "type": type,
        "business": business.strip(),
        "cluster": cluster.strip(),
        "object_kind": object_kind.strip(),
        "object_name": object_name.strip(),
        "reason": reason.strip(),
    }
    listed = await cursor_page(
        ConsoleApi(request, user),
        "/api/v1/events",
        filters=filters,
        cursor=cursor,
        limit=size,
        keep={**filters, "size": size if size != 50 else ""},
    )
    return _table(
        request, user, listed, template="events.html", section="events", filters=filters, size=size
    )
