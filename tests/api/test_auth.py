"""Login, sessions, API tokens, the console cookie, and account changes."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from gaia.platform import Platform
from gaia.store.models import Token, User
from tests.conftest import ADMIN_PASSWORD, login


def test_login_returns_a_bearer_token_and_wrong_password_is_refused(client: TestClient) -> None:
    r = client.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token"].startswith("gaia_") and body["user"]["platform_admin"] is True
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["username"] == "admin"
    bad = client.post("/api/v1/auth/login", json={"username": "admin", "password": "nope"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthenticated"
    unknown = client.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope"})
    assert unknown.json()["message"] == bad.json()["message"]


def test_passwords_are_argon2_hashes_and_tokens_are_stored_hashed(
    client: TestClient, platform: Platform
) -> None:
    token = login(client, "admin", ADMIN_PASSWORD)["Authorization"].split()[1]
    with platform.db.read_session() as s:
        user = s.scalars(select(User)).one()
        digests = s.scalars(select(Token.digest)).all()
    assert user.password_hash.startswith("$argon2id$")
    assert token not in digests and all(len(d) == 64 for d in digests)


def test_logout_revokes_the_session(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post("/api/v1/auth/logout", headers=admin).status_code == 204
    r = client.get("/api/v1/users/me", headers=admin)
    assert r.status_code == 401 and "revoked" in r.json()["message"]


def test_expired_session_is_refused(
    client: TestClient, admin: dict[str, str], platform: Platform
) -> None:
    with platform.db.write_session() as s:
        s.execute(update(Token).values(expires_at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    r = client.get("/api/v1/users/me", headers=admin)
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_api_token_is_shown_once_works_and_can_be_revoked(
    client: TestClient, admin: dict[str, str]
) -> None:
    created = client.post("/api/v1/tokens", json={"name": "ci-bot"}, headers=admin).json()
    auth = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/businesses", headers=auth).status_code == 200
    listed = client.get("/api/v1/tokens", headers=admin).json()["items"]
    assert [t["name"] for t in listed] == ["ci-bot"] and "token" not in listed[0]
    dup = client.post("/api/v1/tokens", json={"name": "ci-bot"}, headers=admin)
    assert dup.status_code == 409
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/businesses", headers=auth).status_code == 401


def test_malformed_authorization_header_is_a_clear_401(client: TestClient) -> None:
    r = client.get("/api/v1/businesses", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["message"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_disabling_a_user_ends_their_sessions(
    client: TestClient, admin: dict[str, str], make_user
) -> None:
    bob = make_user("bob")
    r = client.patch("/api/v1/users/bob", json={"disabled": True}, headers=admin)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert client.get("/api/v1/users/me", headers=bob).status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "bob", "password": "bob-password"})
    assert r.status_code == 401


def test_changing_own_password_needs_the_current_one(client: TestClient, make_user) -> None:
    carol = make_user("carol")
    r = client.patch("/api/v1/users/carol", json={"password": "new-password-1"}, headers=carol)
    assert r.status_code == 422 and "current_password" in r.json()["message"]
    r = client.patch(
        "/api/v1/users/carol",
        json={"password": "new-password-1", "current_password": "carol-password"},
        headers=carol,
    )
    assert r.status_code == 200
    login(client, "carol", "new-password-1")


def test_admin_cannot_demote_themselves(client: TestClient, admin: dict[str, str]) -> None:
    r = client.patch("/api/v1/users/admin", json={"platform_admin": False}, headers=admin)
    assert r.status_code == 403


def test_repeated_failures_are_throttled(client: TestClient, make_user) -> None:
    make_user("dave")
    codes = [
        client.post(
            "/api/v1/auth/login", json={"username": "dave", "password": "wrong"}
        ).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    # Even the right password waits out the window.
    r = client.post("/api/v1/auth/login", json={"username": "dave", "password": "dave-password"})
    assert r.status_code == 429


def test_console_login_sets_an_httponly_strict_cookie(client: TestClient) -> None:
    r = client.post(
        "/console/login",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "gaia_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" in cookie  # localhost counts as a secure context for browsers
    page = client.get("/console")
    assert page.status_code == 200 and "Overview" in page.text
    # The cookie authenticates the API too.
    assert client.get("/api/v1/users/me").json()["username"] == "admin"
    wrong = client.post("/console/login", data={"username": "admin", "password": "x"})
    assert wrong.status_code == 401 and "wrong username or password" in wrong.text
