"""WeCom (WeChat Work) group robot: POST the message to the robot's webhook URL.

The URL (``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...``) is the credential: its
``key`` lets anyone post to the group, so the whole URL is a secret field and only its origin
ever appears in a reason. Any http(s) URL is accepted so that tests and air-gapped proxies can
stand in for WeCom; a URL on WeCom's own host must be https and carry a key.

``msgtype`` is ``markdown`` (default: the channel's default template is WeCom markdown, with
coloured status) or ``text`` (the markdown is flattened to plain text). Mentions: WeCom's
markdown messages cannot @-mention by mobile number, only text messages can
(``mentioned_mobile_list``). So with ``mention_mobiles`` a text message carries its mentions
itself, and a markdown message is followed by a one-line text message that mentions the
recipients. If that second message fails, the notification still counts as delivered (the
receipt says the mention failed): retrying would post the alert to the group twice. Recipients
are mobiles as WeCom stores them: ``+86`` is stripped from mainland numbers, and ``@all``
mentions everyone.

The robot answers ``{"errcode": 0, "errmsg": "ok"}``. ``45009`` (over the robot's limit of 20
messages a minute) and ``-1`` (system busy) are retryable; any other errcode (``93000``: the
URL is not a valid robot) is permanent, with WeCom's errmsg as the reason. The robot has no
idempotency key, so a retry after a lost answer can post twice.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

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

WECOM_HOST = "qyapi.weixin.qq.com"
MARKDOWN_MAX_BYTES = 4096
TEXT_MAX_BYTES = 2048
RETRYABLE_ERRCODES = frozenset({-1, 45009})


class WeComConfig(ChannelConfig):
    secret_fields: ClassVar[frozenset[str]] = frozenset({"webhook_url"})
    trimmed_fields: ClassVar[frozenset[str]] = frozenset({"webhook_url"})

    webhook_url: str
    mention_mobiles: bool = False
    msgtype: Literal["markdown", "text"] = "markdown"
    timeout: float = pydantic.Field(default=10.0, gt=0, le=120)

    @pydantic.field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str) -> str:
        check_http_url(value, field="webhook_url")
        url = httpx.URL(value)
        if url.host == WECOM_HOST and (url.scheme != "https" or not url.params.get("key")):
            raise ValueError(
                "webhook_url must be the robot's https://qyapi.weixin.qq.com/cgi-bin/webhook/"
                "send?key=... as WeCom shows it"
            )
        return value

    def secrets(self) -> list[str]:
        key = httpx.URL(self.webhook_url).params.get("key")
        return [*super().secrets(), *([key] if key else [])]


def fit_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "…"


_FONT = re.compile(r"<font[^>]*>(.*?)</font>", re.DOTALL)
_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")


def markdown_to_text(markdown: str) -> str:
    """WeCom markdown flattened for a text message: tags, emphasis and quote marks dropped,
    links written out."""
    text = _FONT.sub(r"\1", markdown)
    text = _LINK.sub(r"\1: \2", text)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^(#{1,6}|>)\s?", "", line)
        lines.append(line.replace("**", ""))
    return "\n".join(lines).strip()


def mention_list(recipients: tuple[str, ...]) -> list[str]:
    mobiles: list[str] = []
    for raw in recipients:
        mobile = raw.replace(" ", "").replace("-", "")
        if mobile.startswith("+86"):
            mobile = mobile[3:]
        if mobile and mobile not in mobiles:
            mobiles.append(mobile)
    return mobiles


class WeComChannel(HttpSender[WeComConfig]):
    kind = "wecom"

    async def _post(self, payload: dict[str, Any]) -> None:
        secrets = self.config.secrets()
        response = await post(
            self.config.webhook_url,
            content=json.dumps(payload, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=self.config.timeout,
            secrets=secrets,
            transport=self._transport,
        )
        if not response.is_success:
            raise http_failure(response, secrets=secrets)
        try:
            answer = response.json()
            errcode = int(answer.get("errcode", -1))
            errmsg = str(answer.get("errmsg", ""))
        except (ValueError, AttributeError, TypeError):
            raise DeliveryError(
                f"the WeCom robot gave an unreadable answer (HTTP {response.status_code}, "
                "not its JSON)",
                retryable=True,
            ) from None
        if errcode != 0:
            raise DeliveryError(
                f"the WeCom robot refused the message: errcode {errcode}: "
                f"{redact(shorten(errmsg), secrets)}",
                retryable=errcode in RETRYABLE_ERRCODES,
            )

    async def send(self, message: OutgoingMessage) -> str:
        mobiles = mention_list(message.recipients) if self.config.mention_mobiles else []
        if self.config.msgtype == "text":
            text: dict[str, Any] = {
                "content": fit_bytes(markdown_to_text(message.body), TEXT_MAX_BYTES)
            }
            if mobiles:
                text["mentioned_mobile_list"] = mobiles
            await self._post({"msgtype": "text", "text": text})
            return "WeCom text message sent" + (f", mentioning {len(mobiles)}" if mobiles else "")

        markdown = {"content": fit_bytes(message.body, MARKDOWN_MAX_BYTES)}
        await self._post({"msgtype": "markdown", "markdown": markdown})
        if not mobiles:
            return "WeCom markdown message sent"
        mention = {
            "content": fit_bytes(message.subject or message.notice.alert_name, TEXT_MAX_BYTES),
            "mentioned_mobile_list": mobiles,
        }
        try:
            await self._post({"msgtype": "text", "text": mention})
        except DeliveryError as exc:
            return f"WeCom markdown message sent; the mention message failed: {exc.reason}"
        return f"WeCom markdown message sent, then a text message mentioning {len(mobiles)}"
