"""Issue 15, the console against other sites (``gaia.console.browser_guard``).

Each test reproduces one attack a page on another site could make with a logged-in user's
browser (which sends the session cookie with whatever that page makes it send), or one mistake
that would let it through, and checks that the console or the API refuses it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from gaia.app import create_app
from gaia.console.browser_guard import CSRF_FIELD, csrf_token
from gaia.platform import Platform
from tests.conftest import ADMIN_PASSWORD, World

TEMPLATES = Path(__file__).resolve().parents[2] / "gaia" / "console" / "templates"
FORM_TOKEN = re.compile(r'<input type="hidden" name="csrf_token" value="([0-9a-f]{64})">')


def console_login(client: TestClient, username: str = "admin", password: str = "") -> str:
    """Log in through the console's form, as a browser does; the session token of the cookie.
    (Unlike ``tests.console.forms.log_in`` this sends no form token header: the tests here
    post exactly what a page would.)"""
    client.cookies.clear()
    client.headers.pop("X-CSRF-Token", None)
    r = client.post(
        "/console/login",
        data={"username": username, "password": password or ADMIN_PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return str(client.cookies.get("gaia_session"))


def business_exists(client: TestClient, name: str, admin: dict[str, str]) -> bool:
    return client.get(f"/api/v1/businesses/{name}", headers=admin).status_code == 200


def test_a_forged_form_without_the_token_changes_nothing(world: World) -> None:
    """The classic CSRF: another site's page auto-submits ``<form action=".../businesses">``;
    the browser adds the session cookie, but the page cannot know the session's form token."""
    console_login(world.client)
    r = world.client.post("/console/businesses", data={"name": "forged"}, follow_redirects=False)
    assert r.status_code == 403, r.text[:500]
    assert "security token" in r.text and "Nothing was changed" in r.text
    assert not business_exists(world.client, "forged", world.admin)


def test_a_token_of_another_session_is_refused(world: World) -> None:
    """An attacker with an account of their own knows *their* token; it must not work in the
    victim's session (the token is bound to the session, not global)."""
    attackers = csrf_token(console_login(world.client, "viewer", "viewer-password"))
    console_login(world.client)
    r = world.client.post(
        "/console/businesses",
        data={"name": "forged", CSRF_FIELD: attackers},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "not this session" in r.text
    assert not business_exists(world.client, "forged", world.admin)


def test_the_pages_own_form_carries_the_token_and_is_accepted(world: World) -> None:
    """The token the page writes into its form is the one the console accepts."""
    session = console_login(world.client)
    page = world.client.get("/console/businesses").text
    tokens = set(FORM_TOKEN.findall(page))
    assert tokens == {csrf_token(session)}, tokens  # every form of the page, the same token
    r = world.client.post(
        "/console/businesses",
        data={"name": "genuine", CSRF_FIELD: tokens.pop()},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[:500]
    assert business_exists(world.client, "genuine", world.admin)


def test_every_posting_form_of_every_template_carries_the_token() -> None:
    """A new form written without the token would be refused for every user, or, if someone
    then loosened the check, open to forgery: every ``<form method="post">`` writes it."""
    missing = []
    for path in sorted(TEMPLATES.glob("*.html")):
        for form in re.findall(r'<form method="post"[^>]*>(.{0,20})', path.read_text()):
            if not form.startswith("{{ csrf_input }}"):
                missing.append(path.name)
    forms = sum(p.read_text().count('<form method="post"') for p in TEMPLATES.glob("*.html"))
    assert forms > 20 and missing == []


def test_a_login_posted_from_another_site_is_refused(client: TestClient) -> None:
    """Login CSRF: another site logs the victim's browser into the attacker's account (whatever
    the victim then types lands with the attacker). There is no session to bind a token to, so
    the browser's own word on where the request came from decides."""
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = client.post(
            "/console/login",
            data={"username": "admin", "password": ADMIN_PASSWORD},
            headers=headers,
            follow_redirects=False,
        )
        assert r.status_code == 403, (headers, r.status_code)
        assert "another site" in r.text and "gaia_session" not in r.headers.get("set-cookie", "")
    same = client.post(
        "/console/login",
        data={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"Origin": "https://localhost", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_the_api_refuses_a_change_made_with_the_session_cookie(world: World) -> None:
    """The same forgery against the JSON API: a cross-site ``fetch(..., {credentials:
    "include"})`` or form carries the cookie; a change needs the bearer token, which the
    console's pages send server-side and no other site has. Reads by cookie still work (the
    logs page's EventSource)."""
    console_login(world.client)
    r = world.client.post("/api/v1/businesses", json={"name": "forged"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden" and "reads only" in r.json()["message"]
    assert world.client.delete("/api/v1/businesses/alpha").status_code == 403
    assert business_exists(world.client, "alpha", world.admin)
    assert not business_exists(world.client, "forged", world.admin)
    assert world.client.get("/api/v1/users/me").json()["username"] == "admin"
    ok = world.client.post("/api/v1/businesses", json={"name": "real"}, headers=world.admin)
    assert ok.status_code == 201  # a bearer-token client is unaffected


def test_the_cookie_is_secure_behind_a_trusted_proxy_only(platform: Platform) -> None:
    """Behind a TLS-terminating proxy Gaia sees plain http: without believing the proxy's
    ``X-Forwarded-Proto`` the session cookie would go out without ``Secure`` (and a browser
    would send it over plain http). Believing the header from anyone would let any client
    decide; only ``GAIA_TRUSTED_PROXIES`` are believed."""
    platform.settings.trusted_proxies = "10.0.0.0/8"
    app = create_app(platform, run_loops=False)

    def cookie(peer: str) -> str:
        with TestClient(app, base_url="http://gaia.example", client=(peer, 40000)) as c:
            r = c.post(
                "/console/login",
                data={"username": "admin", "password": ADMIN_PASSWORD},
                headers={"X-Forwarded-Proto": "https"},
                follow_redirects=False,
            )
            assert r.status_code == 303, r.text
            return r.headers["set-cookie"]

    behind_proxy = cookie("10.1.2.3")
    assert "HttpOnly" in behind_proxy and "SameSite=strict" in behind_proxy
    assert "Secure" in behind_proxy
    assert "Secure" not in cookie("192.0.2.7")  # not a trusted proxy: its header is ignored


def test_answers_carry_the_security_headers(client: TestClient) -> None:
    """Clickjacking (our page in another site's frame), MIME sniffing, the URL leaking in
    Referer, and injected inline script: the headers that stop them, on console and API."""
    page = client.get("/console/login")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src and "unsafe-inline" not in script_src.group(1)
    assert "unsafe-eval" not in csp
    for r in (page, client.get("/api/healthz"), client.get("/api/v1/users/me")):
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
    assert (
        client.get("/api/healthz")
        .headers["content-security-policy"]
        .startswith("default-src 'none'")
    )
    # no inline script in any template (the CSP would block it)
    for path in TEMPLATES.glob("*.html"):
        for attrs in re.findall(r"<script([^>]*)>", path.read_text()):
            assert "src=" in attrs, path.name
