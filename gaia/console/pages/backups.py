"""The backups page (issue 21, docs/backup.md), for platform admins: the backups, newest first
(a page at a time, as the API pages them), each with its state, the step a running one is at,
its archive and size; a button that starts one now. Restoring is not here: it replaces the
database this page runs on, so it is ``gaia restore`` with the replicas stopped, as the page
says.

Everything comes from the API (``/api/v1/backups``); a non-admin gets the API's refusal.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gaia.console.pages.registry import size
from gaia.console.web import ConsoleApi, User, redirect, refusal_page, render, translator

router = APIRouter(include_in_schema=False)
BASE = "/console/backups"
PAGE = 20
Cursor = Annotated[str | None, Query(max_length=512)]


@router.get("/console/backups")
async def backups_page(request: Request, user: User, cursor: Cursor = None) -> Response:
    listed = await ConsoleApi(request, user).get("/api/v1/backups", limit=PAGE, cursor=cursor)
    if not listed.ok:
        return refusal_page(request, user, listed, template="backup_error.html", section="backups")
    items = [
        {**b, "size_text": size(b["size_bytes"]) if b["size_bytes"] else "-"}
        for b in listed.data["items"]
    ]
    return render(
        request,
        user,
        "backups.html",
        {
            "backups": items,
            "next_cursor": listed.data.get("next_cursor"),
            "busy": any(b["state"] in ("Pending", "Running") for b in items),
        },
        section="backups",
    )


@router.post("/console/backups", response_model=None)
async def backup_start(request: Request, user: User) -> Response:
    result = await ConsoleApi(request, user).post("/api/v1/backups")
    if result.ok:
        return redirect(
            BASE, ok=translator(user.language)("backup {id} asked for", id=result.data["id"])
        )
    if result.status == 403:
        return refusal_page(request, user, result, template="backup_error.html", section="backups")
    return redirect(BASE, error=result.error)
