"""Your account (gaia/console/pages/account.py): every user changes their own profile and
password and manages their API tokens; a new token is shown once and never again."""

from __future__ import annotations

import re

from tests.conftest import World
from tests.console.test_clusters import html, post


def test_every_role_reaches_its_own_account_from_the_header(world: World) -> None:
    for who in ("viewer", "developer"):
        page = html(world, who, "/console/account")
        assert 'href="/console/account"' in page and "API tokens" in page
        assert "Change password" in page and "Create token" in page


def test_a_token_is_shown_once_and_can_be_revoked(world: World) -> None:
    r = post(world, "developer", "/console/account/tokens", {"name": "ci", "expires_in_days": "30"})
    assert r.status_code == 201, r.text[:2000]
    found = re.search(r'data-copy="([^"]{20,})"', r.text)
    assert found is not None and "shown only this once" in r.text
    token = found.group(1)
    assert (
        world.client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )
    page = html(world, "developer", "/console/account")
    assert token not in page and ">ci</th>" in page
    token_id = re.search(r"/console/account/tokens/(\d+)/revoke", page)
    assert token_id is not None
    r = post(world, "developer", f"/console/account/tokens/{token_id.group(1)}/revoke", {})
    assert r.status_code == 303 and "ok=" in r.headers["location"]
    page = html(world, "developer", "/console/account")
    assert "revoked" in page and "/revoke" not in page
    assert (
        world.client.get(
            "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 401
    )


def test_the_forms_show_errors_on_their_fields(world: World) -> None:
    r = post(
        world,
        "developer",
        "/console/account/tokens",
        {"name": "Not A Name!", "expires_in_days": "x"},
    )
    assert r.status_code == 422 and 'id="err-expires_in_days"' in r.text
    r = post(world, "developer", "/console/account/tokens", {"name": "Not A Name!"})
    assert r.status_code == 422 and 'id="err-name"' in r.text and 'value="Not A Name!"' in r.text
    r = post(
        world,
        "developer",
        "/console/account/password",
        {"current_password": "wrong", "password": "new-password-123", "password_repeat": "other"},
    )
    assert r.status_code == 422 and 'id="err-password_repeat"' in r.text
    assert "new-password-123" not in r.text
    r = post(
        world,
        "developer",
        "/console/account/password",
        {
            "current_password": "wrong",
            "password": "new-password-123",
            "password_repeat": "new-password-123",
        },
    )
    assert r.status_code == 422 and 'id="err-current_password"' in r.text


def test_profile_language_switches_the_pages_to_chinese(world: World) -> None:
    r = post(
        world, "viewer", "/console/account/profile", {"display_name": "Vic", "language": "zh-CN"}
    )
    assert r.status_code == 303, r.text[:2000]
    page = html(world, "viewer", "/console/account")
    assert "你的账户" in page and "API 令牌" in page and "Vic" in page
