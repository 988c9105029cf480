"""A git server over HTTPS with Basic authentication: git's own ``git http-backend`` (the smart
HTTP protocol) behind a small threaded Python server, with a certificate from a test CA.

``GitHttpsServer(root, users).start()`` serves every repository under ``root`` at
``https://127.0.0.1:<port>/<name>``; a request without the right login gets a 401 with a Basic
challenge, which is what makes git ask its ``GIT_ASKPASS`` for credentials. ``ca_file`` is the
CA certificate a client must trust. ``requests`` counts the requests and ``authorized`` those
that carried the right login.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from tests.support.kube import _pem_cert, make_ca, sign_leaf

BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass
class GitHttpsServer:
    root: Path
    users: dict[str, str]
    work: Path
    url: str = ""
    names: tuple[str, ...] = ()  # DNS names the certificate holds too (beside 127.0.0.1)
    ca_file: Path = field(init=False)
    requests: int = 0
    authorized: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> GitHttpsServer:
        self.work.mkdir(parents=True, exist_ok=True)
        ca, ca_key = make_ca("gaia-test-git-ca")
        cert, key = sign_leaf(
            ca,
            ca_key,
            cn="127.0.0.1",
            org=None,
            usage=x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                *(x509.DNSName(name) for name in self.names),
            ],
        )
        self.ca_file = self.work / "ca.pem"
        self.ca_file.write_bytes(_pem_cert(ca))
        (self.work / "cert.pem").write_bytes(cert)
        (self.work / "key.pem").write_bytes(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.work / "cert.pem", self.work / "key.pem")

        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def allowed(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user in self.users and hmac.compare_digest(self.users[user], password)


def _handler(server: GitHttpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._backend()

        def do_POST(self) -> None:
            self._backend()

        def _backend(self) -> None:
            server.requests += 1
            if not server.allowed(self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="gaia-test-git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            server.authorized += 1
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": parts.path,
                "QUERY_STRING": parts.query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": "builder",
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            }
            done = subprocess.run([BACKEND], input=body, env=env, capture_output=True, check=False)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status = 200
            headers: list[tuple[str, str]] = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
