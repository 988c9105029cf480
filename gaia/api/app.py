"""The platform API as a FastAPI application: routers, error handling, the operation recorder.

``create_api(platform)`` mounts every router under ``/api/v1`` (and ``GET /metrics``) over a
``Platform`` (``gaia.platform``) kept in ``app.state.platform``, installs the error handlers,
the request limits (``gaia.api.limits``: body size, JSON media type), the request metrics and the
operation recorder, and answers the probes: ``GET /api/healthz`` (the process is alive) and
``GET /api/readyz`` (the platform's database answers). The server that ``gaia up`` runs adds
the console and the platform's loops on top (``gaia.app.create_app``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from gaia import __version__
from gaia.api import errors
from gaia.api.audit import OperationRecorder
from gaia.api.limits import RequestSizeLimit, json_bodies_only
from gaia.api.routes import (
    alerts,
    apps,
    auth,
    backups,
    businesses,
    clusters,
    components,
    configs,
    gpu_models,
    instance_configs,
    logs,
    metrics_endpoint,
    network,
    nodes,
    overview,
    p2p,
    pipelines,
    quotas,
    records,
    registry,
    search,
    users,
)
from gaia.monitor.metrics.platform import HttpMetricsMiddleware
from gaia.platform import Platform

log = logging.getLogger(__name__)

ROUTERS = (
    auth,
    users,
    businesses,
    quotas,
    instance_configs,
    clusters,
    records,
    overview,
    configs,
    apps,
    network,
    nodes,
    p2p,
    registry,
    gpu_models,
    alerts,
    logs,
    pipelines,
    search,
    components,
    backups,
)


API_STATIC = Path(__file__).parent / "static"


def create_api(
    platform: Platform,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Gaia",
        version=__version__,
        description="Gaia platform API. Authenticate with `Authorization: Bearer <token>` "
        "from `POST /api/v1/auth/login` or an API token.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # served below from the platform's own copy of Swagger UI
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    errors.install(app)

    @app.get("/api/healthz", tags=["meta"], include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness of this process (no auth, no database)."""
        return {"status": "ok", "version": __version__}

    @app.get("/api/readyz", tags=["meta"], include_in_schema=False)
    def readyz() -> JSONResponse:
        """Readiness: 200 while the platform's database answers a trivial query, else 503 (no
        auth, like any probe; so it says no more than which part is down)."""
        try:
            with platform.db.read_session() as session:
                session.scalar(select(1))
        except SQLAlchemyError as exc:
            log.warning("readiness: the store does not answer: %s", exc)
            return JSONResponse({"status": "unavailable", "reason": "store"}, status_code=503)
        return JSONResponse({"status": "ready"})

    app.mount("/api/static", StaticFiles(directory=API_STATIC, check_dir=False), name="api-static")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        """Swagger UI from this platform (npm's swagger-ui-dist, copied by
        scripts/console-assets.sh), never from a CDN: it works with no internet."""
        if not (API_STATIC / "swagger-ui-bundle.js").is_file():
            return HTMLResponse(
                "<!doctype html><title>Gaia API</title><p>Swagger UI is not installed here: run "
                "<code>scripts/console-assets.sh</code>. The API description is at "
                '<a href="/api/openapi.json">/api/openapi.json</a>.</p>',
                status_code=503,
            )
        return get_swagger_ui_html(
            openapi_url="/api/openapi.json",
            title="Gaia API",
            swagger_js_url="/api/static/swagger-ui-bundle.js",
            swagger_css_url="/api/static/swagger-ui.css",
            swagger_favicon_url="/api/static/favicon-32x32.png",
        )

    for module in ROUTERS:
        app.include_router(
            module.router, prefix="/api/v1", dependencies=[Depends(json_bodies_only)]
        )
    # monitoring: GET /metrics (root path) and the request metrics of every route
    app.include_router(metrics_endpoint.router)
    # innermost of ours: a request refused for its size is still timed and recorded
    app.add_middleware(RequestSizeLimit, max_bytes=platform.settings.max_request_bytes)
    app.add_middleware(HttpMetricsMiddleware, metrics=platform.metrics)
    app.add_middleware(OperationRecorder, db_getter=lambda: platform.db)
    return app
