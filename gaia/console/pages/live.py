"""Console pages: an app's live views — monitoring charts, logs (with follow), the web terminal.

**Monitoring** (``/console/b/{biz}/apps/{app}/monitoring``) asks ``GET /api/v1/monitoring/series``
for the app's CPU, memory, network and GPU over the chosen window (15 min … 24 h, about 60
points each) and draws them on the server as SVG (``gaia.console.charts``). Below, one small
chart per instance for the chosen metric, a page of instances at a time: the page is one call
of ``GET .../instances`` (the API pages by id; the links carry its cursors), so an app of 10,000
instances costs one page of 12 and its queries, never 10,000.

**Instance pickers** (logs, terminal) read the app's instance count (a page of one); up to 500
instances they read them (one page) into a ``<select>``, past that the picker is a box for the
instance's number and the terminal reads the one instance it opens on
(``GET .../instances/{id}``).

**Logs** (``…/logs``) reads ``GET /api/v1/businesses/{biz}/apps/{app}/logs`` newest first, one
page at a time ("older" follows the API's cursor), per instance or all, with a search and a time
window. *Follow* opens the same endpoint as Server-Sent Events from the browser (``logs.js``:
``EventSource`` sends the session cookie, which the API accepts for reads) and prepends each
new line to a live region; without JavaScript the page is still a complete, reloadable list.

**Terminal** (``…/terminal?instance=N``) is a line-oriented shell over a WebSocket
(``/console/ws/b/{biz}/apps/{app}/instances/{instance}/exec``, ``terminal.js`` + xterm.js):
the browser edits the line, Enter sends it, the server runs ``sh -c <line>`` in the instance
and sends back stdout, stderr and the exit status. The socket is authenticated by the session
cookie and refused unless its ``Origin`` is this server (a page of another site could otherwise
open it with the user's cookie: cross-site WebSocket hijacking). Each line is a
``POST /api/v1/businesses/{biz}/apps/{app}/instances/{instance}/exec`` through the console's API
client with the session's token, so the role check (developer and above), the instance lookup,
the provider call and the operation record (with the command line, secrets redacted) are the
API's own, re-checked on every line (a revoked session or a lowered role stops the next
command). Opening the terminal asks the API's own dependencies whether the caller may exec
there and the API for the instance; the terminal writes the two records no HTTP call makes,
one when the session opens (or is refused) and one when it closes, through the API's recorder
(``gaia.api.audit.record_socket_step``). No working directory is kept between lines: every line
is a fresh ``sh -c`` in the container's working directory (the simulated shell has no ``cd``);
a line may chain commands with ``;``, ``&&`` and ``||``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from typing import Annotated, Any, cast
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from gaia.api.audit import record_socket_step
from gaia.api.deps import SESSION_COOKIE, AuditContext, authenticate, business_for, platform
from gaia.api.errors import STATUS
from gaia.console.charts import Series, Unit, line_chart, mean_series
from gaia.console.listing import Cursor, cursor_page, instance_links, instance_page
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    User,
    permissions_in,
    platform_now,
    refusal_page,
    render,
    translator,
)
from gaia.domain.errors import GaiaError, Unauthenticated
from gaia.domain.rbac import Permission

router = APIRouter(include_in_schema=False)
APP_URL = "/console/b/{biz}/apps/{app}"

# window → (seconds, step): about 60 points whatever the window
RANGES: dict[str, tuple[int, int]] = {
    "15m": (900, 15),
    "1h": (3600, 60),
    "6h": (21_600, 360),
    "24h": (86_400, 1440),
}
RANGE_LABELS = {"15m": "15 minutes", "1h": "1 hour", "6h": "6 hours", "24h": "24 hours"}

# the per-instance metric a page of small multiples shows
INSTANCE_METRICS: dict[str, tuple[str, Unit, tuple[tuple[str, str], ...]]] = {
    "cpu": ("CPU usage", "percent", (("gaia_instance_cpu_usage_percent", "CPU"),)),
    "memory": ("Memory usage", "bytes", (("gaia_instance_memory_usage_bytes", "memory"),)),
    "network": (
        "Network",
        "bytes/s",
        (
            ("gaia_instance_network_receive_bytes_per_second", "received"),
            ("gaia_instance_network_transmit_bytes_per_second", "sent"),
        ),
    ),
    "gpu": ("GPU utilisation", "percent", (("gaia_instance_gpu_utilization_percent", "GPU"),)),
}
INSTANCES_PER_PAGE = 12
PICKER_SIZE = 500  # instances a picker lists; a larger app gets a number box
LOG_LINES_PER_PAGE = 100
MAX_LINE = 4096  # the API's limit on one exec argument
EXEC_TIMEOUT_S = 30.0


async def _app_or_error(
    request: Request, user: ConsoleUser, api: ConsoleApi, biz: str, app: str
) -> tuple[dict[str, Any] | None, Response | None]:
    """The app (the API's ``AppOut``), or the error page answering as the API did."""
    result, may = await asyncio.gather(
        api.get(f"/api/v1/businesses/{biz}/apps/{app}"), permissions_in(api, biz)
    )
    if result.ok:
        data: dict[str, Any] = result.data
        data["may_write"] = "app.write" in may  # the tabs show the terminal to them only
        return data, None
    return None, _error_page(request, user, result)


def _error_page(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="live_error.html", section="apps")


def _instances_path(biz: str, app: str) -> str:
    return f"/api/v1/businesses/{biz}/apps/{app}/instances"


async def _picker(api: ConsoleApi, biz: str, app: str) -> tuple[list[dict[str, Any]], bool]:
    """The instances a picker lists (every one, by id) and whether there are more than
    ``PICKER_SIZE`` (then the page shows a number box instead, and lists none)."""
    path = _instances_path(biz, app)
    # the count first: a large app's picker needs no instance's view at all
    counted = await instance_page(api, path, limit=1)
    if counted["total"] > PICKER_SIZE:
        return [], True
    if not counted.get("next_cursor"):
        return list(counted["items"]), False
    page = await instance_page(api, path, limit=PICKER_SIZE)
    return list(page["items"]), bool(page.get("next_cursor"))


# ---------------------------------------------------------------- monitoring


@router.get("/console/b/{biz}/apps/{app}/monitoring")
async def monitoring(
    request: Request,
    user: User,
    biz: str,
    app: str,
    range: Annotated[str, Query(max_length=8)] = "",
    metric: Annotated[str, Query(max_length=16)] = "cpu",
    cursor: Cursor = "",
) -> Response:
    api = ConsoleApi(request, user)
    app_data, error = await _app_or_error(request, user, api, biz, app)
    if error is not None:
        return error
    _ = translator(user.language)
    if range not in RANGES:
        range = fitting_range(platform_now(request) - _created(app_data))
    metric = metric if metric in INSTANCE_METRICS else "cpu"
    seconds, step = RANGES[range]
    end = platform_now(request)
    start = end - seconds
    window = {"start": start, "end": end, "step": step, "business": biz, "app": app}

    async def series(name: str, **extra: Any) -> list[dict[str, Any]]:
        result = await api.get("/api/v1/monitoring/series", metric=name, **window, **extra)
        return result.data if result.ok and isinstance(result.data, list) else []

    app_cpu, app_mem, app_rx, app_tx, gpus, page = await asyncio.gather(
        series("gaia_app_cpu_usage_percent"),
        series("gaia_app_memory_usage_bytes"),
        series("gaia_app_network_receive_bytes_per_second"),
        series("gaia_app_network_transmit_bytes_per_second"),
        series("gaia_instance_gpu_utilization_percent"),
        instance_page(api, _instances_path(biz, app), limit=INSTANCES_PER_PAGE, cursor=cursor),
    )

    def chart(title: str, unit: Unit, lines: list[Series], chart_id: str) -> Any:
        return line_chart(
            title=title, series=lines, unit=unit, start=start, end=end, _=_, chart_id=chart_id
        )

    app_charts = [
        chart(_("CPU usage (of requested)"), "percent", _named(app_cpu, _("CPU")), "app-cpu"),
        chart(_("Memory usage"), "bytes", _named(app_mem, _("memory")), "app-memory"),
        chart(
            _("Network"),
            "bytes/s",
            _named(app_rx, _("received")) + _named(app_tx, _("sent")),
            "app-network",
        ),
    ]
    if gpus:
        gpu_series = [mean_series(_("mean of instances"), _named(gpus, ""))]
        app_charts.append(chart(_("GPU utilisation"), "percent", gpu_series, "app-gpu"))

    shown: list[dict[str, Any]] = page["items"]
    links = instance_links(
        APP_URL.format(biz=biz, app=app) + "/monitoring",
        query={"range": range, "metric": metric},
        page=page,
    )
    title, unit, metrics = INSTANCE_METRICS[metric]

    async def instance_chart(inst: dict[str, Any]) -> Any:
        lines: list[Series] = []
        for name, label in metrics:
            lines += _named(await series(name, instance=inst["name"]), _(label))
        return chart(
            _("{what} of {instance}", what=_(title), instance=inst["name"]),
            unit,
            lines,
            f"inst-{inst['id']}-{metric}",
        )

    small = await asyncio.gather(*(instance_chart(i) for i in shown))
    return render(
        request,
        user,
        "app_monitoring.html",
        {
            "biz": biz,
            "app": app_data,
            "tab": "monitoring",
            "range": range,
            "ranges": RANGE_LABELS,
            "metric": metric,
            "metrics": {k: v[0] for k, v in INSTANCE_METRICS.items()},
            "app_charts": app_charts,
            "instance_charts": list(zip(shown, small, strict=True)),
            "links": links,
            "total": page["total"],
        },
        section="apps",
    )


def fitting_range(age_s: float) -> str:
    """The default window of an app's charts: the shortest that holds its whole life, so a
    new app's few minutes are not squeezed against the right edge of an hour."""
    return next((name for name, (seconds, _step) in RANGES.items() if age_s <= seconds), "24h")


def _created(app: Mapping[str, Any] | None) -> float:
    try:
        return dt.datetime.fromisoformat(str((app or {}).get("created_at"))).timestamp()
    except ValueError:
        return 0.0


def _named(rows: list[dict[str, Any]], label: str) -> list[Series]:
    """The API's series as chart series; several for one label are told apart by instance.
    Series that name the same instance (its container restarted, or moved to a new version,
    so the cluster reports it under new labels) are one line, not two with one name."""
    instances = {(r.get("labels") or {}).get("instance", "") for r in rows}
    by_name: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        labels = row.get("labels") or {}
        name = label if len(instances) == 1 else f"{label} {labels.get('instance', '')}".strip()
        points = [(float(t), float(v)) for t, v in row.get("points") or []]
        by_name.setdefault(name, []).extend(points)
    return [Series(name, sorted(points)) for name, points in by_name.items()]


# ---------------------------------------------------------------- logs


@router.get("/console/b/{biz}/apps/{app}/logs")
async def logs(
    request: Request,
    user: User,
    biz: str,
    app: str,
    instance: Annotated[str, Query(max_length=8, pattern=r"^\d*$")] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    range: Annotated[str, Query(max_length=8)] = "",
    stream: Annotated[str, Query(max_length=8)] = "",
    cursor: Annotated[str, Query(max_length=128)] = "",
) -> Response:
    api = ConsoleApi(request, user)
    app_data, error = await _app_or_error(request, user, api, biz, app)
    if error is not None:
        return error
    range = range if range in RANGES else ""
    stream = stream if stream in ("stdout", "stderr") else ""
    since = ""
    if range:
        at = dt.datetime.fromtimestamp(platform_now(request) - RANGES[range][0], dt.UTC)
        since = at.isoformat()
    filters = {"instance": instance, "q": q, "stream": stream}
    page, (instances, many) = await asyncio.gather(
        cursor_page(
            api,
            f"/api/v1/businesses/{biz}/apps/{app}/logs",
            filters={**filters, "since": since},
            cursor=cursor,
            limit=LOG_LINES_PER_PAGE,
            keep={**filters, "range": range},
        ),
        _picker(api, biz, app),
    )
    data = page.data
    follow = (
        f"/api/v1/businesses/{biz}/apps/{app}/logs?"
        + urlencode({**{k: v for k, v in filters.items() if v}, "follow": "true"})
        + (f"&after={data['last_id']}" if data.get("last_id") is not None else "")
    )
    return render(
        request,
        user,
        "app_logs.html",
        {
            "biz": biz,
            "app": app_data,
            "tab": "logs",
            "lines": page.items,
            "source": data.get("source", ""),
            "error": page.result.error,
            "older": page.older,
            "newest": page.newest,
            "follow_url": follow if not cursor else "",
            "instances": instances,
            "many_instances": many,
            "instance": instance,
            "q": q,
            "range": range,
            "ranges": RANGE_LABELS,
            "stream": stream,
        },
        section="apps",
    )


# ---------------------------------------------------------------- terminal page


@router.get("/console/b/{biz}/apps/{app}/terminal")
async def terminal(
    request: Request,
    user: User,
    biz: str,
    app: str,
    instance: Annotated[str, Query(max_length=8, pattern=r"^\d*$")] = "",
) -> Response:
    api = ConsoleApi(request, user)
    app_data, error = await _app_or_error(request, user, api, biz, app)
    if error is not None:
        return error
    instances, many = await _picker(api, biz, app)
    chosen = next((i for i in instances if str(i["id"]) == instance), None)
    if chosen is None and instance:  # beyond the picker's page: read that one
        one = await api.get(f"{_instances_path(biz, app)}/{instance}")
        chosen = one.data if one.ok else None
    return render(
        request,
        user,
        "app_terminal.html",
        {
            "biz": biz,
            "app": app_data,
            "tab": "terminal",
            "instances": instances,
            "many_instances": many,
            "instance": instance,
            "chosen": chosen,
            "socket": f"/console/ws/b/{biz}/apps/{app}/instances/{instance}/exec"
            if instance
            else "",
        },
        section="apps",
    )


# ---------------------------------------------------------------- terminal socket


def same_origin(websocket: WebSocket) -> bool:
    """Browsers always send ``Origin`` on a WebSocket handshake; it must name this server."""
    origin = websocket.headers.get("origin", "")
    host = websocket.headers.get("host", "")
    return bool(origin and host) and urlsplit(origin).netloc.lower() == host.lower()


class Refused(Exception):
    """The API's answer to a terminal step that it refused: its status and message."""

    def __init__(self, result: ApiResult) -> None:
        super().__init__(result.error)
        self.status = result.status
        self.message = result.error


class TerminalSession:
    """One open terminal: who, where, and the records of its opening and closing."""

    def __init__(
        self, websocket: WebSocket, *, token: str, biz: str, app: str, instance: int
    ) -> None:
        self.ws = websocket
        self.api = ConsoleApi(websocket, token)
        self.token = token
        self.biz = biz
        self.app = app
        self.instance = instance
        self.target = f"business/{biz}/app/{app}/instance/{instance}"
        self.actor = "anonymous"
        self.business_id: int | None = None
        self.cluster = ""
        self.instance_name = f"{app}-{instance}"
        self.commands = 0

    @property
    def _instance_path(self) -> str:
        return f"/api/v1/businesses/{self.biz}/apps/{self.app}/instances/{self.instance}"

    async def open(self) -> None:
        """Check the caller may exec here and find the instance, as the API's exec would."""
        # The role check is the API's own dependency (a viewer may look at the app but not
        # exec in it); it also names the business the records carry.
        plat = platform(cast(Request, self.ws))
        with plat.db.read_session() as session:
            principal = authenticate(session, self.token, cache=plat.principals)
            self.actor = principal.username
            ctx = AuditContext()  # business_for notes the business before it may refuse
            try:
                business_for(session, principal, self.biz, Permission.APP_WRITE, ctx=ctx)
            finally:
                self.business_id = ctx.business_id
        app = await self.api.get(f"/api/v1/businesses/{self.biz}/apps/{self.app}")
        if not app.ok:
            raise Refused(app)
        inst = await self.api.get(self._instance_path)
        if not inst.ok:
            raise Refused(inst)
        self.cluster = str(app.data["cluster"])
        self.instance_name = str(inst.data["name"])

    async def run(self, line: str) -> dict[str, Any]:
        """One line through ``POST .../exec``: the API checks the session and the role again,
        runs ``sh -c <line>``, and records the command line (redacted) as for any client."""
        result = await self.api.post(
            f"{self._instance_path}/exec",
            {"command": ["sh", "-c", line], "timeout_s": EXEC_TIMEOUT_S},
        )
        if not result.ok:
            raise Refused(result)
        self.commands += 1
        out = result.data
        return {"stdout": out["stdout"], "stderr": out["stderr"], "exit_code": out["exit_code"]}

    async def record(self, *, action: str, summary: str, status: int, error: str = "") -> None:
        ctx = AuditContext(
            actor=self.actor,
            business_id=self.business_id,
            business=self.biz[:63],
            cluster=self.cluster,
            action=action,
            target=self.target,
            summary=summary,
            error=error,
        )
        await record_socket_step(self.ws, ctx, status=status)


def _status(exc: BaseException) -> int:
    if isinstance(exc, Refused):
        return exc.status
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 503 if isinstance(exc, ConnectionError) else 400


def _logged_out(exc: BaseException) -> bool:
    return isinstance(exc, Unauthenticated) or (isinstance(exc, Refused) and exc.status == 401)


async def _send(websocket: WebSocket, kind: str, **fields: Any) -> None:
    await websocket.send_text(json.dumps({"type": kind, **fields}))


@router.websocket("/console/ws/b/{biz}/apps/{app}/instances/{instance}/exec")
async def terminal_socket(websocket: WebSocket, biz: str, app: str, instance: int) -> None:
    """The web terminal's shell. Messages are JSON: the browser sends ``{"type": "run",
    "line": "..."}``; the server answers ``ready`` once, then ``output`` (stdout, stderr,
    exit_code) or ``error`` (message) per line, and ``error`` before it closes on a refusal."""
    token = websocket.cookies.get(SESSION_COOKIE, "")
    if not same_origin(websocket) or not token:
        await websocket.close(code=1008)  # before accepting: the handshake answers 403
        return
    term = TerminalSession(websocket, token=token, biz=biz, app=app, instance=instance)
    if not (await term.api.get("/api/v1/users/me")).ok:
        await websocket.close(code=1008)  # no valid session: refused at the handshake
        return
    await websocket.accept()
    try:
        await term.open()
    except (GaiaError, Refused) as exc:
        message = exc.message
        if not _logged_out(exc):
            await term.record(
                action="app.instance.terminal.open",
                summary=f"web terminal on {term.instance_name} refused",
                status=_status(exc),
                error=message,
            )
        await _send(websocket, "error", message=message, fatal=True)
        await websocket.close(code=1008)
        return
    await term.record(
        action="app.instance.terminal.open",
        summary=f"opened a web terminal on {term.instance_name}",
        status=200,
    )
    await _send(websocket, "ready", instance=term.instance_name, cluster=term.cluster)
    try:
        await _serve(websocket, term)
    except WebSocketDisconnect:
        pass
    finally:
        await term.record(
            action="app.instance.terminal.close",
            summary=f"closed the web terminal on {term.instance_name} "
            f"after {term.commands} commands",
            status=200,
        )


async def _serve(websocket: WebSocket, term: TerminalSession) -> None:
    while True:
        try:
            message = json.loads(await websocket.receive_text())
        except ValueError:
            await _send(websocket, "error", message="messages are JSON")
            continue
        line = str(message.get("line", "")) if isinstance(message, dict) else ""
        if not line.strip():
            await _send(websocket, "output", stdout="", stderr="", exit_code=0)
            continue
        if len(line) > MAX_LINE or not line.isprintable():
            await _send(websocket, "error", message=f"a line is at most {MAX_LINE} characters")
            continue
        try:
            result = await term.run(line)
        except Refused as exc:
            fatal = _logged_out(exc)
            await _send(websocket, "error", message=exc.message, fatal=fatal)
            if fatal:
                await websocket.close(code=1008)
                return
            continue
        await _send(websocket, "output", **result)
