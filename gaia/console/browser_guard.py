"""What the console asks of the browser so that other sites cannot act through it.

A logged-in user's browser holds the session cookie; any page on the web can make that browser
post a form to us (cross-site request forgery) or frame our pages (clickjacking). Three layers:

**A CSRF token in every form.** ``csrf_token(session)`` is HMAC-SHA256 keyed by the session
token itself. The session token lives only in an HttpOnly cookie, so another site can neither
read it nor compute the HMAC of it; the value is tied to one session (a new login, a new token),
needs no server-side table and no server key, so it survives restarts and works across
processes. ``render`` puts it in every page (``csrf_input``, a hidden ``csrf_token`` field) and
``require_csrf``, a dependency on every console router, checks it on every POST (form field, or
the ``X-CSRF-Token`` header for scripts) with ``secrets.compare_digest``. We write these lines
rather than take a library: the well-known ones (starlette-csrf, asgi-csrf) are double-submit
cookies a script must copy into a header, or keep a second cookie of their own, while every
console action is a plain HTML form that must work without JavaScript and we already have a
secret bound to the session. A POST with a session and without the right token is refused with
403 and a page that says to reload; one without a session has nothing to forge (the route asks
for a login), apart from the login form itself, which the origin check below covers.

**The request must come from our own pages.** Browsers say where a request comes from
(``Sec-Fetch-Site``, else ``Origin``); a console POST from another site is refused even before
the token (that is what protects the login form, which has no session to bind a token to).

**Cookies and headers.** The session cookie is HttpOnly, SameSite=Strict, and Secure when the
request came over TLS: directly, or through a proxy in ``GAIA_TRUSTED_PROXIES`` that says so in
``X-Forwarded-Proto`` (from anyone else that header is ignored: a client could claim anything).
``SecurityHeaders`` adds to every answer ``X-Content-Type-Options: nosniff``,
``X-Frame-Options: DENY`` and ``Referrer-Policy: same-origin``, and a Content-Security-Policy:
for the console, scripts and connections from this origin only, no inline script, no framing;
for the API, nothing at all may load (it answers JSON). The interactive API docs (``/api/docs``,
Swagger UI from a CDN) keep their own.

The JSON API's side of the rule is in ``gaia.api.deps``: the session cookie is accepted for
reads only (the logs page's ``EventSource``); a change needs ``Authorization: Bearer``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from functools import cache
from typing import NoReturn
from urllib.parse import urlsplit

from fastapi import Request
from markupsafe import Markup
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gaia.api.deps import SESSION_COOKIE, audit

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "CsrfRefused",
    "SecurityHeaders",
    "csrf_input",
    "csrf_token",
    "request_is_https",
    "require_csrf",
]

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_CSRF_PURPOSE = b"gaia console form v1"
# login has no session to bind a token to: the origin check alone guards it
_NO_SESSION_FORMS = frozenset({"/console/login"})

# Scripts only from this origin, never inline. Styles may be inline: xterm.js draws the terminal
# with <style> elements it creates, htmx adds its indicator style, the usage bars are style
# attributes, and with htmx's boosted navigation the first page's policy stays in force for every
# page after it, so a looser policy for the terminal page alone would not hold. Inline CSS cannot
# run code.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
_OWN_CSP_PATHS = ("/api/docs",)  # Swagger UI: a CDN's script and an inline one


class CsrfRefused(Exception):
    """A console POST that did not come from one of this session's own pages."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def csrf_token(session_token: str) -> str:
    """The form token of one session: HMAC-SHA256 keyed by the session token."""
    return hmac.new(session_token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def csrf_input(session_token: str | None) -> Markup:
    """The hidden field every posting form carries ("" before a login)."""
    if not session_token:
        return Markup("")
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        CSRF_FIELD, csrf_token(session_token)
    )


def _from_elsewhere(request: Request) -> str:
    """Why the browser says this request came from another site ("" if it does not)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        # "none": typed or bookmarked; "same-site" is a sibling subdomain, still not our page
        return "" if fetch_site in ("same-origin", "none") else f"Sec-Fetch-Site: {fetch_site}"
    origin = request.headers.get("origin")
    if origin is None:
        return ""  # not a browser that says (curl, tests); the token still decides
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        return f"Origin: {origin}"
    return ""


async def require_csrf(connection: HTTPConnection) -> None:
    """Every console POST: from our own pages, and carrying this session's form token.
    (``HTTPConnection``: the routers also hold the terminal's WebSocket, which checks its own
    ``Origin``.)"""
    if not isinstance(connection, Request) or connection.method != "POST":
        return
    request = connection
    elsewhere = _from_elsewhere(request)
    if elsewhere:
        _refuse(request, f"this form was sent from another site ({elsewhere})")
    session = request.cookies.get(SESSION_COOKIE)
    if not session or request.url.path in _NO_SESSION_FORMS:
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        field = (await request.form()).get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if not sent:
        _refuse(request, "this form has no security token")
    if not secrets.compare_digest(sent.encode(), csrf_token(session).encode()):
        _refuse(request, "this form's security token is not this session's")


def _refuse(request: Request, message: str) -> NoReturn:
    ctx = audit(request, action="console.form.refused")
    ctx.error = message
    raise CsrfRefused(message)


# ---------------------------------------------------------------- TLS and trusted proxies


@cache
def _networks(cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(item, strict=False)
        for item in filter(None, (part.strip() for part in cidrs.split(",")))
    )


def is_trusted_proxy(peer: str | None, cidrs: str) -> bool:
    """Whether the TCP peer is one of ``GAIA_TRUSTED_PROXIES`` (comma-separated CIDRs)."""
    if not peer or not cidrs:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in _networks(cidrs))


def request_is_https(connection: HTTPConnection) -> bool:
    """Whether the browser reached us over TLS: our own TLS, or a trusted proxy's
    ``X-Forwarded-Proto: https`` (the first hop it names; anyone else's header is ignored)."""
    if connection.url.scheme in ("https", "wss"):
        return True
    peer = connection.client.host if connection.client else None
    trusted: str = connection.app.state.platform.settings.trusted_proxies
    if not is_trusted_proxy(peer, trusted):
        return False
    proto = connection.headers.get("x-forwarded-proto", "")
    return proto.split(",")[0].strip().lower() == "https"


# ---------------------------------------------------------------- headers on every answer


class SecurityHeaders:
    """Pure ASGI (so streamed answers, the logs' Server-Sent Events, pass untouched): adds the
    headers above to every HTTP answer that has not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(_OWN_CSP_PATHS):
            csp = ""
        elif path == "/" or path.startswith("/console"):
            csp = CONSOLE_CSP
        else:
            csp = API_CSP

        async def relay(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in (
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                    (b"content-security-policy", csp.encode()),
                ):
                    if value and name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, relay)
