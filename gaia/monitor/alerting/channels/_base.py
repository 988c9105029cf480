"""What every channel shares: the values that flow in, the one error that flows out, and the
plumbing that turns configs and HTTP answers into those.

- ``AlertNotice`` is what a notification is about; ``OutgoingMessage`` is one rendered
  notification for one channel and its recipients, with an idempotency key that stays the same on
  every retry. A channel's ``send()`` delivers it and returns a short receipt for the record.
- ``DeliveryError`` is the only thing ``send()`` raises. ``retryable`` answers the one question
  the outbox (``gaia.monitor.alerting.delivery``) asks: try again later, or give up and say why.
  The rule of thumb: the network and the far side's load are retryable; anything the configuration
  must change (credentials, a certificate, a rejected address, a 4xx) is not, because retrying would
  only repeat it.
- ``ChannelConfig`` is the pydantic base of every channel's config (unknown fields are errors:
  a typo must not silently drop a setting); ``parse_config`` turns its validation errors into one
  ``InvalidRequest`` that names each field.
- ``HttpSender`` is the one constructor of the HTTP senders (config, clock, transport).
- ``post()`` and ``http_failure()`` are the HTTP half of the error mapping, shared by the SMS,
  WeCom and webhook channels so that a 503 or a timeout means the same thing everywhere.
- Every connection goes through the egress guard (``gaia.egress``): the HTTP client's transport
  connects only to checked addresses, and a refused one is a permanent ``DeliveryError``. The
  client ignores proxy environment variables, since a proxy would reach what the guard refuses.
- The far side's answer is never quoted in a reason: a reason says the status code and its
  reason phrase. Quoting it would turn the channel test into a way of reading whatever server a
  URL points at.

Credentials never appear in a reason or a receipt: channels pass their secrets to ``redact``
before any text from the far side (or from an exception that may quote a URL) leaves them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import email.utils
import functools
import hashlib
import http
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import httpx
import pydantic

from gaia.domain.errors import InvalidRequest
from gaia.egress import EgressRefused, guarded_transport, refusal_in


@dataclass(frozen=True)
class AlertNotice:
    """What one notification is about."""

    status: str  # "firing" | "resolved"
    alert_name: str  # the policy's name
    severity: str  # "critical" | "warning" | "info"
    labels: dict[str, str]  # cluster, business, app, instance, node, metric..., alertname
    annotations: dict[str, str]  # summary, description
    value: float | None  # the observed value that fired or resolved
    threshold: float | None
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    fingerprint: str  # stable id of the alert (policy + label set)
    record_id: int  # the alert record's id in the platform
    url: str = ""  # link to the record in the console


@dataclass(frozen=True)
class OutgoingMessage:
    notice: AlertNotice
    subject: str  # rendered: the email subject, the first line elsewhere
    body: str  # rendered text for this channel
    # Email addresses (email), E.164 numbers like +8613800000000 (sms), mobiles to @-mention
    # (wecom), empty for a webhook.
    recipients: tuple[str, ...]
    idempotency_key: str  # the same on every retry of the same notification


class DeliveryError(Exception):
    """One notification was not delivered; ``reason`` says why in words a user can act on."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after  # seconds, when the far side said (HTTP Retry-After)

    def __repr__(self) -> str:
        return (
            f"DeliveryError({self.reason!r}, retryable={self.retryable}, "
            f"retry_after={self.retry_after})"
        )


@runtime_checkable
class Channel(Protocol):
    kind: str  # "email" | "sms" | "wecom" | "webhook"

    async def send(self, message: OutgoingMessage) -> str:
        """Deliver one notification; return a short receipt. Raises ``DeliveryError``."""
        ...


# --------------------------------------------------------------------------------- configs


class ChannelConfig(pydantic.BaseModel):
    """Base of the per-kind configs: strict about unknown fields, and knows its secrets."""

    model_config = pydantic.ConfigDict(extra="forbid")

    # Fields that hold credentials: the API masks them when showing a config, and channels
    # redact their values from every reason and receipt.
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    # Names and addresses pasted with stray spaces are trimmed; secrets are taken as given.
    trimmed_fields: ClassVar[frozenset[str]] = frozenset()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _trim(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {
                k: v.strip() if k in cls.trimmed_fields and isinstance(v, str) else v
                for k, v in data.items()
            }
        return data

    def secrets(self) -> list[str]:
        """The credential values in this config, for ``redact``."""
        values: list[str] = []
        for name in self.secret_fields:
            value = getattr(self, name)
            if isinstance(value, str):
                values.append(value)
            elif isinstance(value, Mapping):
                values.extend(str(v) for v in value.values())
        return values


ConfigT = TypeVar("ConfigT", bound=ChannelConfig)


class HttpSender(Generic[ConfigT]):
    """What every HTTP sender (the SMS gateways, the WeCom and webhook channels) is built from:
    its parsed config, a clock for request timestamps and signatures, and the HTTP transport
    (None: the shared client's; tests pass a mock transport)."""

    def __init__(
        self,
        config: ConfigT,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._transport = transport


def parse_config(model: type[ConfigT], kind: str, config: Mapping[str, Any]) -> ConfigT:
    """Validate ``config`` as ``model``; one ``InvalidRequest`` naming every bad field."""
    if not isinstance(config, Mapping):
        raise InvalidRequest(f"the {kind} channel config must be an object")
    try:
        return model.model_validate(dict(config))
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"]) or "config"
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                known = ", ".join(sorted(model.model_fields))
                message = f"unknown field (the {kind} config has: {known})"
            problems.append({"field": field, "message": message})
        text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidRequest(f"invalid {kind} channel config: {text}", details=problems) from None


def check_http_url(value: str, *, field: str = "url") -> str:
    """An absolute http(s) URL with a host; the message says what is wrong."""
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{field} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError(f"{field} must start with https:// (or http://), got {value[:40]!r}")
    if not url.host:
        raise ValueError(f"{field} has no host")
    return value


def header_safe_key(key: str) -> str:
    """The idempotency key as a header value: as given when it is printable ASCII, else its
    SHA-256 (still the same on every retry)."""
    if key.isascii() and key.isprintable() and 0 < len(key) <= 200:
        return key
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# ----------------------------------------------------------------------------- redaction

_MASK = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``.

    Secrets shorter than 4 characters are left alone: masking ``"a"`` everywhere would destroy
    the message and protect nothing.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (libraries wrap it in their own connect errors), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def tls_failure(error: ssl.SSLError, *, where: str) -> DeliveryError:
    """A TLS failure is a configuration problem (wrong CA, wrong port, wrong mode): permanent."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"the TLS certificate of {where} was not accepted ({error.verify_message}); "
            "trust the CA that signed it (ca_pem) or fix the server's certificate",
            retryable=False,
        )
    return DeliveryError(
        f"TLS handshake with {where} failed ({error.reason or error}); check that the port "
        "and the security mode match the server",
        retryable=False,
    )


# ------------------------------------------------------------------------------------ HTTP


def origin(url: str | httpx.URL) -> str:
    """``scheme://host[:port]`` of a URL: safe to show, whereas a path or query may hold a
    token (WeCom's ``key``, many chat webhooks' paths)."""
    return _origin(str(url))


@functools.lru_cache(maxsize=256)
def _origin(url: str) -> str:
    # every send names its channel's origin twice (where it went, or where it failed):
    # parsing the same few URLs again each time was a visible share of a send
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every channel's HTTP calls: building one loads the CA
    bundle (about 25 ms), which per notification would cap delivery at a few dozen per second."""
    return httpx.create_ssl_context()


# The delivery loop opens one client per pass and sets it here, so the notifications of a pass
# share connections (and TLS sessions) to the same servers instead of one handshake each.
shared_client: contextvars.ContextVar[httpx.AsyncClient | None] = contextvars.ContextVar(
    "gaia_channel_client", default=None
)


def new_client(
    *, transport: httpx.AsyncBaseTransport | None = None, max_connections: int = 64
) -> httpx.AsyncClient:
    """An HTTP client as the channels use it: verifying TLS, no redirects, bounded pool, every
    connection checked by the egress guard (``transport``: tests' mock transports, which
    connect nowhere)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=min(32, max_connections)
    )
    return httpx.AsyncClient(
        transport=transport or guarded_transport(ssl_context=_tls_context(), limits=limits),
        follow_redirects=False,
        trust_env=False,
        verify=_tls_context(),
        limits=limits,
    )


async def post(
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
    secrets: Iterable[str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.Response:
    """POST once and return the response, whatever its status; transport failures become
    ``DeliveryError``. Redirects are not followed: a notification goes where it was configured
    to go, or fails saying where it was sent instead."""
    where = origin(url)
    shared = shared_client.get() if transport is None else None
    try:
        if shared is not None:
            return await _post(shared, url, content, headers, timeout)
        async with new_client(transport=transport) as client:
            return await _post(client, url, content, headers, timeout)
    except EgressRefused as exc:
        raise DeliveryError(str(exc), retryable=False) from None
    except httpx.TimeoutException:
        raise DeliveryError(
            f"{where} did not answer within {timeout:g} s", retryable=True
        ) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        refused = refusal_in(exc)
        if refused is not None:
            raise DeliveryError(str(refused), retryable=False) from None
        tls = ssl_error_in(exc)
        if tls is not None:
            raise tls_failure(tls, where=where) from None
        detail = redact(shorten(str(exc) or type(exc).__name__), secrets)
        raise DeliveryError(f"cannot reach {where}: {detail}", retryable=True) from None
    except httpx.HTTPError as exc:  # an invalid URL, an unsupported scheme, a bad header
        detail = redact(shorten(str(exc) or type(exc).__name__), secrets)
        raise DeliveryError(f"cannot send to {where}: {detail}", retryable=False) from None


async def _post(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> httpx.Response:
    response = await client.post(
        url, content=content, headers=dict(headers), timeout=httpx.Timeout(timeout)
    )
    await response.aread()
    return response


RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 429})


def http_failure(response: httpx.Response, *, secrets: Iterable[str]) -> DeliveryError:
    """The ``DeliveryError`` for a non-2xx answer: 408/429/5xx retryable (honouring
    ``Retry-After``), other statuses permanent. The answer's body is not quoted (see the
    module's docstring): the status code and its reason phrase are the reason."""
    where = origin(response.request.url)
    status = response.status_code
    # The standard phrase for the code, not the server's status line: that is its text too.
    try:
        said = f" {http.HTTPStatus(status).phrase}"
    except ValueError:
        said = ""
    if 300 <= status < 400:
        target = response.headers.get("location", "")
        shown = origin(target) if target.startswith(("http://", "https://")) else "elsewhere"
        return DeliveryError(
            f"{where} answered {status}, redirecting to {shown}; configure the final URL",
            retryable=False,
        )
    retryable = status in RETRYABLE_HTTP_STATUSES or status >= 500
    return DeliveryError(
        f"{where} answered HTTP {status}{said}",
        retryable=retryable,
        retry_after=parse_retry_after(response.headers.get("retry-after")) if retryable else None,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
