"""Notification channels: send one alert notification by email, SMS, WeCom robot or webhook.

What flows in: a channel's kind and config (as stored, decrypted), and an ``OutgoingMessage``
(the ``AlertNotice``, the subject and body from ``render_message``, the recipients, an
idempotency key). What flows out: a short receipt for the alert record, or a ``DeliveryError``
saying why, and whether the outbox (``gaia.monitor.alerting.delivery``) should try again. A channel
sends once; retries, back-off and rate limits are the outbox's.

- ``validate_channel_config`` checks a config when it is saved (``InvalidRequest`` names the
  field) and fills in defaults; ``channel_from_config`` builds the sender.
- ``SECRET_FIELDS`` names each kind's credential fields, for the API to mask. No channel puts a
  credential in a reason or a receipt.
- ``render_message`` and ``check_template``: Jinja templates in a sandbox, with a default per
  kind (``templates``).

One module per kind (``email``, ``sms``, ``wecom``, ``webhook``); the shared values and the
HTTP error mapping are in ``_base``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from gaia.domain.errors import InvalidRequest
from gaia.egress import EgressRefused, check_literal_host
from gaia.monitor.alerting.channels._base import (
    AlertNotice,
    Channel,
    ChannelConfig,
    DeliveryError,
    OutgoingMessage,
    new_client,
    parse_config,
    redact,
    shared_client,
)
from gaia.monitor.alerting.channels.email import EmailChannel, EmailConfig
from gaia.monitor.alerting.channels.sms import SmsChannel, SmsConfig
from gaia.monitor.alerting.channels.templates import check_template, render_message
from gaia.monitor.alerting.channels.webhook import WebhookChannel, WebhookConfig, verify_signature
from gaia.monitor.alerting.channels.wecom import WeComChannel, WeComConfig

__all__ = [
    "CHANNEL_KINDS",
    "SECRET_FIELDS",
    "TEXT_KINDS",
    "AlertNotice",
    "Channel",
    "DeliveryError",
    "OutgoingMessage",
    "channel_from_config",
    "check_template",
    "new_client",
    "redact",
    "render_message",
    "shared_client",
    "validate_channel_config",
    "verify_signature",
]

_CONFIGS: dict[str, type[ChannelConfig]] = {
    "email": EmailConfig,
    "sms": SmsConfig,
    "wecom": WeComConfig,
    "webhook": WebhookConfig,
}

CHANNEL_KINDS: tuple[str, ...] = tuple(_CONFIGS)

# The kinds whose sender sends the rendered subject and body. A webhook posts Alertmanager's JSON
# built from the notice, and an SMS gateway takes its approved template's parameters, also from
# the notice: rendering text for them would be work thrown away on every notification.
TEXT_KINDS: frozenset[str] = frozenset({"email", "wecom"})

SECRET_FIELDS: dict[str, frozenset[str]] = {
    kind: model.secret_fields for kind, model in _CONFIGS.items()
}


def _parse(kind: str, config: Mapping[str, Any]) -> ChannelConfig:
    model = _CONFIGS.get(kind)
    if model is None:
        raise InvalidRequest(
            f"unknown channel kind {kind!r}; expected one of {', '.join(CHANNEL_KINDS)}"
        )
    return parse_config(model, kind, config)


# The config field that names each kind's destination: a URL, or (email) a host name.
_DESTINATION_FIELDS = {"email": "host", "sms": "endpoint", "wecom": "webhook_url", "webhook": "url"}


def _check_destination(kind: str, parsed: ChannelConfig) -> None:
    """The egress guard's early half: an address the guard would refuse at connect time (an IP
    literal, ``localhost``) is refused when the channel is saved, naming the field. Names are
    resolved and checked only when connecting (``gaia.egress``)."""
    field = _DESTINATION_FIELDS.get(kind)
    value = getattr(parsed, field, None) if field else None
    if not isinstance(value, str) or not value:
        return
    host = value if kind == "email" else httpx.URL(value).host
    try:
        check_literal_host(host)
    except EgressRefused as exc:
        message = str(exc)
        raise InvalidRequest(
            f"invalid {kind} channel config: {field}: {message}",
            details=[{"field": field, "message": message}],
        ) from None


def validate_channel_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with defaults filled in, ready to store; ``InvalidRequest`` if it is bad
    (including a destination the egress guard refuses)."""
    parsed = _parse(kind, config)
    _check_destination(kind, parsed)
    return parsed.model_dump(mode="json")


def channel_from_config(kind: str, config: Mapping[str, Any]) -> Channel:
    parsed = _parse(kind, config)
    if isinstance(parsed, EmailConfig):
        return EmailChannel(parsed)
    if isinstance(parsed, SmsConfig):
        return SmsChannel(parsed)
    if isinstance(parsed, WeComConfig):
        return WeComChannel(parsed)
    if isinstance(parsed, WebhookConfig):
        return WebhookChannel(parsed)
    raise AssertionError(f"no channel for {kind}")
