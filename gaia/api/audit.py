"""The operation record: every mutating call, accepted or rejected, is written down.

A pure ASGI middleware wraps each POST/PUT/PATCH/DELETE. It sees the final status code (from the
response it relays) and the ``AuditContext`` that auth and the route filled in: actor, business,
target, a summary of the change, and the error message if any. The record is written in its own
transaction after the request's transaction has ended, so a rejected or rolled-back request is
recorded too. Summaries are written by the routes from validated fields, never by dumping the
request body, so passwords, tokens and kubeconfigs cannot reach a record. A WebSocket (the
console's terminal) passes no middleware: its handler records its own steps through
``record_socket_step``, written the same way. The writing itself is
``gaia.store.records.append_record`` (docs/architecture.md, "One request").
"""

from __future__ import annotations

import logging
import re
from typing import Any

import anyio
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from gaia.api.deps import MUTATING_METHODS, AuditContext
from gaia.api.errors import is_store_outage
from gaia.store.database import Database
from gaia.store.models import OperationRecord
from gaia.store.records import append_record

log = logging.getLogger(__name__)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class OperationRecorder:
    def __init__(self, app: ASGIApp, *, db_getter: Any) -> None:
        self.app = app
        self._db_getter = db_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING_METHODS:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        ctx = state.setdefault("audit", AuditContext())
        status = 500

        async def relay(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, relay)
        finally:
            if not (ctx.delegated or ctx.repeat or (ctx.read_only and status < 400)):
                await self._record(scope, ctx, status)

    async def _record(self, scope: Scope, ctx: AuditContext, status: int) -> None:
        await record_operation(
            self._db_getter(), scope=scope, ctx=ctx, method=scope["method"], status=status
        )


async def record_socket_step(websocket: WebSocket, ctx: AuditContext, *, status: int) -> None:
    """Write the record of one step of a WebSocket session (the console's terminal opening,
    refused or closing): no HTTP middleware sees a socket, so its handler fills in ``ctx``
    and calls this, and the record is written exactly as the recorder writes one."""
    db: Database = websocket.app.state.platform.db
    await record_operation(db, scope=websocket.scope, ctx=ctx, method="WS", status=status)


async def record_operation(
    db: Database, *, scope: Scope, ctx: AuditContext, method: str, status: int
) -> None:
    route = scope.get("route")
    action = ctx.action or (getattr(route, "name", "") or "unknown")
    client = scope.get("client")
    record = OperationRecord(
        actor=_clean(ctx.actor, 63),
        business_id=ctx.business_id,
        business=_clean(ctx.business, 63),
        cluster=_clean(ctx.cluster, 63),
        action=_clean(action, 100),
        method=method,
        path=_clean(scope["path"], 500),
        target=_clean(ctx.target or scope["path"], 500),
        summary=_clean(ctx.summary, 4000),
        result="success" if status < 400 else "failure",
        status_code=status,
        error=_clean(ctx.error, 4000),
        client=_clean(client[0] if client else "", 100),
    )
    try:
        await anyio.to_thread.run_sync(append_record, db, record)
    except DBAPIError as exc:
        if not is_store_outage(exc):
            log.exception("could not write the operation record for %s", scope["path"])
        else:
            # during an outage every request would print the same traceback: one line each
            log.warning(
                "could not write the operation record for %s: the store is unavailable (%s)",
                scope["path"],
                type(exc.orig or exc).__name__,
            )
    except Exception:
        # Losing a record must not go unnoticed, but must not turn a done change into
        # an error for the caller either.
        log.exception("could not write the operation record for %s", scope["path"])


def _clean(text: str, limit: int) -> str:
    """Printable text only: paths and usernames arrive URL-decoded and may hold NUL bytes."""
    return _CONTROL.sub("\ufffd", text)[:limit]
