"""The platform's own components (issue 21), for platform administrators only.

``/console/components``: each replica (up or gone, version, schema, address) with its loops
(group, whether it leads, passes, failures, last error, a link to the loop's recent log lines,
``/console/components/logs``), the
loop groups' leaders, the database and the metric store; then the registered clusters'
control planes (API server and etcd), probed as the page loads, a page of clusters at a time.
A loop's "Restart" posts ``/console/components/restart``, which asks its replica through the
API; the replica restarts it at its next heartbeat (within five seconds).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gaia.console.web import ConsoleApi, User, redirect, refusal_page, render, translator

router = APIRouter(include_in_schema=False)
Cursor = Annotated[str | None, Query(max_length=1024, pattern=r"^[A-Za-z0-9._-]*$")]
Logger = Annotated[str, Query(max_length=200, pattern=r"^[A-Za-z0-9_.-]*$")]
HERE = "/console/components"


@router.get(HERE)
async def components_page(request: Request, user: User, cursor: Cursor = None) -> Response:
    api = ConsoleApi(request, user)
    body = await api.get("/api/v1/platform/components")
    if not body.ok:
        return refusal_page(request, user, body, template="user_error.html", section="components")
    params = {"limit": 20, **({"cursor": cursor} if cursor else {})}
    clusters = await api.get("/api/v1/platform/components/clusters", **params)
    context = {
        "c": body.data,
        "clusters": clusters.data["items"] if clusters.ok else [],
        "clusters_error": "" if clusters.ok else clusters.error,
        "next_cursor": clusters.data.get("next_cursor") if clusters.ok else None,
    }
    return render(request, user, "components.html", context, section="components")


@router.get(f"{HERE}/logs")
async def component_logs(request: Request, user: User, logger: Logger = "gaia") -> Response:
    """The platform log's last 200 lines of one component (a logger and its children), as the
    replica that serves the page holds them (each replica keeps its own platform log)."""
    result = await ConsoleApi(request, user).get("/api/v1/system/logs", logger=logger, limit=200)
    if not result.ok:
        return refusal_page(request, user, result, template="user_error.html", section="components")
    context = {"logger": logger, "lines": result.data["items"]}
    return render(request, user, "components_logs.html", context, section="components")


@router.post(f"{HERE}/restart", response_model=None)
async def restart_loop(request: Request, user: User) -> Response:
    form = await request.form()
    replica = str(form.get("replica") or "")[:255]
    loop = str(form.get("loop") or "")[:100]
    result = await ConsoleApi(request, user).post(
        f"/api/v1/platform/replicas/{quote(replica, safe='')}/loops/{quote(loop, safe='')}/restart"
    )
    if not result.ok:
        return redirect(HERE, error=result.error)
    _ = translator(user.language)
    return redirect(
        HERE,
        ok=_("Asked {replica} to restart {loop}: it does at its next heartbeat.").format(
            replica=replica, loop=loop
        ),
    )
