"""Issue 15, honesty: the API names what it refuses and why, and accepts what it documents.

- ``gpu_link``: the link vocabulary of ``gaia.domain.gpu_links`` (``SOC`` and ``SYS`` alike).
- Malformed JSON says where and what; a non-JSON body to a JSON endpoint gets 415.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

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
