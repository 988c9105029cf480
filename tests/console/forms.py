"""Driving console pages with TestClient: log in through the form, post a form."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_plus

from fastapi.testclient import TestClient

from gaia.console.browser_guard import CSRF_HEADER, csrf_token
from tests.conftest import ADMIN_PASSWORD


def log_in(client: TestClient, username: str) -> str:
    """Log in through ``/console/login`` (users of the ``world`` fixture); returns the session
    token the cookie carries."""
    client.cookies.clear()
    password = ADMIN_PASSWORD if username == "admin" else f"{username}-password"
    r = client.post(
        "/console/login",
        data={"username": username, "password": password, "next": "/console"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    token = str(client.cookies.get("gaia_session"))
    send_form_token(client, token)
    return token


def send_form_token(client: TestClient, session_token: str) -> None:
    """Send the session's console form token with every request of ``client`` (the header a
    script would send; the pages' forms carry it as a hidden field, which the browser tests and
    ``tests/security/test_console_csrf.py`` post)."""
    client.headers[CSRF_HEADER] = csrf_token(session_token)


def post(client: TestClient, url: str, data: Mapping[str, object]) -> str:
    """Post a console form; returns the redirect target, its flash message decoded."""
    r = client.post(url, data=data, follow_redirects=False)
    assert r.status_code == 303, (r.status_code, r.text[:2000])
    return unquote_plus(str(r.headers["location"]))
