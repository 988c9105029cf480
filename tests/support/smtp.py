"""A real SMTP server for tests: aiosmtpd in its own thread, on a free port of 127.0.0.1.

``SmtpServer(security=...)`` speaks plain SMTP (``"none"``), STARTTLS (``"starttls"``, required
before MAIL and before AUTH) or implicit TLS (``"tls"``), with a certificate for ``localhost``
and ``127.0.0.1`` signed by a throwaway CA (``TestCertificates``, made with ``cryptography``);
``server.ca_pem`` is what a client must trust. With ``users`` it offers AUTH (PLAIN or LOGIN)
and checks the password; with STARTTLS it also requires a login before MAIL.

Everything it accepts lands in ``server.received`` (``ReceivedMail``: the envelope, the parsed
message, whether TLS was on, who logged in). To test failure paths it can refuse a recipient
(``refuse_recipient``) or reject the next N ``RCPT``/``DATA`` commands with any reply
(``reject_next``, e.g. ``451`` to test a retry, ``550`` to test a permanent failure), then
accept again.

``server.channel_config()`` is the Gaia email channel config that points at it.
"""

from __future__ import annotations

import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.kube import free_port, make_ca, sign_leaf

Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class TestCertificates:
    """A CA and a server certificate it signed, all PEM."""

    __test__ = False  # not a pytest test class, despite the name

    ca_pem: str
    cert_pem: str
    key_pem: str

    @classmethod
    def make(
        cls, *, dns_names: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
    ) -> TestCertificates:
        ca, ca_key = make_ca("gaia-test-smtp-ca")
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert, key = sign_leaf(
            ca,
            ca_key,
            cn=dns_names[0],
            org=None,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
        )
        return cls(
            ca_pem=ca.public_bytes(serialization.Encoding.PEM).decode(),
            cert_pem=cert.decode(),
            key_pem=key.decode(),
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # load_cert_chain reads files only.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_text(self.cert_pem)
            key.write_text(self.key_pem)
            context.load_cert_chain(cert, key)
        return context


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    message: EmailMessage
    tls: bool
    login: str | None  # the user that authenticated, if any


@dataclass
class _Rejection:
    reply: str
    remaining: int


@dataclass
class _State:
    lock: threading.Condition = field(default_factory=threading.Condition)
    received: list[ReceivedMail] = field(default_factory=list)
    rejections: dict[str, list[_Rejection]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # command -> times seen

    def verdict(self, stage: str) -> str | None:
        with self.lock:
            self.attempts[stage] = self.attempts.get(stage, 0) + 1
            queue = self.rejections.get(stage, [])
            while queue and queue[0].remaining <= 0:
                queue.pop(0)
            if not queue:
                return None
            queue[0].remaining -= 1
            return queue[0].reply


class _Handler:
    def __init__(self, state: _State, *, implicit_tls: bool) -> None:
        self.state = state
        self.implicit_tls = implicit_tls

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.state.verdict("RCPT")
        if reply is not None:
            return reply
        with self.state.lock:
            refused = self.state.refused.get(address.lower())
        if refused is not None:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self.state.verdict("DATA")
        if reply is not None:
            return reply
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            content=content,
            message=parsed,
            tls=self.implicit_tls or session.ssl is not None,
            login=login,
        )
        with self.state.lock:
            self.state.received.append(mail)
            self.state.lock.notify_all()
        return f"250 2.0.0 Ok: queued as {uuid.uuid4().hex[:10].upper()}"


class SmtpServer:
    """See the module docstring. Use as a context manager, or ``start()``/``stop()``."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        security: Security = "none",
        users: Mapping[str, str] | None = None,
        certificates: TestCertificates | None = None,
    ) -> None:
        self.security = security
        self.users = dict(users or {})
        self.certificates = certificates or (
            TestCertificates.make() if security != "none" else None
        )
        self.port = free_port()
        self._state = _State()
        self._controller: Controller | None = None

    # ----------------------------------------------------------------------- behaviour

    def reject_next(self, stage: Literal["RCPT", "DATA"], reply: str, *, times: int = 1) -> None:
        """Answer the next ``times`` ``stage`` commands with ``reply`` (``"451 4.7.1 Try
        again later"``), then accept again."""
        with self._state.lock:
            self._state.rejections.setdefault(stage, []).append(_Rejection(reply, times))

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        with self._state.lock:
            self._state.refused[address.lower()] = reply

    @property
    def received(self) -> list[ReceivedMail]:
        with self._state.lock:
            return list(self._state.received)

    def attempts(self, stage: Literal["RCPT", "DATA"]) -> int:
        with self._state.lock:
            return self._state.attempts.get(stage, 0)

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[ReceivedMail]:
        """The received mail once there are at least ``count``; AssertionError after timeout."""
        with self._state.lock:
            if not self._state.lock.wait_for(
                lambda: len(self._state.received) >= count, timeout=timeout
            ):
                raise AssertionError(
                    f"expected {count} mails, got {len(self._state.received)} in {timeout} s"
                )
            return list(self._state.received)

    @property
    def ca_pem(self) -> str | None:
        return self.certificates.ca_pem if self.certificates else None

    def channel_config(self, **overrides: Any) -> dict[str, Any]:
        """A Gaia email channel config for this server (trusting its CA)."""
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "sender": "Gaia Alerts <alerts@gaia.example.com>",
            "timeout": 5,
        }
        if self.ca_pem:
            config["ca_pem"] = self.ca_pem
        if self.users:
            username, password = next(iter(self.users.items()))
            config.update(username=username, password=password)
        config.update(overrides)
        return config

    # ----------------------------------------------------------------------- lifecycle

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.users.get(login) == password
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def start(self) -> SmtpServer:
        kwargs: dict[str, Any] = {}
        if self.security == "starttls":
            assert self.certificates is not None
            kwargs.update(tls_context=self.certificates.server_context(), require_starttls=True)
        if self.users:
            # aiosmtpd only knows STARTTLS as TLS: over implicit TLS (or plain SMTP) AUTH must
            # not wait for a STARTTLS that never comes, and then aiosmtpd will not *require*
            # AUTH without warning; it still checks the password of whoever logs in.
            starttls = self.security == "starttls"
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=starttls,
                auth_require_tls=starttls,
            )
        self._controller = Controller(
            _Handler(self._state, implicit_tls=self.security == "tls"),
            hostname=self.host,
            port=self.port,
            ssl_context=(
                self.certificates.server_context()
                if self.security == "tls" and self.certificates
                else None
            ),
            server_hostname="smtp.test.local",
            **kwargs,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
