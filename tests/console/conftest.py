"""Browser tests of the console: Playwright driving Debian's Chromium against a live Gaia.

``console`` is a whole platform under uvicorn with its background loops running on the real
clock (so apps start, upgrade and emit events as they would for a user), a sim cluster with room,
and the first admin. ``browser`` is Chromium from Debian (``executable_path``; Playwright never
downloads a browser here). Screenshots of the main pages are written to ``artifacts/screenshots``
(CI keeps that folder as an artifact; the README names it).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gaia.clock import RealClock
from gaia.platform import Platform
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store.models import User
from tests.conftest import ADMIN_PASSWORD, TEST_SECRET_KEY, missing_component
from tests.support.live import serve

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@dataclass
class Console:
    origin: str
    platform: Platform
    admin_token: str

    def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        r = httpx.request(
            method,
            self.origin + path,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
            **kw,
        )
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def make_user(self, username: str, *, business: str | None = None, role: str = "") -> str:
        password = f"{username}-password-1"
        self.api("POST", "/api/v1/users", json={"username": username, "password": password})
        if business:
            self.api(
                "PUT", f"/api/v1/businesses/{business}/members/{username}", json={"role": role}
            )
        return password


@contextmanager
def live_console(tmp_path: Path, **settings: Any) -> Iterator[Console]:
    """A whole platform under uvicorn with its loops running, a sim cluster and the first admin;
    ``settings`` override the defaults below (a journey that waits on the monitoring loops runs
    them every second)."""
    platform = Platform.open(
        Settings(
            **{
                "data_dir": tmp_path / "data",
                "secret_key": TEST_SECRET_KEY,
                "demo": False,
                "app_reconcile_interval_seconds": 0.5,
                "cluster_health_interval_seconds": 2,
                "metrics_interval_seconds": 5,
                "log_collect_interval_seconds": 2,
                **settings,
            }
        ),
        clock=RealClock(),
    )
    with platform.db.write_session() as session:
        session.add(
            User(
                username="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                is_platform_admin=True,
                created_at=dt.datetime.now(dt.UTC),
            )
        )
    with serve(platform, run_loops=True) as origin:
        token = httpx.post(
            f"{origin}/api/v1/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            timeout=30,
        ).json()["token"]
        bed = Console(origin=origin, platform=platform, admin_token=token)
        bed.api(
            "POST",
            "/api/v1/clusters",
            json={"name": "sim-1", "kind": "sim", "region": "ap-shanghai", "zone": "ap-shanghai-2"},
        )
        yield bed
    platform.db.dispose()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with live_console(tmp_path) as bed:
        yield bed


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: while Playwright's sync API runs, its event loop counts as
    # running in this thread, and other tests' asyncio.run() would fail.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_component("Chromium", "apt-get install chromium (Debian's package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_component("Playwright", "pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
