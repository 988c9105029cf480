"""The operation record: every mutating call, accepted or rejected, is written down.

A pure ASGI middleware wraps each POST/PUT/PATCH/DELETE. It sees the final status code (from the
response it relays) and the ``AuditContext`` that auth and the route filled in: actor, business,
target, a summary of the change, and the error message if any. Two paths write the record:

- a call that succeeded: ``gaia.api.deps.db_session`` adds the record to the request's own
  transaction, so the change and its record commit together and SQLite's write lock is taken
  once per call, not twice. The record names the status the route declares; should the response
  carry another one (a route answering with its own ``Response``, a response that failed to
  serialise after the commit), the recorder corrects the record's status (``correct_status``);
- a call that failed, or a route that took no request transaction: the request's transaction
  (if any) has rolled back, and the recorder writes the record in a short transaction of its
  own, so a rejected or rolled-back request is recorded too.

Summaries are written by the routes from validated fields, never by dumping the
request body, so passwords, tokens and kubeconfigs cannot reach a record. A WebSocket (the
console's terminal) passes no middleware: its handler records its own steps through
``record_socket_step``, written the same way. The writing itself is
``gaia.store.records.append_record`` (docs/architecture.md, "One request").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from gaia.api.deps import MUTATING_METHODS, AuditContext
from gaia.api.errors import is_store_outage
from gaia.store.database import Database
from gaia.store.records import append_record, correct_status

log = logging.getLogger(__name__)


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
            if ctx.written is not None:
                record_id, named = ctx.written
                if status != named:
                    await _store(
                        correct_status,
                        self._db_getter(),
                        scope=scope,
                        record_id=record_id,
                        status=status,
                        error=ctx.error,
                    )
            elif ctx.wants_record(status=status):
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
    """Write the record of a request in a transaction of its own (the refusal path)."""
    record = ctx.to_record(scope=scope, method=method, status=status)
    await _store(append_record, db, scope=scope, record=record)


async def _store(write: Callable[..., None], db: Database, *, scope: Scope, **what: Any) -> None:
    try:
        await anyio.to_thread.run_sync(lambda: write(db, **what))
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
