"""SMS through a gateway; Tencent Cloud SMS (``SendSms``, API version 2021-01-11) for now.

``SmsChannel`` owns what any gateway needs: checking that recipients are E.164 numbers
(``+8613800000000``), sending them in batches of at most ``MAX_NUMBERS_PER_REQUEST``, and the
partial-failure rule. An ``SmsGateway`` owns one provider's wire protocol; adding a provider is a
new gateway class and a new value of the config's ``provider`` field.

Chinese carriers only deliver pre-approved templates, so the gateway does not send the rendered
body: it sends the approved ``template_id`` with ``template_params``, each a Jinja template
rendered against the notice (``templates.template_context``). If one fails to render, the
defaults are used and the receipt says so.

``TencentSmsGateway`` signs each request with TC3-HMAC-SHA256 (``tc3_authorization``), as
documented for Tencent Cloud API 3.0: a canonical request (method, ``/``, empty query, the
``content-type`` and ``host`` headers, the SHA-256 of the JSON body), a string to sign
(algorithm, timestamp, ``date/sms/tc3_request``, the canonical request's SHA-256), and a key
derived by HMAC-SHA256 chaining ``"TC3" + SecretKey`` → date → service → ``tc3_request``.

Failures: ``Response.Error`` fails the whole request; ``InternalError*``, ``RequestLimitExceeded*``
and ``LimitExceeded*`` are retryable, ``AuthFailure*``, ``InvalidParameter*``,
``FailedOperation*`` (an unapproved signature or template, no balance...) and the like are
permanent, and an unknown code is retried (the outbox caps the attempts). Per-number statuses
(``SendStatusSet[].Code`` other than ``Ok``) are reported in the receipt; the notification fails
only when no number got it, since a retry would text the others twice. The idempotency key
travels as ``SessionContext``, which Tencent echoes back in delivery reports.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import httpx
import pydantic

from gaia.monitor.alerting.channels._base import (
    ChannelConfig,
    DeliveryError,
    HttpSender,
    OutgoingMessage,
    check_http_url,
    http_failure,
    post,
    redact,
    shorten,
)
from gaia.monitor.alerting.channels.templates import (
    check_template,
    render_template,
    template_context,
)

MAX_NUMBERS_PER_REQUEST = 200  # SendSms takes at most 200 numbers per call
E164 = re.compile(r"\+[1-9]\d{6,14}")
DEFAULT_TEMPLATE_PARAMS = ("{{ alert_name }}", "{{ status }}", "{{ value_text }}")

TENCENT_SERVICE = "sms"
TENCENT_VERSION = "2021-01-11"
TENCENT_CONTENT_TYPE = "application/json; charset=utf-8"
RETRYABLE_TENCENT_CODES = ("InternalError", "RequestLimitExceeded", "LimitExceeded")
PERMANENT_TENCENT_CODES = (
    "AuthFailure",
    "InvalidParameter",  # InvalidParameterValue.* too
    "MissingParameter",
    "UnknownParameter",
    "FailedOperation",
    "UnauthorizedOperation",
    "UnsupportedOperation",
    "InvalidAction",
    "ResourceNotFound",
)


class SmsConfig(ChannelConfig):
    model_config = pydantic.ConfigDict(coerce_numbers_to_str=True)  # ids may come as numbers
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret_key"})
    trimmed_fields: ClassVar[frozenset[str]] = frozenset(
        {"endpoint", "region", "secret_id", "sdk_app_id", "template_id"}
    )

    provider: Literal["tencent"] = "tencent"
    endpoint: str = "https://sms.tencentcloudapi.com"
    region: str = pydantic.Field(default="ap-guangzhou", pattern=r"^[a-z0-9-]+$")
    secret_id: str = pydantic.Field(min_length=1)
    secret_key: str = pydantic.Field(min_length=1)
    sdk_app_id: str = pydantic.Field(pattern=r"^\d+$")
    sign_name: str = pydantic.Field(min_length=1)
    template_id: str = pydantic.Field(pattern=r"^\d+$")
    template_params: list[str] = pydantic.Field(
        default_factory=lambda: list(DEFAULT_TEMPLATE_PARAMS), max_length=20
    )
    timeout: float = pydantic.Field(default=10.0, gt=0, le=120)

    @pydantic.field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        check_http_url(value, field="endpoint")
        if httpx.URL(value).path not in ("", "/") or httpx.URL(value).query:
            raise ValueError("endpoint is the API's origin (https://sms.tencentcloudapi.com)")
        return value

    @pydantic.field_validator("template_params")
    @classmethod
    def _params(cls, value: list[str]) -> list[str]:
        for index, text in enumerate(value):
            try:
                check_template(text)
            except Exception as exc:  # InvalidRequest from check_template
                raise ValueError(f"template_params[{index}]: {exc}") from None
        return value


@dataclass(frozen=True)
class NumberResult:
    number: str
    ok: bool
    code: str  # the gateway's status code ("Ok" for Tencent)
    message: str
    serial_no: str = ""
    retryable: bool = False


@dataclass(frozen=True)
class GatewayReply:
    request_id: str
    results: list[NumberResult]


class SmsGateway(Protocol):
    """One provider's wire protocol: send one batch, report each number's fate. Failures of
    the whole request raise ``DeliveryError``."""

    name: str

    async def send_batch(
        self, numbers: Sequence[str], params: Sequence[str], *, session_context: str
    ) -> GatewayReply: ...


def tc3_authorization(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    timestamp: int,
    payload: bytes,
    content_type: str = TENCENT_CONTENT_TYPE,
) -> str:
    """The ``Authorization`` header of a TC3-HMAC-SHA256 signed POST (signed headers:
    ``content-type;host``)."""
    algorithm = "TC3-HMAC-SHA256"
    date = dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")
    signed_headers = "content-type;host"
    # Header names and values are lower-cased and trimmed; the block ends with a newline.
    canonical_headers = (
        f"content-type:{content_type.strip().lower()}\nhost:{host.strip().lower()}\n"
    )
    canonical_request = "\n".join(
        [
            "POST",
            "/",
            "",  # the query string: empty for POST
            canonical_headers,
            signed_headers,
            hashlib.sha256(payload).hexdigest(),
        ]
    )
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        [
            algorithm,
            str(timestamp),
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )

    def _hmac(key: bytes, text: str) -> bytes:
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    secret_date = _hmac(("TC3" + secret_key).encode(), date)
    secret_service = _hmac(secret_date, service)
    secret_signing = _hmac(secret_service, "tc3_request")
    signature = hmac.new(secret_signing, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{algorithm} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def tencent_code_retryable(code: str) -> bool:
    if code.startswith(RETRYABLE_TENCENT_CODES):
        return True
    return not code.startswith(PERMANENT_TENCENT_CODES)


class TencentSmsGateway(HttpSender[SmsConfig]):
    name = "tencent"

    async def send_batch(
        self, numbers: Sequence[str], params: Sequence[str], *, session_context: str
    ) -> GatewayReply:
        config = self.config
        body: dict[str, Any] = {
            "PhoneNumberSet": list(numbers),
            "SmsSdkAppId": config.sdk_app_id,
            "SignName": config.sign_name,
            "TemplateId": config.template_id,
            "TemplateParamSet": list(params),
            "SessionContext": session_context[:500],
        }
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        host = httpx.URL(config.endpoint).netloc.decode("ascii")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": TENCENT_CONTENT_TYPE,
            "Host": host,
            "X-TC-Action": "SendSms",
            "X-TC-Version": TENCENT_VERSION,
            "X-TC-Region": config.region,
            "X-TC-Timestamp": str(timestamp),
            "Authorization": tc3_authorization(
                secret_id=config.secret_id,
                secret_key=config.secret_key,
                service=TENCENT_SERVICE,
                host=host,
                timestamp=timestamp,
                payload=payload,
            ),
        }
        secrets = config.secrets()
        response = await post(
            config.endpoint,
            content=payload,
            headers=headers,
            timeout=config.timeout,
            secrets=secrets,
            transport=self._transport,
        )
        if not response.is_success:
            raise http_failure(response, secrets=secrets)
        try:
            answer = response.json()["Response"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                f"Tencent Cloud SMS gave an unreadable answer (HTTP {response.status_code}, "
                "not its JSON)",
                retryable=True,
            ) from None
        request_id = str(answer.get("RequestId", ""))
        error = answer.get("Error")
        if error:
            code = str(error.get("Code", "UnknownError"))
            message = redact(shorten(str(error.get("Message", ""))), secrets)
            raise DeliveryError(
                f"Tencent Cloud SMS refused SendSms: {code}: {message} (RequestId {request_id})",
                retryable=tencent_code_retryable(code),
            )
        results = []
        for status in answer.get("SendStatusSet") or []:
            code = str(status.get("Code", ""))
            results.append(
                NumberResult(
                    number=str(status.get("PhoneNumber", "")),
                    ok=code == "Ok",
                    code=code,
                    message=redact(shorten(str(status.get("Message", "")), 100), secrets),
                    serial_no=str(status.get("SerialNo", "")),
                    retryable=code != "Ok" and tencent_code_retryable(code),
                )
            )
        return GatewayReply(request_id=request_id, results=results)


class SmsChannel:
    kind = "sms"

    def __init__(self, config: SmsConfig, *, gateway: SmsGateway | None = None) -> None:
        self.config = config
        self.gateway: SmsGateway = gateway or TencentSmsGateway(config)

    def template_params(self, message: OutgoingMessage) -> tuple[list[str], str]:
        """The rendered params, and a note when the configured ones failed."""
        context = template_context(message.notice)
        try:
            return [render_template(t, context).strip() for t in self.config.template_params], ""
        except Exception as exc:
            defaults = [render_template(t, context).strip() for t in DEFAULT_TEMPLATE_PARAMS]
            return defaults, f"template_params failed ({type(exc).__name__}: {exc}); defaults used"

    async def send(self, message: OutgoingMessage) -> str:
        numbers: list[str] = []
        invalid: list[str] = []
        for raw in message.recipients:
            number = raw.replace(" ", "").replace("-", "")
            if not E164.fullmatch(number):
                invalid.append(raw)
            elif number not in numbers:
                numbers.append(number)
        if not numbers:
            what = f" (not E.164 numbers like +8613800000000: {', '.join(invalid)})"
            raise DeliveryError(
                "no valid SMS recipients" + (what if invalid else ""), retryable=False
            )

        params, note = self.template_params(message)
        replies: list[GatewayReply] = []
        for start in range(0, len(numbers), MAX_NUMBERS_PER_REQUEST):
            batch = numbers[start : start + MAX_NUMBERS_PER_REQUEST]
            try:
                replies.append(
                    await self.gateway.send_batch(
                        batch, params, session_context=message.idempotency_key
                    )
                )
            except DeliveryError as exc:
                if not any(r.ok for reply in replies for r in reply.results):
                    raise
                # Earlier batches went out: a retry would text them twice. Report instead.
                replies.append(
                    GatewayReply(
                        request_id="",
                        results=[NumberResult(n, False, "BatchFailed", exc.reason) for n in batch],
                    )
                )

        results = [r for reply in replies for r in reply.results]
        sent = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        request_ids = ", ".join(reply.request_id for reply in replies if reply.request_id)
        if not sent:
            raise DeliveryError(
                f"no number got the SMS ({summarize_failures(failed) or 'none reported'})"
                + (f" (RequestId {request_ids})" if request_ids else ""),
                retryable=any(r.retryable for r in failed),
            )
        parts = [
            f"SMS via {self.gateway.name} to {len(sent)} of {len(numbers) + len(invalid)} numbers"
        ]
        if failed:
            parts.append(f"failed {summarize_failures(failed)}")
        if invalid:
            parts.append(f"skipped {_first(invalid)}: not E.164")
        if note:
            parts.append(note)
        serials = [r.serial_no for r in sent if r.serial_no]
        if serials:
            parts.append(f"SerialNo {_first(serials)}")
        if request_ids:
            parts.append(f"RequestId {request_ids}")
        return redact(shorten("; ".join(parts), 1000), self.config.secrets())


def _first(items: Sequence[str], count: int = 3) -> str:
    more = f" and {len(items) - count} more" if len(items) > count else ""
    return ", ".join(items[:count]) + more


def summarize_failures(failed: Sequence[NumberResult]) -> str:
    """``"+86...1, +86...2: LimitExceeded.X message"``, one group per code and message."""
    groups: dict[tuple[str, str], list[str]] = {}
    for result in failed:
        groups.setdefault((result.code, result.message), []).append(result.number)
    return "; ".join(
        f"{_first(numbers)}: {code} {message}".strip()
        for (code, message), numbers in groups.items()
    )
