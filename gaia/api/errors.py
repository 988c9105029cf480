"""Every error leaves the API as ``{"code": ..., "message": ..., "details": ...}``.

Domain errors map to one status each; request validation becomes 422 with the offending fields;
a unique-constraint race in the database becomes 409; a database that is down or lost the
connection (SQLite or PostgreSQL) becomes 503 with Retry-After. Anything unexpected is logged
with a request id and answered 500 with that id, never with a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gaia.api.deps import audit
from gaia.domain.errors import (
    ClusterUnavailable,
    Conflict,
    Forbidden,
    GaiaError,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    TooManyRequests,
    Unauthenticated,
    Unsupported,
)
from gaia.monitor.metrics.series import MetricStoreUnavailable

log = logging.getLogger(__name__)

STATUS: dict[type[GaiaError], int] = {
    InvalidRequest: 422,
    MetricStoreUnavailable: 503,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    QuotaExceeded: 403,  # as Kubernetes answers an exceeded ResourceQuota
    TooManyRequests: 429,
    ClusterUnavailable: 503,
    Unsupported: 501,
}
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    audit(request).error = message
    return JSONResponse(
        status_code=status,
        content={"code": code, "message": message, "details": details},
        headers=headers,
    )


class PayloadTooLarge(StarletteHTTPException):
    """A request body over ``GAIA_MAX_REQUEST_BYTES`` (``gaia.api.limits``): 413, naming it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than the limit of {limit} bytes "
            "(the GAIA_MAX_REQUEST_BYTES setting); send less",
        )
        self.limit = limit


def _json_safe(errors: Any) -> Any:
    out = []
    for err in errors:
        item = {k: v for k, v in err.items() if k in ("loc", "msg", "type")}
        item["loc"] = [str(p) for p in item.get("loc", ())]
        out.append(item)
    return out


def is_store_outage(exc: DBAPIError) -> bool:
    """The database is down or the connection to it broke, as opposed to a bad statement.

    The DB-API's connection-class errors: ``OperationalError`` (refused, reset, terminated by
    the administrator, SQLite's file gone), ``InterfaceError`` (a connection already closed),
    and any error SQLAlchemy recognised as a lost connection (``connection_invalidated``)."""
    return isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated


def install(app: FastAPI) -> None:
    @app.exception_handler(GaiaError)
    async def _gaia(request: Request, exc: GaiaError) -> JSONResponse:
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(request, status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(ConnectionError)
    async def _unreachable(request: Request, exc: ConnectionError) -> JSONResponse:
        return error_response(
            request,
            503,
            "cluster_unavailable",
            f"the cluster did not answer ({exc}); check its health and retry",
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = exc.errors()
        errors = _json_safe(raw)
        bad_json = next((e for e in raw if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            # FastAPI reports the character offset as the location and the decoder's words in
            # ctx: say both, so a person finds the broken spot ("16: JSON decode error" did not)
            loc = bad_json.get("loc", ())
            position = loc[-1] if loc else "?"
            what = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(
                request,
                422,
                "invalid_request",
                f"the body is not valid JSON: {what} at character {position}",
                {"errors": errors},
            )
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body",)) or "request"
        return error_response(
            request, 422, "invalid_request", f"{where}: {first['msg']}", {"errors": errors}
        )

    @app.exception_handler(DBAPIError)
    async def _store_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_store_outage(exc):
            return await _unexpected(request, exc)
        # the database refused or lost the connection: the platform is unavailable, not broken
        log.warning("store unavailable: %s", str(exc.orig).strip())
        return error_response(
            request,
            503,
            "unavailable",
            "the platform's database is unavailable; retry shortly",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        return error_response(
            request,
            409,
            "conflict",
            "the request conflicts with a concurrent change (an object with that name may have "
            "just been created); reload and retry",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if isinstance(exc, PayloadTooLarge):
            return error_response(request, 413, code, message, {"limit_bytes": exc.limit})
        return error_response(
            request, exc.status_code, code, message, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.exception(
            "unhandled error, incident %s, %s %s", incident, request.method, request.url.path
        )
        return error_response(
            request,
            500,
            "internal_error",
            f"internal error; quote incident {incident} to the platform team",
            {"incident": incident},
        )
