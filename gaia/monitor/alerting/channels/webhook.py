"""Custom webhook: POST an Alertmanager-compatible JSON payload, optionally HMAC-signed.

The body is what Alertmanager's ``webhook_config`` sends (version ``"4"``), so receivers written
for Alertmanager (ticketing bridges, chat relays, on-call tools) take Gaia's alerts unchanged.
Gaia notifies per alert, so each payload holds one alert, grouped by all of its labels:
``groupLabels`` and ``commonLabels`` are the alert's labels and ``groupKey`` is what Alertmanager
would make of them. One extension, a top-level ``"gaia"`` object, carries what Alertmanager has no
field for (record id, value, threshold, severity); receivers that do not know it ignore it.

Signing (when ``hmac_secret`` is set): ``X-Gaia-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>">`` with ``X-Gaia-Timestamp`` (Unix seconds). Signing the timestamp with the
body lets a receiver refuse replays of an old request (``verify_signature`` allows 300 s of
skew). ``X-Gaia-Idempotency-Key`` is the same on every retry, for receivers that deduplicate.

Answers: 2xx delivered; 408, 425, 429 and 5xx retryable, honouring ``Retry-After``; other
statuses permanent (a redirect is not followed: the configured URL is where alerts go).
Custom ``headers`` (typically an ``Authorization`` token) are secret; the URL's path and query
never appear in a reason, since chat webhooks often carry their token there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any, ClassVar

import pydantic

from gaia.monitor.alerting.channels._base import (
    AlertNotice,
    ChannelConfig,
    HttpSender,
    OutgoingMessage,
    check_http_url,
    header_safe_key,
    http_failure,
    origin,
    post,
)

PAYLOAD_VERSION = "4"
RECEIVER = "gaia"
SIGNATURE_HEADER = "X-Gaia-Signature"
TIMESTAMP_HEADER = "X-Gaia-Timestamp"
IDEMPOTENCY_HEADER = "X-Gaia-Idempotency-Key"
# Headers the channel sets or the HTTP layer owns; a config may not override them.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_quote: Callable[[str], str] = json.encoder.encode_basestring


class WebhookConfig(ChannelConfig):
    secret_fields: ClassVar[frozenset[str]] = frozenset({"hmac_secret", "headers"})
    trimmed_fields: ClassVar[frozenset[str]] = frozenset({"url"})

    url: str
    hmac_secret: str | None = pydantic.Field(default=None, min_length=16)
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    timeout: float = pydantic.Field(default=10.0, gt=0, le=120)

    @pydantic.field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_http_url(value, field="url")

    @pydantic.field_validator("hmac_secret", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return value or None

    @pydantic.field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            lowered = name.lower()
            if lowered in RESERVED_HEADERS or lowered.startswith("x-gaia-"):
                raise ValueError(f"header {name} is set by Gaia and cannot be configured")
            if "\r" in text or "\n" in text:
                raise ValueError(f"the value of header {name} must be one line")
        return value


def rfc3339(moment: dt.datetime | None) -> str:
    """Go's RFC 3339 as Alertmanager writes it; no time is Go's zero time."""
    if moment is None:
        return "0001-01-01T00:00:00Z"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    moment = moment.astimezone(dt.UTC)
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def group_key(labels: dict[str, str]) -> str:
    """Alertmanager's groupKey for a route ``{}`` grouping by these labels."""
    # each value quoted as json.dumps(value, ensure_ascii=False) quotes it, by the encoder's own
    # string function: a json.dumps call per label was most of the cost of a payload
    pairs = ", ".join(f"{name}={_quote(value)}" for name, value in sorted(labels.items()))
    return "{}:{" + pairs + "}"


def alertmanager_payload(notice: AlertNotice) -> dict[str, Any]:
    labels = {"alertname": notice.alert_name, "severity": notice.severity, **notice.labels}
    annotations = dict(notice.annotations)
    return {
        "version": PAYLOAD_VERSION,
        "groupKey": group_key(labels),
        "truncatedAlerts": 0,
        "status": notice.status,
        "receiver": RECEIVER,
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": origin(notice.url) if notice.url else "",
        "alerts": [
            {
                "status": notice.status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(notice.starts_at),
                "endsAt": rfc3339(notice.ends_at),
                "generatorURL": notice.url,
                "fingerprint": notice.fingerprint,
            }
        ],
        "gaia": {
            "recordId": notice.record_id,
            "alertName": notice.alert_name,
            "severity": notice.severity,
            "value": notice.value,
            "threshold": notice.threshold,
            "url": notice.url,
        },
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Gaia-Signature`` value: ``sha256=`` and the hex HMAC of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: float | dt.datetime,
    tolerance: float = 300,
) -> bool:
    """For receivers: is this request signed with ``secret``, and recent (within ``tolerance``
    seconds of ``now``, either way)?"""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = now.timestamp() if isinstance(now, dt.datetime) else float(now)
    if abs(current - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature_header.strip())


class WebhookChannel(HttpSender[WebhookConfig]):
    kind = "webhook"

    def request(self, message: OutgoingMessage) -> tuple[bytes, dict[str, str]]:
        """The exact body and headers ``send`` posts."""
        body = json.dumps(
            alertmanager_payload(message.notice), ensure_ascii=False, separators=(",", ":")
        ).encode()
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "User-Agent": "Gaia-Alerting",
            IDEMPOTENCY_HEADER: header_safe_key(message.idempotency_key),
        }
        if self.config.hmac_secret:
            timestamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.config.hmac_secret, timestamp, body)
        return body, headers

    async def send(self, message: OutgoingMessage) -> str:
        body, headers = self.request(message)
        secrets = self.config.secrets()
        response = await post(
            self.config.url,
            content=body,
            headers=headers,
            timeout=self.config.timeout,
            secrets=secrets,
            transport=self._transport,
        )
        if not response.is_success:
            raise http_failure(response, secrets=secrets)
        return f"HTTP {response.status_code} from {origin(self.config.url)}"
