"""A platform and its app are let go of once the test that made them is done.

The suite builds thousands of apps in one process; whatever keeps them alive makes the process
grow and its garbage collector's full passes long enough to stall in-process servers past
their clients' timeouts (``tests/support/leaks.py``).
"""

from __future__ import annotations

import gc
import shutil
import weakref
from pathlib import Path

from fastapi.testclient import TestClient

from gaia.app import Platform, create_app
from tests.conftest import opened_platform
from tests.support.leaks import forget_fastapi_callables


def _served_and_closed(tmp_path: Path, sqlite_template: Path) -> weakref.ref[Platform]:
    shutil.copy(sqlite_template, tmp_path / "gaia.db")
    with opened_platform(f"sqlite:///{tmp_path / 'gaia.db'}", tmp_path) as platform:
        app = create_app(platform, run_loops=False)
        with TestClient(app, base_url="https://localhost") as c:
            assert c.get("/api/healthz").status_code == 200
            assert c.get("/api/v1/businesses").status_code == 401  # through auth's dependencies
    return weakref.ref(platform)


def test_a_platform_outlives_neither_its_app_nor_its_test(
    tmp_path: Path, sqlite_template: Path
) -> None:
    gone = _served_and_closed(tmp_path, sqlite_template)
    forget_fastapi_callables()  # what the suite does after every test (tests/conftest.py)
    gc.collect()
    if gone() is not None:
        holders = [type(h).__qualname__ for h in gc.get_referrers(gone())]
        raise AssertionError(f"the platform is still alive, held by {holders}")
