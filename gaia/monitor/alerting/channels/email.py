"""Email: one message to all recipients through an SMTP server, with ``aiosmtplib``.

One connection per notification: connect (implicit TLS, or STARTTLS, which is then required,
never opportunistic), log in if the config has credentials, send one message whose ``To:``
lists every recipient, quit. Alert mail is rare enough that a pooled connection would only add
state to get wrong.

The idempotency key becomes the ``Message-ID`` (hashed, so the same on every retry; mail
systems drop a second copy with the same id) and the ``X-Gaia-Idempotency-Key`` header.

SMTP replies map onto ``DeliveryError`` by their class: 4xx (greylisting, a full queue, a
temporary auth failure) is retryable, 5xx is permanent. A refused login is permanent, as is any
TLS failure: a certificate that does not verify, or TLS spoken to a plain port, is a
configuration error that retrying cannot fix. Connection errors and timeouts are retryable. When
the server refuses some recipients and accepts others the notification is delivered, and the
receipt names the refused ones (retrying would send the accepted ones a second copy).

The password is never sent without TLS: the config refuses ``security: none`` with one.

The egress guard (``gaia.egress``) decides where the connection may go: the host is resolved
and checked first, and aiosmtplib is handed a socket connected to the checked address, with the
configured host name kept for TLS (SNI and the certificate check) and EHLO logic.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import re
import ssl
from email.message import EmailMessage
from typing import ClassVar, Literal

import aiosmtplib
import pydantic

from gaia.egress import EgressRefused, open_checked_socket
from gaia.monitor.alerting.channels._base import (
    ChannelConfig,
    DeliveryError,
    OutgoingMessage,
    header_safe_key,
    redact,
    shorten,
    ssl_error_in,
    tls_failure,
)

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")


def _parse_address(value: str) -> str | None:
    """The bare address of ``value`` (``"Ops <ops@example.com>"`` or ``ops@example.com``)."""
    _, address = email.utils.parseaddr(value)
    return address if _ADDRESS.fullmatch(address) else None


class EmailConfig(ChannelConfig):
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})
    trimmed_fields: ClassVar[frozenset[str]] = frozenset({"host", "sender", "username"})

    host: str = pydantic.Field(min_length=1, max_length=253)
    port: int | None = pydantic.Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    sender: str
    ca_pem: str | None = None
    verify: bool = True
    timeout: float = pydantic.Field(default=10.0, gt=0, le=300)

    @pydantic.field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if "://" in value or "/" in value:
            raise ValueError("host is a name or an address (smtp.example.com), not a URL")
        if any(c.isspace() for c in value):
            raise ValueError("host must not contain spaces")
        return value

    @pydantic.field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if _parse_address(value) is None:
            raise ValueError(
                f"sender must be an email address (alerts@example.com or "
                f'"Gaia <alerts@example.com>"), got {value!r}'
            )
        return value

    @pydantic.field_validator("username", "password", "ca_pem")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @pydantic.field_validator("ca_pem")
    @classmethod
    def _ca_pem(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ssl.create_default_context(cadata=value)
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"ca_pem is not a PEM certificate ({exc})") from None
        return value

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> EmailConfig:
        if self.port is None:
            self.port = DEFAULT_PORTS[self.security]
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both, or neither")
        if self.password is not None and self.security == "none":
            raise ValueError(
                "refusing to send the SMTP password unencrypted: use security starttls or tls"
            )
        return self


class EmailChannel:
    kind = "email"

    def __init__(self, config: EmailConfig, *, local_hostname: str | None = None) -> None:
        self.config = config
        # The name we give in EHLO; None asks the OS (socket.getfqdn()).
        self._local_hostname = local_hostname

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.config.security == "none":
            return None
        # With ca_pem, only that CA is trusted: a private server's CA, not the public ones.
        context = ssl.create_default_context(cadata=self.config.ca_pem)
        if not self.config.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def compose(self, message: OutgoingMessage, recipients: list[str]) -> EmailMessage:
        sender_address = _parse_address(self.config.sender) or self.config.sender
        domain = sender_address.rpartition("@")[2] or "gaia"
        key_digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
        mail = EmailMessage()
        mail["From"] = self.config.sender
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = " ".join(message.subject.split()) or message.notice.alert_name
        mail["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
        mail["Message-ID"] = f"<gaia.{key_digest}@{domain}>"
        mail["X-Gaia-Idempotency-Key"] = header_safe_key(message.idempotency_key)
        mail["X-Gaia-Alert-Status"] = message.notice.status
        mail.set_content(message.body)
        return mail

    async def send(self, message: OutgoingMessage) -> str:
        config = self.config
        recipients: list[str] = []
        invalid: list[str] = []
        for raw in message.recipients:
            address = _parse_address(raw)
            if address is None:
                invalid.append(raw)
            elif address not in recipients:
                recipients.append(address)
        if not recipients:
            what = f" (invalid: {', '.join(invalid)})" if invalid else ""
            raise DeliveryError(f"no valid email recipients{what}", retryable=False)

        sender = _parse_address(config.sender) or config.sender
        mail = self.compose(message, recipients)
        port = config.port or DEFAULT_PORTS[config.security]
        where = f"SMTP server {config.host}:{port}"
        try:
            sock = await open_checked_socket(config.host, port, timeout=config.timeout)
        except EgressRefused as exc:
            raise DeliveryError(str(exc), retryable=False) from None
        except TimeoutError:
            raise DeliveryError(f"{where} timed out", retryable=True) from None
        except OSError as exc:
            detail = redact(shorten(str(exc) or type(exc).__name__), config.secrets())
            raise DeliveryError(f"cannot reach {where}: {detail}", retryable=True) from None
        # The socket goes to the checked address; hostname stays the name, for TLS.
        smtp = aiosmtplib.SMTP(
            hostname=config.host,
            sock=sock,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context(),
            timeout=config.timeout,
            username=config.username,
            password=config.password,
            local_hostname=self._local_hostname,
        )
        try:
            # Each SMTP step has its own timeout; this bounds a server that answers slowly at
            # every step.
            async with asyncio.timeout(config.timeout * 4):
                await smtp.connect()
                refused, reply = await smtp.send_message(mail, sender=sender, recipients=recipients)
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:  # OSError: TLS, timeouts
            raise self._failure(exc, where=where) from None
        finally:
            await self._close(smtp)
            sock.close()

        receipt = f"250 {shorten(reply, 120)}"
        if refused or invalid:
            notes = [f"{addr}: {r.code} {shorten(r.message, 80)}" for addr, r in refused.items()]
            notes += [f"{raw}: not an email address" for raw in invalid]
            accepted = len(recipients) - len(refused)
            total = len(recipients) + len(invalid)
            receipt += f" ({accepted} of {total} recipients; refused {'; '.join(notes)})"
        return redact(shorten(receipt, 1000), config.secrets())

    async def _close(self, smtp: aiosmtplib.SMTP) -> None:
        if not smtp.is_connected:
            return
        try:
            await asyncio.wait_for(smtp.quit(), timeout=self.config.timeout)
        except Exception:
            smtp.close()  # the message is sent or failed already; QUIT is a courtesy

    def _failure(self, exc: Exception, *, where: str) -> DeliveryError:
        """The ``DeliveryError`` for what ``aiosmtplib`` (or the TLS layer) raised."""
        secrets = self.config.secrets()

        def said(code: int, text: str) -> str:
            return redact(f"{code} {shorten(text, 160)}", secrets)

        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            temporary = 400 <= exc.code < 500
            return DeliveryError(
                f"{where} refused the login as {self.config.username!r} "
                f"({said(exc.code, exc.message)})"
                + ("" if temporary else "; check the username and password"),
                retryable=temporary,
            )
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            details = "; ".join(f"{r.recipient}: {said(r.code, r.message)}" for r in exc.recipients)
            return DeliveryError(
                f"{where} refused every recipient ({details})",
                retryable=any(400 <= code < 500 for code in codes),
            )
        # 530: "authentication required", the answer to MAIL when the config has no login.
        hint = (
            "; the server wants a login: set username and password"
            if getattr(exc, "code", None) == 530
            else ""
        )
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            return DeliveryError(
                f"{where} refused the sender {exc.sender} ({said(exc.code, exc.message)}){hint}",
                retryable=400 <= exc.code < 500,
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return DeliveryError(
                f"{where} answered {said(exc.code, exc.message)}{hint}",
                retryable=400 <= exc.code < 500,
            )
        tls = ssl_error_in(exc)
        if tls is not None:
            return tls_failure(tls, where=where)
        if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts and our overall deadline
            return DeliveryError(f"{where} timed out", retryable=True)
        if isinstance(exc, ConnectionError | OSError):  # SMTPConnectError, ServerDisconnected
            detail = redact(shorten(str(exc) or type(exc).__name__), secrets)
            return DeliveryError(f"cannot reach {where}: {detail}", retryable=True)
        if isinstance(exc, aiosmtplib.SMTPException):  # STARTTLS or AUTH not offered
            detail = redact(shorten(exc.message), secrets)
            if "STARTTLS" in detail:
                detail += " Set security to tls (port 465) or none, as the server speaks."
            return DeliveryError(f"{where}: {detail}", retryable=False)
        # A ValueError: an address or header aiosmtplib will not put on the wire.
        detail = redact(shorten(str(exc) or type(exc).__name__), secrets)
        return DeliveryError(f"cannot send through {where}: {detail}", retryable=False)
