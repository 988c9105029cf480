"""Users and roles (gaia/console/pages/users.py): platform admins only; a made-up password is
shown once; roles per business are granted and revoked."""

from __future__ import annotations

import re

from tests.conftest import World
from tests.console.test_clusters import as_user, html, post


def test_only_platform_admins_see_and_reach_users(world: World) -> None:
    page = html(world, "platform-admin", "/console")
    assert 'href="/console/users"' in page
    for who in ("developer", "business-admin", "viewer"):
        assert 'href="/console/users"' not in html(world, who, "/console")
        html(world, who, "/console/users", status=403)
        refused = as_user(world, who).get("/console/users/viewer")
        assert refused.status_code in (403, 404)  # another user's account does not exist for them
        r = post(world, who, "/console/users", {"username": "mallory", "password": "pw-123456789"})
        assert r.status_code == 403
        # the role form is for platform admins; a business admin grants roles on the business pages
        r = post(
            world, who, "/console/users/viewer/roles", {"business": "beta", "role": "developer"}
        )
        assert r.status_code in (403, 404)


def test_an_admin_creates_a_user_whose_password_is_shown_once(world: World) -> None:
    page = html(world, "platform-admin", "/console/users")
    assert ">dev</a>" in page and ">viewer</a>" in page
    r = post(
        world, "platform-admin", "/console/users", {"username": "erin", "display_name": "Erin"}
    )
    assert r.status_code == 201, r.text[:2000]
    found = re.search(r'data-copy="([^"]{12,})"', r.text)
    assert found is not None and "shown only this once" in r.text
    password = found.group(1)
    login = world.client.post("/api/v1/auth/login", json={"username": "erin", "password": password})
    assert login.status_code == 200
    for url in ("/console/users", "/console/users/erin"):
        assert password not in html(world, "platform-admin", url)
    # a reset with a typed password does not echo it
    r = post(
        world, "platform-admin", "/console/users/erin/password", {"password": "typed-password-42"}
    )
    assert r.status_code == 200 and "typed-password-42" not in r.text


def test_the_create_form_shows_errors_on_its_fields(world: World) -> None:
    r = post(world, "platform-admin", "/console/users", {"username": "Bad Name!", "password": "x"})
    assert r.status_code == 422
    assert 'id="err-username"' in r.text and 'value="Bad Name!"' in r.text


def test_disable_enable_and_roles_per_business(world: World) -> None:
    r = post(world, "platform-admin", "/console/users/viewer/disable", {})
    assert r.status_code == 303
    assert "disabled" in html(world, "platform-admin", "/console/users/viewer")
    r = post(world, "platform-admin", "/console/users/viewer/enable", {})
    assert r.status_code == 303
    r = post(world, "platform-admin", "/console/users/viewer/roles", {"business": "", "role": "x"})
    assert r.status_code == 422 and 'id="err-business"' in r.text and 'id="err-role"' in r.text
    r = post(
        world,
        "platform-admin",
        "/console/users/viewer/roles",
        {"business": "beta", "role": "developer"},
    )
    assert r.status_code == 303, r.text[:2000]
    page = html(world, "platform-admin", "/console/users/viewer")
    assert '<th scope="row">beta</th><td>developer</td>' in page
    assert '<th scope="row">alpha</th><td>viewer</td>' in page
    r = post(world, "platform-admin", "/console/users/viewer/roles/beta/revoke", {})
    assert r.status_code == 303
    assert '<th scope="row">beta</th>' not in html(world, "platform-admin", "/console/users/viewer")


def test_the_users_pages_speak_chinese(world: World) -> None:
    r = world.client.patch("/api/v1/users/admin", json={"language": "zh-CN"}, headers=world.admin)
    assert r.status_code == 200
    page = html(world, "platform-admin", "/console/users/viewer")
    assert "重置密码" in page and "授予角色" in page and "角色" in page
