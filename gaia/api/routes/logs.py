"""Logs: ``/businesses/{biz}/apps/{app}/logs`` (an app's instances) and ``/system/logs``.

Both read the embedded log store (``gaia.monitor.logs.store``), which the log collector fills with
container lines and the system log handler with the platform's own records. One view for both:

- a page, newest first, of at most ``limit`` lines, filtered by ``since`` (inclusive) /
  ``until`` (exclusive), ``stream``, and ``q`` (a substring, case-insensitive; with
  ``regex=true`` an RE2 regular expression, run in linear time); ``next_cursor`` fetches the
  next, older, page. The system view also filters by ``level`` (that level and above) and
  ``logger`` (it and its children).
- ``follow=true`` with ``Accept: text/event-stream``: Server-Sent Events, one JSON line per
  ``data:`` event with the line's id as the event id, a ``: heartbeat`` comment every 15 s. It
  streams the lines written after ``after`` (a ``last_id`` of a page), or after the browser's
  ``Last-Event-ID`` on reconnection, or from now on. A stream ends when the client goes and
  after ``FOLLOW_MAX_S`` at the latest (the browser's ``EventSource`` reconnects without a gap;
  it also bounds how long a server shutdown waits for open streams). Without the ``Accept``
  header ``follow`` is refused (406): a plain client would wait forever for a body to end.
- Live fallback: when the store holds no line at all for the instance (or the app) — just
  created, or the collector has not come round yet — the first page is read from the cluster
  directly (``source: "live"``, lines without ids, no cursor).

Tenancy as everywhere: a business the caller is not a member of is not found (404); members
with any role read their apps' logs; system logs are for platform administrators (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.exceptions import HTTPException

from gaia.api.deps import (
    CommittingRoute,
    PrincipalDep,
    SessionDep,
    business_for,
    platform,
    require_platform_admin,
)
from gaia.api.schemas.base import NAME_PATTERN, Strict
from gaia.domain.errors import GaiaError, InvalidRequest
from gaia.domain.rbac import Permission
from gaia.monitor.logs.collector import COLLECTED_PHASES
from gaia.monitor.logs.store import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    LineMatcher,
    LogFilter,
    LogSelector,
    LogStore,
    StoredLine,
    decode_cursor,
)
from gaia.providers.port import Instance, LogLine
from gaia.providers.registry import ProviderRegistry
from gaia.store import apps as store_apps
from gaia.store.models import Cluster

router = APIRouter(tags=["logs"], route_class=CommittingRoute)
BizPath = Path(pattern=NAME_PATTERN, max_length=63, description="business name")
AppPath = Path(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", max_length=40, description="app")

HEARTBEAT_S = 15.0
FOLLOW_MAX_S = 600.0
LIVE_MAX_INSTANCES = 20  # instances read at once by the live fallback of a whole app
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EVENT_STREAM = "text/event-stream"


class LogLineOut(Strict):
    id: int | None = Field(description="the line's place in the store; None for live lines")
    at: dt.datetime
    stream: str
    text: str
    instance: str | None = Field(default=None, description="instance name, <app>-<id>")
    instance_id: int | None = None
    level: str | None = Field(default=None, description="system lines: the record's level")
    logger: str | None = Field(default=None, description="system lines: the logger's name")


class LogPageOut(Strict):
    items: list[LogLineOut]
    next_cursor: str | None = Field(description="pass as cursor for the next, older page")
    last_id: int = Field(description="the newest line in the store: follow after it")
    source: Literal["store", "live"]


@dataclass(frozen=True, slots=True)
class LogParams:
    filter: LogFilter
    limit: int
    cursor: str | None
    follow: bool
    after: int | None


def log_params(
    q: str = Query(default="", max_length=MAX_QUERY_CHARS, description="text to look for"),
    regex: bool = Query(default=False, description="q is an RE2 regular expression"),
    since: dt.datetime | None = Query(default=None, description="from (inclusive), with zone"),
    until: dt.datetime | None = Query(default=None, description="to (exclusive), with zone"),
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(default=None, max_length=128, pattern=r"^[A-Za-z0-9_-]+$"),
    stream: Literal["stdout", "stderr"] | None = Query(default=None),
    follow: bool = Query(default=False, description="stream new lines (text/event-stream)"),
    after: int | None = Query(default=None, ge=0, le=2**62, description="follow after this id"),
) -> LogParams:
    filt = LogFilter(since=since, until=until, q=q, regex=regex, stream=stream)
    filt.matcher()  # a pattern RE2 cannot compile answers 422 here
    if cursor is not None:
        decode_cursor(cursor)
    return LogParams(filter=filt, limit=limit, cursor=cursor, follow=follow, after=after)


ParamsDep = Depends(log_params)


def _store(request: Request) -> LogStore:
    return platform(request).log_store


# ---------------------------------------------------------------- app logs


@router.get(
    "/businesses/{biz}/apps/{app}/logs",
    response_model=LogPageOut,
    responses={200: {"content": {EVENT_STREAM: {}}, "description": "a page, or SSE"}},
)
async def app_logs(
    request: Request,
    principal: PrincipalDep,
    session: SessionDep,
    biz: str = BizPath,
    app: str = AppPath,
    instance: int | None = Query(default=None, ge=0, le=1_000_000, description="instance id"),
    params: LogParams = ParamsDep,
) -> LogPageOut | StreamingResponse:
    """The container lines of the app's instances (or of one), newest first; ``follow=true``
    streams new ones."""
    business = business_for(session, principal, biz, Permission.BUSINESS_READ)
    row = store_apps.find_app(session, business=business, name=app)
    cluster = store_apps.cluster_of(session, row)
    selector = LogSelector.of_app(
        cluster=cluster.name,
        namespace=business.name,
        app=row.name,
        instance=f"{row.name}-{instance}" if instance is not None else None,
    )
    store = _store(request)
    if params.follow:
        return await _follow(request, store, selector, params)
    page = await store.read(selector, params.filter, limit=params.limit, cursor=params.cursor)
    nothing_held = not page.lines and params.cursor is None
    if nothing_held and not await asyncio.to_thread(store.has_lines, selector):
        live = await _live(
            platform(request).providers,
            cluster,
            namespace=business.name,
            app=row.name,
            instance=instance,
            matcher=params.filter.matcher(),
            limit=params.limit,
        )
        return LogPageOut(items=live, next_cursor=None, last_id=page.last_id, source="live")
    return LogPageOut(
        items=[_out(line) for line in page.lines],
        next_cursor=page.next_cursor,
        last_id=page.last_id,
        source="store",
    )


async def _live(
    providers: ProviderRegistry,
    cluster: Cluster,
    *,
    namespace: str,
    app: str,
    instance: int | None,
    matcher: LineMatcher,
    limit: int,
) -> list[LogLineOut]:
    """The newest lines read from the cluster itself; nothing when it cannot say."""
    try:
        provider = providers.for_cluster(cluster)
        found = await provider.list_instances(namespace=namespace, app=app)
    except (ConnectionError, GaiaError, ValueError):  # ValueError: no kubeconfig stored
        return []
    chosen = [
        i
        for i in found
        if i.phase in COLLECTED_PHASES and (instance is None or i.instance_id == instance)
    ]
    chosen.sort(key=lambda i: i.instance_id)

    async def read(inst: Instance) -> tuple[Instance, list[LogLine]]:
        try:
            lines = await provider.logs(
                namespace=namespace, name=inst.name, tail=limit, since=matcher.filter.since
            )
        except (ConnectionError, GaiaError):
            lines = []
        return inst, lines

    results = await asyncio.gather(*(read(i) for i in chosen[:LIVE_MAX_INSTANCES]))
    # each instance's lines newest first, then a stable sort across instances
    picked = [
        (inst, line)
        for inst, lines in results
        for line in reversed(lines)
        if matcher.matches(at=line.at, text=line.text, stream=line.stream)
    ]
    picked.sort(key=lambda pair: pair[1].at, reverse=True)
    return [
        LogLineOut(
            id=None,
            at=line.at,
            stream=line.stream,
            text=line.text,
            instance=inst.name,
            instance_id=inst.instance_id,
        )
        for inst, line in picked[:limit]
    ]


# ---------------------------------------------------------------- system logs


@router.get(
    "/system/logs",
    response_model=LogPageOut,
    responses={200: {"content": {EVENT_STREAM: {}}, "description": "a page, or SSE"}},
)
async def system_logs(
    request: Request,
    principal: PrincipalDep,
    level: str | None = Query(
        default=None, pattern=r"^(?i:debug|info|warning|error|critical)$", description="and up"
    ),
    logger: str = Query(
        default="", max_length=200, pattern=r"^[A-Za-z0-9_.-]*$", description="and its children"
    ),
    params: LogParams = ParamsDep,
) -> LogPageOut | StreamingResponse:
    """The platform's own log (platform administrators only): what ``gaia.*`` and the HTTP
    server logged at INFO and above, with secrets redacted."""
    require_platform_admin(principal, "read the platform's system logs")
    base = params.filter
    filt = LogFilter(
        since=base.since,
        until=base.until,
        q=base.q,
        regex=base.regex,
        stream=base.stream,
        level=logging.getLevelNamesMapping()[level.upper()] if level else 0,
        logger=logger,
    )
    params = LogParams(
        filter=filt,
        limit=params.limit,
        cursor=params.cursor,
        follow=params.follow,
        after=params.after,
    )
    store = _store(request)
    if params.follow:
        return await _follow(request, store, LogSelector.system(), params)
    page = await store.read(
        LogSelector.system(), params.filter, limit=params.limit, cursor=params.cursor
    )
    return LogPageOut(
        items=[_out(line) for line in page.lines],
        next_cursor=page.next_cursor,
        last_id=page.last_id,
        source="store",
    )


# ---------------------------------------------------------------- shared


def _out(line: StoredLine) -> LogLineOut:
    instance_id: int | None = None
    if line.source.instance:
        suffix = line.source.instance.rsplit("-", 1)[-1]
        instance_id = int(suffix) if suffix.isdigit() else None
    return LogLineOut(
        id=line.id,
        at=line.at,
        stream=line.stream,
        text=line.text,
        instance=line.source.instance or None,
        instance_id=instance_id,
        level=logging.getLevelName(line.level) if line.level else None,
        logger=line.logger or None,
    )


async def _follow(
    request: Request, store: LogStore, selector: LogSelector, params: LogParams
) -> StreamingResponse:
    if EVENT_STREAM not in request.headers.get("accept", ""):
        raise HTTPException(
            406, "follow=true streams Server-Sent Events: send 'Accept: text/event-stream'"
        )
    after = params.after
    last_event = request.headers.get("last-event-id", "").strip()
    if after is None and last_event:
        if not last_event.isdigit() or len(last_event) > 18:
            raise InvalidRequest("Last-Event-ID must be the id of a line this stream sent")
        after = int(last_event)
    if after is None:  # from now on: fixed before the response starts, so nothing slips by
        after = await asyncio.to_thread(store.last_id)
    return StreamingResponse(
        _events(store, selector, params.filter, after),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    store: LogStore, selector: LogSelector, filt: LogFilter, after: int | None
) -> AsyncIterator[str]:
    """The SSE body. Starlette cancels it when the client disconnects; ``aclosing`` then ends
    the follower at once, whatever it was waiting for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FOLLOW_MAX_S
    yield "retry: 3000\n\n"
    follower = store.follow(selector, filt, after_id=after, heartbeat=HEARTBEAT_S)
    async with contextlib.aclosing(follower) as batches:
        async for batch in batches:
            if not batch:
                yield ": heartbeat\n\n"
            for line in batch:
                body = _out(line).model_dump_json()
                yield f"id: {line.id}\ndata: {body}\n\n"
            if loop.time() >= deadline:
                return
