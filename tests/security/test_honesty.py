"""Issue 15, honesty: the API names what it refuses and why, and accepts what it documents.

- ``gpu_link``: the link vocabulary of ``gaia.domain.gpu_links`` (``SOC`` and ``SYS`` alike).
- Malformed JSON says where and what; a non-JSON body to a JSON endpoint gets 415
  (``test_limits.py``).
- A database outage is 503 ``unavailable`` with Retry-After, whatever the DB-API calls the lost
  connection; ``/api/readyz`` says the store is down while ``/api/healthz`` stays up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.exc import (
    DatabaseError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from gaia.api.errors import install
from gaia.api.schemas.apps import TemplateIn
from gaia.domain.gpu_links import REQUIRED_LINKS, check_link
from gaia.platform import Platform
from tests.conftest import ADMIN_PASSWORD, login
from tests.support.apps_harness import template


@pytest.mark.parametrize("link", ["SOC", "SYS", "NV", "PIX", "PXB", "PHB", "NODE"])
def test_gpu_link_accepts_both_names_of_the_cross_socket_link(link: str) -> None:
    body = template("v1", "registry.local/a:v1", gpu=2, gpu_link=link)
    assert TemplateIn.model_validate(body).gpu_link == link


def test_gpu_link_vocabulary_is_the_domain_one() -> None:
    for link in REQUIRED_LINKS:
        check_link(link)
    with pytest.raises(ValidationError):
        TemplateIn.model_validate(template("v1", "registry.local/a:v1", gpu=2, gpu_link="X"))


def test_malformed_json_says_where_and_what(client: TestClient) -> None:
    r = client.post(
        "/api/v1/auth/login",
        content=b'{"username": "a",, }',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "invalid_request"
    assert "not valid JSON" in body["message"] and "character" in body["message"], body


def test_store_outage_answers_503_with_the_error_shape(
    client: TestClient, platform: Platform, database_url: str
) -> None:
    headers = login(client, "admin", ADMIN_PASSWORD)
    if not database_url.startswith("sqlite"):
        pytest.skip("the outage is made by taking the SQLite file away")
    # a real outage: close every connection and take the database file's folder away
    platform.db.dispose()
    path = Path(database_url.split("///", 1)[1])
    shutil.rmtree(path.parent)
    r = client.get("/api/v1/clusters", headers=headers)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "unavailable"


def test_readyz_follows_the_store_and_healthz_does_not(
    client: TestClient, platform: Platform, database_url: str
) -> None:
    """The mistake: only a liveness probe, so a load balancer kept sending traffic to a replica
    whose database was gone; readiness must fail then, saying no more than which part."""
    assert client.get("/api/readyz").json() == {"status": "ready"}
    if not database_url.startswith("sqlite"):
        pytest.skip("the outage is made by taking the SQLite file away (PostgreSQL: test_limits)")
    platform.db.dispose()
    shutil.rmtree(Path(database_url.split("///", 1)[1]).parent)
    r = client.get("/api/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "reason": "store"}
    assert client.get("/api/healthz").status_code == 200


def _lost(kind: type[DBAPIError], *, invalidated: bool = False) -> DBAPIError:
    # what SQLAlchemy raises when psycopg loses the server mid-statement
    orig = psycopg.OperationalError("consuming input failed: server closed the connection")
    return kind("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (_lost(OperationalError), 503),
        (_lost(InterfaceError), 503),
        (_lost(DatabaseError, invalidated=True), 503),  # SQLAlchemy saw a disconnect
        (_lost(DBAPIError, invalidated=True), 503),
        (_lost(ProgrammingError), 500),  # a bad statement is our bug, not an outage
    ],
    ids=["operational", "interface", "database-invalidated", "dbapi-invalidated", "programming"],
)
def test_every_lost_connection_is_503_and_a_bad_statement_500(
    error: DBAPIError, status: int
) -> None:
    """The mistake: only ``OperationalError`` was mapped, so a connection that PostgreSQL's
    driver reported as another class (or that SQLAlchemy invalidated) answered 500, as if the
    platform were broken rather than its database briefly away."""
    app = FastAPI()
    install(app)

    @app.get("/fail")
    def fail() -> None:
        raise error

    r = TestClient(app, raise_server_exceptions=False).get("/fail")
    assert r.status_code == status, r.text
    assert r.json()["code"] == ("unavailable" if status == 503 else "internal_error")
    assert ("retry-after" in r.headers) == (status == 503)
