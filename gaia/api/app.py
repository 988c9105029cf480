"""The ASGI application: API routers, the console, error handling, the operation recorder.

``create_app(platform)`` wires a ``Platform`` (database, secret box, providers, settings) into a
FastAPI app. ``Platform.open(settings)`` migrates the database and makes the first admin; the
app's lifespan runs the background loops (cluster health, reservation reaper) unless the caller
says not to (tests drive loops with ``start(loops=1)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI

from gaia import __version__
from gaia.api import errors
from gaia.api.audit import OperationRecorder
from gaia.api.routes import (
    apps,
    auth,
    businesses,
    clusters,
    configs,
    gpu_models,
    instance_configs,
    nodes,
    overview,
    quotas,
    records,
    users,
)
from gaia.clock import Clock, RealClock
from gaia.controllers.apps import AppController
from gaia.controllers.cluster_health import ClusterHealthLoop
from gaia.controllers.loop import LoopService
from gaia.controllers.reservations import ReservationReaper
from gaia.providers.registry import ProviderRegistry
from gaia.security import LoginThrottle, SecretBox
from gaia.settings import Settings
from gaia.store import migrate
from gaia.store.database import Database

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    db: Database
    secrets: SecretBox
    providers: ProviderRegistry
    token_last_touch: dict[int, dt.datetime] = field(default_factory=dict)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)

    @property
    def clock(self) -> Clock:
        return self.providers.clock

    @classmethod
    def open(
        cls, settings: Settings, *, run_migrations: bool = True, clock: Clock | None = None
    ) -> Platform:
        db = Database(settings.resolved_database_url())
        if run_migrations:
            migrate.upgrade(db.engine)
        secrets = SecretBox.from_settings(
            secret_key=settings.secret_key, data_dir=settings.data_dir
        )
        return cls(
            settings=settings,
            db=db,
            secrets=secrets,
            providers=ProviderRegistry(secrets=secrets, clock=clock or RealClock()),
        )

    def app_controller(self) -> AppController:
        return AppController(
            db=self.db,
            providers=self.providers,
            secrets=self.secrets,
            clock=self.clock,
            interval=self.settings.app_reconcile_interval_seconds,
        )

    def loops(self) -> list[LoopService]:
        return [
            ClusterHealthLoop(
                db=self.db,
                providers=self.providers,
                interval=self.settings.cluster_health_interval_seconds,
                timeout=self.settings.cluster_health_timeout_seconds,
            ),
            ReservationReaper(db=self.db),
            self.app_controller(),
        ]


def create_app(platform: Platform, *, run_loops: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loops = platform.loops() if run_loops else []
        tasks = [asyncio.create_task(loop.start(), name=loop.name) for loop in loops]
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await platform.providers.close()

    app = FastAPI(
        title="Gaia",
        version=__version__,
        description="Gaia platform API. Authenticate with `Authorization: Bearer <token>` "
        "from `POST /api/v1/auth/login` or an API token.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.platform = platform
    errors.install(app)

    @app.get("/api/healthz", tags=["meta"], include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Liveness of this process (no auth, no database)."""
        return {"status": "ok", "version": __version__}

    for module in (auth, users, businesses, quotas, instance_configs, clusters, records, overview):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(configs.router, prefix="/api/v1")
    app.include_router(apps.router, prefix="/api/v1")
    app.include_router(nodes.router, prefix="/api/v1")
    app.include_router(gpu_models.router, prefix="/api/v1")
    from gaia.console import router as console_router

    app.include_router(console_router)
    app.add_middleware(OperationRecorder, db_getter=lambda: platform.db)
    return app
