"""Issue 15, limits: the API reads only what it agrees to, and says so when it refuses.

- A body over ``GAIA_MAX_REQUEST_BYTES`` is refused with 413 ``payload_too_large``: at once by
  its ``Content-Length``, or, streamed without one (chunked), at the read that crosses the limit.
  The chunked case runs under a real uvicorn with the options ``gaia up`` uses, since the
  in-process client always sends a length.
- A body that is not JSON, sent to an endpoint that takes JSON, is 415 ``unsupported_media_type``.
- A PostgreSQL outage is 503 ``unavailable`` (never 500), ``/api/readyz`` says so, and both
  answer 200 again once PostgreSQL is back.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from gaia.app import Platform, create_app
from gaia.cli import server_options
from gaia.clock import ManualClock
from gaia.security import hash_password
from gaia.settings import Settings
from gaia.store import migrate
from gaia.store.database import Database
from gaia.store.models import User
from tests.conftest import ADMIN_PASSWORD, TEST_SECRET_KEY, World, login, missing_component
from tests.console.forms import log_in
from tests.support.apps_harness import BIZ, AppsHarness, template
from tests.support.kube import free_port
from tests.support.postgres import PostgresServer, find_bin_dir

LIMIT = Settings().max_request_bytes


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:500]
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert str(LIMIT) in body["message"] and "GAIA_MAX_REQUEST_BYTES" in body["message"]
    assert body["details"] == {"limit_bytes": LIMIT}


@contextmanager
def served(platform: Platform, *, max_request_bytes: int | None = None) -> Iterator[str]:
    """The app under uvicorn with ``gaia up``'s own options (``gaia.cli.server_options``);
    ``max_request_bytes`` changes the server's limit only (the WebSocket messages)."""
    settings = platform.settings
    if max_request_bytes is not None:
        settings = settings.model_copy(update={"max_request_bytes": max_request_bytes})
    options = server_options(settings) | {"port": free_port(), "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(create_app(platform, run_loops=False), **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{options['port']}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# ---------------------------------------------------------------- request size


def test_the_default_limit_fits_the_biggest_legitimate_body() -> None:
    """A config may hold 1 MiB of data (Kubernetes' own limit) and a kubeconfig 1 MB: the
    limit must leave room for both, JSON-escaped, or a valid request would be refused."""
    assert LIMIT >= 3 * 1024 * 1024


def test_a_body_over_the_limit_by_its_content_length_is_refused(client: TestClient) -> None:
    """The attack: a 1 GB POST to the unauthenticated login, read whole into memory."""
    r = client.post(
        "/api/v1/auth/login",
        content=b"{" + b" " * LIMIT + b"}",
        headers={"content-type": "application/json"},
    )
    assert_too_large(r)


def test_a_route_that_never_reads_its_body_does_not_act_before_the_413(
    client: TestClient, admin: dict[str, str]
) -> None:
    """The mistake: a limit enforced only where the body is read lets a DELETE with an
    oversized body delete and then answer 413; a declared length is refused before routing."""
    assert (
        client.post("/api/v1/businesses", json={"name": "keep"}, headers=admin).status_code == 201
    )
    r = client.request(
        "DELETE",
        "/api/v1/businesses/keep",
        content=b" " * (LIMIT + 1),
        headers={**admin, "content-type": "application/json"},
    )
    assert_too_large(r)
    assert client.get("/api/v1/businesses/keep", headers=admin).status_code == 200


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(platform: Platform) -> None:
    """The attack: no Content-Length at all (Transfer-Encoding: chunked), so a check of the
    header alone lets an endless body through; the bytes are counted as they stream in."""
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        chunk = b" " * 65536
        while sent <= LIMIT:
            sent += len(chunk)
            yield chunk

    with served(platform) as origin:
        r = httpx.post(
            f"{origin}/api/v1/auth/login",
            content=body(),
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert "content-length" not in r.request.headers
        assert_too_large(r)
        # the server is still serving
        assert httpx.get(f"{origin}/api/healthz", timeout=10).status_code == 200


def test_a_body_just_under_the_limit_is_served(client: TestClient) -> None:
    credentials = b'{"username": "admin", "password": "%s"}' % ADMIN_PASSWORD.encode()
    padded = credentials + b" " * (LIMIT - len(credentials))  # JSON allows trailing whitespace
    assert len(padded) == LIMIT
    r = client.post(
        "/api/v1/auth/login", content=padded, headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text


def test_a_websocket_message_over_the_limit_closes_the_terminal(
    world: World, platform: Platform
) -> None:
    """The attack: uvicorn's default takes WebSocket messages of up to 16 MiB, each held whole in
    memory, on the console's terminal. ``gaia up`` bounds them by ``GAIA_MAX_REQUEST_BYTES``; a
    message over it closes the socket with 1009 (message too big) before the app reads it."""
    h = AppsHarness(platform=platform, client=world.client, headers=world.as_("developer"))
    app = {
        "name": "web",
        "cluster": "sim-1",
        "templates": [template("v1", "registry.local/web:v1", cpu=0.1, memory=64)],
        "replicas": 1,
    }
    h.post(f"{BIZ}/apps", app, status=201)
    h.settle(h.ready("web", 1))
    token = log_in(world.client, "dev")
    limit = 64 * 1024
    assert server_options(Settings(max_request_bytes=limit))["ws_max_size"] == limit
    with served(platform, max_request_bytes=limit) as origin:
        url = origin.replace("http://", "ws://") + "/console/ws/b/alpha/apps/web/instances/0/exec"
        headers = {"cookie": f"gaia_session={token}", "origin": origin}
        with connect(url, additional_headers=headers, max_size=None) as ws:
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
            ws.send(json.dumps({"type": "run", "line": "echo ok"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "output"
            # under the limit the app reads the message whole, then refuses the line by its rule
            ws.send(json.dumps({"type": "run", "line": "echo " + "x" * (limit // 2)}))
            refused = json.loads(ws.recv(timeout=30))
            assert refused["type"] == "error" and "at most 4096" in refused["message"]
            ws.send(json.dumps({"type": "run", "line": "echo " + "x" * limit}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# ---------------------------------------------------------------- media type


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_415(client: TestClient, content_type: str | None) -> None:
    """The mistake: FastAPI hands a text/plain body to validation as raw bytes, and the caller
    gets a 422 about the body's fields instead of being told to send JSON."""
    headers = {"content-type": content_type} if content_type else {}
    body = b'{"username": "admin", "password": "%s"}' % ADMIN_PASSWORD.encode()
    r = client.post("/api/v1/auth/login", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["code"] == "unsupported_media_type"
    assert "application/json" in r.json()["message"]
    assert (content_type or "no Content-Type") in r.json()["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_json_and_json_suffixed_media_types_are_accepted(
    client: TestClient, content_type: str
) -> None:
    body = b'{"username": "admin", "password": "%s"}' % ADMIN_PASSWORD.encode()
    r = client.post("/api/v1/auth/login", content=body, headers={"content-type": content_type})
    assert r.status_code == 200, r.text


def test_a_route_without_a_body_ignores_the_media_type(
    client: TestClient, admin: dict[str, str]
) -> None:
    """Only endpoints that take a JSON body check it: a bodyless POST with a form type (what
    ``curl -X POST`` and some proxies send) still works."""
    r = client.post(
        "/api/v1/auth/logout",
        headers={**admin, "content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code < 300, r.text


# ---------------------------------------------------------------- PostgreSQL outage


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, since the test takes it down."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing_component("PostgreSQL", "run scripts/test-setup.sh (apt-get install postgresql)")
        raise AssertionError("unreachable")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_a_postgresql_outage_is_503_and_the_api_recovers(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """The mistake: only SQLite's OperationalError was mapped, so a PostgreSQL that went away
    (or a connection it reset) answered 500 with an incident, as if the platform were broken."""
    url = own_postgres.create_database("gaia_outage")
    db = Database(url)
    migrate.upgrade(db.engine)
    db.dispose()
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url, secret_key=TEST_SECRET_KEY, demo=False
    )
    platform = Platform.open(
        settings, run_migrations=False, clock=ManualClock(dt.datetime.now(dt.UTC))
    )
    with platform.db.write_session() as session:
        session.add(
            User(
                username="admin",
                password_hash=hash_password(ADMIN_PASSWORD),
                is_platform_admin=True,
            )
        )
    try:
        with TestClient(create_app(platform, run_loops=False), base_url="https://localhost") as c:
            headers = login(c, "admin", ADMIN_PASSWORD)
            assert c.get("/api/v1/clusters", headers=headers).status_code == 200
            assert c.get("/api/readyz").json() == {"status": "ready"}

            own_postgres.halt()
            r = c.get("/api/v1/clusters", headers=headers)
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "unavailable"
            assert r.headers["retry-after"] == "5"
            r = c.post("/api/v1/businesses", json={"name": "during"}, headers=headers)
            assert r.status_code == 503, r.text
            ready = c.get("/api/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "unavailable", "reason": "store"}
            assert c.get("/api/healthz").status_code == 200  # the process itself is alive

            own_postgres.resume()
            assert c.get("/api/v1/clusters", headers=headers).status_code == 200
            assert c.get("/api/readyz").json() == {"status": "ready"}
    finally:
        platform.db.dispose()
