"""Test fixtures: every database test runs on SQLite *and* on a real PostgreSQL server.

- One private PostgreSQL server per test session (``tests/support/postgres.py``), one database
  migrated once; each test starts from empty tables (TRUNCATE). Without PostgreSQL installed the
  PostgreSQL half is skipped locally with the command that installs it, and **fails** in CI
  (``CI=true``), as the real-components rule demands.
- SQLite: the schema is migrated once into a template file that each test copies.
- ``client`` is a FastAPI TestClient over the full app (recorder middleware, error handlers);
  background loops do not run by themselves, tests drive them with ``start(loops=1)``.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gaia.app import Platform, create_app
from gaia.clock import ManualClock
from gaia.security import hash_password, use_cheap_password_hashing
from gaia.settings import Settings
from gaia.store import migrate
from gaia.store.database import Database
from gaia.store.models import Base, User
from tests.support.kube import ControlPlane, ControlPlaneUnavailable, build_control_plane
from tests.support.leaks import CollectorPauses, forget_fastapi_callables
from tests.support.node import RealNode, start_real_node
from tests.support.postgres import PostgresServer, find_bin_dir

use_cheap_password_hashing()

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ADMIN_PASSWORD = "admin-password-1"
# A fixed secret key keeps tests reproducible; production makes one per installation.
TEST_SECRET_KEY = "dGVzdC1rZXktZm9yLWdhaWEtdGVzdHMtb25seS0xMjM="


COLLECTOR_PAUSES = CollectorPauses()
COLLECTOR_PAUSES.install()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is imported and collected by now stays for the whole run: frozen, the garbage
    collector's full passes no longer walk it (a platform per test makes them frequent)."""
    gc.collect()
    gc.freeze()


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    COLLECTOR_PAUSES.test = nodeid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(COLLECTOR_PAUSES.summary())


@pytest.fixture(autouse=True)
def _let_go_of_apps() -> Iterator[None]:
    """After each test (its own fixtures torn down first): nothing of its apps stays in
    FastAPI's caches to keep its platform alive (``tests/support/leaks.py``)."""
    yield
    forget_fastapi_callables()


def missing_component(what: str, how: str) -> None:
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(f"CI requires the real component. {message}", pytrace=False)
    pytest.skip(message)


def start_plane(tmp_path_factory: pytest.TempPathFactory, name: str) -> ControlPlane:
    """A started control plane (``tests/support/kube.py``), or a CI failure / local skip."""
    try:
        bin_dir = build_control_plane()
    except ControlPlaneUnavailable as exc:
        missing_component("The Kubernetes control plane", str(exc))
        raise AssertionError("unreachable") from exc
    plane = ControlPlane(bin_dir=bin_dir, work=tmp_path_factory.mktemp(name))
    try:
        plane.start()
    except ControlPlaneUnavailable as exc:
        plane.stop()
        missing_component("The Kubernetes control plane", f"it did not start: {exc}")
    return plane


def start_real_bed(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, controller_manager: bool = False
) -> tuple[ControlPlane, RealNode]:
    """A control plane of its own with one real kubelet node (``tests/support/node.py``)."""
    plane = start_plane(tmp_path_factory, f"{name}-plane")
    try:
        if controller_manager:
            plane.ensure_controller_manager()
        node = start_real_node(plane, tmp_path_factory.mktemp(f"{name}-node"))
    except ControlPlaneUnavailable as exc:  # RealNodeUnavailable included
        plane.stop()
        missing_component("A real Kubernetes node (kubelet + containerd + runc)", str(exc))
        raise AssertionError("unreachable") from exc
    return plane, node


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real etcd + kube-apiserver + KWOK per test session (``tests/support/kube.py``)."""
    plane = start_plane(tmp_path_factory, "control-plane")
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing_component(
            "PostgreSQL", "run scripts/test-setup.sh (apt-get install postgresql) first"
        )
        raise AssertionError("unreachable")
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        missing_component("PostgreSQL", f"the server did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database("gaia_test")
    db = Database(url)
    migrate.upgrade(db.engine)
    db.dispose()
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "gaia.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_template")
    db = Database(url)
    with db.engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.dispose()
    yield url


@contextmanager
def opened_platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    """A platform on ``database_url`` (migrated already) with its first admin, closed when the
    block ends (the ``platform`` fixture's)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        demo=False,
        cluster_health_interval_seconds=1,
        cluster_health_timeout_seconds=1,
    )
    # Simulated time stands still until a test steps it (``platform.clock.step``).
    plat = Platform.open(settings, run_migrations=False, clock=ManualClock(dt.datetime.now(dt.UTC)))
    with plat.db.write_session() as session:
        session.add(
            User(
                username="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                is_platform_admin=True,
            )
        )
    try:
        yield plat
    finally:
        plat.log_store.close()  # PostgreSQL: the log store's own pool
        plat.db.dispose()


@pytest.fixture
def platform(database_url: str, tmp_path: Path) -> Iterator[Platform]:
    with opened_platform(database_url, tmp_path) as plat:
        yield plat


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    app = create_app(platform, run_loops=False)
    with TestClient(app, base_url="https://localhost") as c:
        yield c


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    """Auth headers of the platform admin."""
    return login(client, "admin", ADMIN_PASSWORD)


@dataclass
class World:
    """A small tenancy: two businesses, a sim cluster, and one user per role."""

    client: TestClient
    admin: dict[str, str]
    users: dict[str, dict[str, str]]

    def as_(self, who: str) -> dict[str, str]:
        return self.admin if who == "platform-admin" else self.users[who]


QUOTA = {
    "cpu": 10,
    "memory": 10240,
    "local_disk": 100,
    "cloud_disk": 200,
    "shared_disk": 50,
    "bandwidth": 1000,
    "gpu": 4,
    "gpu_memory": 65536,
}


@pytest.fixture
def make_user(client: TestClient, admin: dict[str, str]) -> Callable[..., dict[str, str]]:
    def make(
        username: str, *, business: str | None = None, role: str | None = None
    ) -> dict[str, str]:
        password = f"{username}-password"
        r = client.post(
            "/api/v1/users", json={"username": username, "password": password}, headers=admin
        )
        assert r.status_code == 201, r.text
        if business and role:
            r = client.put(
                f"/api/v1/businesses/{business}/members/{username}",
                json={"role": role},
                headers=admin,
            )
            assert r.status_code == 200, r.text
        return login(client, username, password)

    return make


@pytest.fixture
def world(
    client: TestClient, admin: dict[str, str], make_user: Callable[..., dict[str, str]]
) -> World:
    for biz in ("alpha", "beta"):
        assert (
            client.post("/api/v1/businesses", json={"name": biz}, headers=admin).status_code == 201
        )
    r = client.post(
        "/api/v1/clusters",
        json={"name": "sim-1", "kind": "sim", "region": "ap-beijing", "zone": "ap-beijing-1"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    for biz in ("alpha", "beta"):
        r = client.put(
            f"/api/v1/businesses/{biz}/quotas/sim-1", json={"hard": QUOTA}, headers=admin
        )
        assert r.status_code == 200, r.text
    users = {
        "business-admin": make_user("ba", business="alpha", role="business-admin"),
        "developer": make_user("dev", business="alpha", role="developer"),
        "viewer": make_user("viewer", business="alpha", role="viewer"),
        "outsider": make_user("outsider", business="beta", role="business-admin"),
    }
    return World(client=client, admin=admin, users=users)
