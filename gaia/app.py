"""The server ``gaia up`` runs: the platform API and the web console on one ASGI application.

``create_app(platform)`` builds the API (``gaia.api.create_api``), mounts the console
(``gaia.console.install``), and ties the platform's background loops to the application's
lifespan (``Platform.running``). It is the one module that knows all three, so the API never
imports the console and the console reaches the platform only through the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gaia.api.app import create_api
from gaia.console import install as install_console
from gaia.platform import Platform

__all__ = ["Platform", "create_app"]


def create_app(platform: Platform, *, run_loops: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with platform.running(loops=run_loops):
            yield

    app = create_api(platform, lifespan=lifespan)
    install_console(app)
    return app
