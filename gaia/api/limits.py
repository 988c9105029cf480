"""What the API agrees to read: bodies up to one size, and JSON bodies only as JSON.

**Size.** One limit, ``GAIA_MAX_REQUEST_BYTES``, for every request (API and console alike),
enforced by ``RequestSizeLimit``, a pure ASGI middleware, so that no body is read whole before
it is refused:

- a request whose ``Content-Length`` already says it is too large is answered before any route
  runs (a route that never reads its body, a DELETE say, must not act and then be told 413);
- otherwise the bytes are counted as they stream in, which also catches a chunked body that
  declares no length: the read that crosses the limit raises ``PayloadTooLarge`` and the route
  never sees the body.

Both answer **413** ``payload_too_large`` in the error shape (``gaia.api.errors``), naming the
limit. FastAPI's own ``max_body_size`` is not used: over a declared length it lets the route run
and then swaps the answer for a plain-text 413. The server bounds WebSocket messages (the
console's terminal) by the same setting (``gaia.cli``, uvicorn's ``ws_max_size``).

**Media type.** A route that takes a JSON body answers **415** ``unsupported_media_type`` to a
body of another ``Content-Type`` (``application/json`` and ``application/*+json`` are JSON),
instead of trying it as JSON and answering 422 about fields the caller never meant to send.
The check is a dependency of the API's routers, so the console's form posts are not affected.
"""

from __future__ import annotations

from email.message import Message as MimeHeader

from fastapi import Request, params
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gaia.api.errors import PayloadTooLarge, error_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RequestSizeLimit:
    """Refuse a request body over ``max_bytes``: by its declared length, unread, or at the read
    that crosses the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        # a malformed length never gets here: the HTTP server refuses it with 400
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # inside a route this reaches the error handlers as any HTTP error does
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except PayloadTooLarge:
            # read outside the routes (no handler saw it): answer here, if nothing was sent yet
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(self.max_bytes)
        response = error_response(
            Request(scope, receive),
            413,
            "payload_too_large",
            error.detail,
            {"limit_bytes": self.max_bytes},
        )
        await response(scope, receive, send)


def is_json(content_type: str) -> bool:
    header = MimeHeader()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    return header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def has_body(request: Request) -> bool:
    if request.method not in BODY_METHODS:
        return False
    length = request.headers.get("content-length")
    if length is not None:
        return length != "0"
    return "transfer-encoding" in request.headers


async def json_bodies_only(request: Request) -> None:
    """A dependency of every API router: a route that takes a JSON body refuses a body of any
    other media type with 415 (FastAPI would hand the raw bytes to validation: a 422)."""
    route = request.scope.get("route")
    body = route.body_field if isinstance(route, APIRoute) else None
    # a form or multipart route (none in the API today) takes its own media types
    takes_json = body is not None and not isinstance(body.field_info, params.Form)
    if not takes_json or not has_body(request):
        return
    content_type = request.headers.get("content-type", "")
    if not is_json(content_type):
        sent = content_type[:100] or "no Content-Type"  # echoed back: bounded
        raise HTTPException(
            415,
            f"this endpoint takes a JSON body (Content-Type: application/json), not {sent}",
        )
