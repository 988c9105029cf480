"""A token service for Debian's docker-registry: the distribution token flow, for real.

Real registries (Docker Hub, GHCR, Harbor, Quay) answer an unauthenticated read with ``401`` and
``WWW-Authenticate: Bearer realm=…,service=…,scope=repository:<name>:pull``; the client gets a
token from the realm (with its credentials as Basic, or none) and repeats the read with
``Authorization: Bearer <token>``. ``TokenService`` is that realm: a JWT signed with ES256 by a
self-signed certificate that the registry trusts (``rootcertbundle``), carried in the token's
``x5c`` header, as docker/distribution's ``registry/auth/token`` verifies it.

- Right credentials: a token granting the actions asked for.
- No credentials: a token granting nothing (the registry then answers 401 with
  ``error="insufficient_scope"``, as Docker Hub does for a private repository).
- Wrong credentials: 401 from the token service itself.

``issued`` counts the tokens handed out, so a test can see that a client caches them per scope.
``BearerAuth`` is the flow for the tests' own pushes (httpx).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "gaia-test-registry"
ISSUER = "gaia-test-token-service"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    work: Path
    users: dict[str, str] = field(default_factory=dict)
    issued: int = 0
    refused: int = 0
    url: str = ""
    _server: ThreadingHTTPServer | None = None
    _key: ec.EllipticCurvePrivateKey | None = None
    _cert_der: bytes = b""

    def start(self) -> TokenService:
        self.work.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = service._answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def bundle(self) -> Path:
        return self.work / "token-ca.pem"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def registry_auth(self) -> dict[str, object]:
        """The ``auth:`` section of the registry's configuration."""
        return {
            "token": {
                "realm": self.realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(self.bundle),
            }
        }

    def _answer(self, path: str, authorization: str) -> tuple[int, dict[str, object]]:
        query = parse_qs(urlparse(path).query)
        subject = ""
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(user) != password:
                self.refused += 1
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            subject = user
        access: list[dict[str, object]] = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name and subject:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.issued += 1
        return 200, {"token": self._sign(subject, access), "expires_in": 300}

    def _sign(self, subject: str, access: list[dict[str, object]]) -> str:
        assert self._key is not None
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"


class BearerAuth(httpx.Auth):
    """The token flow for httpx (the tests' pushes): on a Bearer challenge, a token from its
    realm with Basic credentials, then the request again."""

    def __init__(self, username: str, password: str) -> None:
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or not challenge.lower().startswith("bearer "):
            return
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        scope = params.get("scope", "")
        if scope not in self.tokens:
            answer = yield httpx.Request(
                "GET",
                params["realm"],
                params={"service": params.get("service", ""), "scope": scope},
                headers={"Authorization": self.basic},
            )
            answer.read()
            self.tokens[scope] = answer.json()["token"]
        request.headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        yield request
