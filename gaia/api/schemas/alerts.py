"""Request and response bodies of the alerting API (``gaia.api.routes.alerts``)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from gaia.api.schemas.base import MultiLineText, OneLine, OneLineText, check_plain_text

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[^\x00-\x1f\x7f]+$"), OneLine]
PolicyName = Annotated[
    str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$"), OneLine
]
Ids = Annotated[list[Annotated[int, Field(ge=1, le=2**31)]], Field(max_length=100)]
ChannelKind = Literal["email", "sms", "wecom", "webhook"]
LabelMap = Annotated[
    dict[OneLineText, Annotated[OneLineText, Field(max_length=253)]], Field(max_length=20)
]


def _plain_config(config: dict[str, Any]) -> dict[str, Any]:
    """A channel's settings are free-form JSON checked by the channel itself; every string in them
    (a URL, a header, an address, a template) is plain text like any other field's. Keys are one
    line; values may span lines (a message template). The error names the key path."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            try:
                check_plain_text(value, multiline=True)
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                try:
                    check_plain_text(str(key), multiline=False)
                except ValueError as exc:
                    raise ValueError(f"a key in {path or 'config'}: {exc}") from None
                walk(item, where)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}.{index}")

    walk(config, "")
    return config


ChannelConfig = Annotated[dict[str, Any], AfterValidator(_plain_config)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- channels


class ChannelCreate(Strict):
    business: OneLineText | None = Field(
        default=None, description="owning business; omit for a platform channel (admins only)"
    )
    name: Name
    kind: ChannelKind
    config: ChannelConfig = Field(description="kind-specific settings, credentials included")
    rate_limit_per_minute: int = Field(default=60, ge=0, le=100_000, description="0: no limit")
    enabled: bool = True


class ChannelUpdate(Strict):
    name: Name | None = None
    config: ChannelConfig | None = Field(
        default=None,
        description="fields to change; credentials left out (or sent masked) keep their value",
    )
    rate_limit_per_minute: int | None = Field(default=None, ge=0, le=100_000)
    enabled: bool | None = None


class ChannelOut(BaseModel):
    id: int
    business: str | None
    name: str
    kind: str
    rate_limit_per_minute: int
    enabled: bool
    # Shown to the owning business's admins only, credentials masked.
    config: dict[str, Any] | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class ChannelTestOut(BaseModel):
    ok: bool
    receipt: str = ""
    error: str = ""
    retryable: bool | None = None


# ---------------------------------------------------------------- receivers


class ReceiverCreate(Strict):
    business: OneLineText | None = None
    name: Name
    email: OneLineText = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32, pattern=r"^(\+[1-9][0-9]{6,14})?$")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if value and ("@" not in value or value.startswith("@") or value.endswith("@")):
            raise ValueError("email must be an address like ops@example.com")
        if any(c.isspace() or c in "<>,;" for c in value):
            raise ValueError("email must be a single address without spaces or brackets")
        return value


class ReceiverUpdate(Strict):
    name: Name | None = None
    email: OneLineText | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^(\+[1-9][0-9]{6,14})?$")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return value if value is None else ReceiverCreate._email(value)


class ReceiverOut(BaseModel):
    id: int
    business: str | None
    name: str
    email: str
    phone: str


class GroupCreate(Strict):
    business: OneLineText | None = None
    name: Name
    receiver_ids: Ids = []


class GroupUpdate(Strict):
    name: Name | None = None
    receiver_ids: Ids | None = None


class GroupOut(BaseModel):
    id: int
    business: str | None
    name: str
    receiver_ids: list[int]


# ---------------------------------------------------------------- policies


class Scope(Strict):
    kind: Literal["cluster", "node", "business", "app"]
    cluster: OneLineText | None = Field(default=None, max_length=63)
    node: OneLineText | None = Field(default=None, max_length=253)
    app: OneLineText | None = Field(default=None, max_length=63)


class MessageTemplate(Strict):
    subject: OneLineText = Field(default="", max_length=500)
    body: MultiLineText = Field(default="", max_length=10_000)


class PolicyCreate(Strict):
    business: OneLineText | None = Field(
        default=None, description="owning business; omit for a platform policy (cluster, node)"
    )
    name: PolicyName
    scope: Scope
    metric: OneLineText = Field(min_length=1, max_length=200)
    matchers: LabelMap = Field(default_factory=dict, description="extra label matchers")
    comparison: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float
    for_seconds: int = Field(default=60, ge=0, le=7 * 86400)
    severity: Literal["critical", "warning", "info"] = "warning"
    repeat_seconds: int = Field(default=0, ge=0, le=7 * 86400, description="0: notify once")
    receiver_ids: Ids = []
    group_ids: Ids = []
    channel_ids: Ids = []
    templates: dict[ChannelKind, MessageTemplate] = Field(default_factory=dict)
    summary: MultiLineText = Field(default="", max_length=1000)
    description: MultiLineText = Field(default="", max_length=4000)
    enabled: bool = True

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value


class PolicyUpdate(Strict):
    name: PolicyName | None = None
    matchers: LabelMap | None = None
    comparison: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    threshold: float | None = None
    for_seconds: int | None = Field(default=None, ge=0, le=7 * 86400)
    severity: Literal["critical", "warning", "info"] | None = None
    repeat_seconds: int | None = Field(default=None, ge=0, le=7 * 86400)
    receiver_ids: Ids | None = None
    group_ids: Ids | None = None
    channel_ids: Ids | None = None
    templates: dict[ChannelKind, MessageTemplate] | None = None
    summary: MultiLineText | None = Field(default=None, max_length=1000)
    description: MultiLineText | None = Field(default=None, max_length=4000)
    enabled: bool | None = None

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value


class PolicyOut(BaseModel):
    id: int
    business: str | None
    name: str
    scope: str
    matchers: dict[str, str]
    metric: str
    comparison: str
    threshold: float
    for_seconds: int
    severity: str
    repeat_seconds: int
    enabled: bool
    receiver_ids: list[int]
    group_ids: list[int]
    channel_ids: list[int]
    templates: dict[str, dict[str, str]]
    summary: str
    description: str
    builtin_key: str
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class BuiltinRuleOut(BaseModel):
    key: str
    area: str
    name: str
    metric: str
    comparison: str
    threshold: float
    for_seconds: int
    severity: str
    summary: str


class BuiltinEnable(Strict):
    rules: list[Annotated[OneLineText, Field(max_length=100)]] | None = Field(
        default=None, description="keys of the built-in rules to enable; omit for all"
    )
    receiver_ids: Ids = []
    group_ids: Ids = []
    channel_ids: Ids = []


class BuiltinEnableOut(BaseModel):
    created: list[PolicyOut]
    already_enabled: list[str]


# ---------------------------------------------------------------- silences and records


class SilenceCreate(Strict):
    business: OneLineText | None = None
    matchers: LabelMap = Field(min_length=1)
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime
    comment: MultiLineText = Field(default="", max_length=1000)


class SilenceOut(BaseModel):
    id: int
    business: str | None
    matchers: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    comment: str
    created_by: str
    active: bool


class NotificationOut(BaseModel):
    id: int
    event: str
    channel: str
    channel_kind: str
    receiver: str
    recipients: list[str]
    state: str
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str
    receipt: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


class AlertRecordOut(BaseModel):
    id: int
    business: str | None
    policy_id: int | None
    policy_name: str
    severity: str
    status: str
    labels: dict[str, str]
    summary: str
    metric: str
    comparison: str
    threshold: float | None
    value: float | None
    resolved_value: float | None
    source: str
    started_at: dt.datetime
    fired_at: dt.datetime
    resolved_at: dt.datetime | None
    repeats: int
    silenced_by: int | None
    notifications: list[NotificationOut] | None = None


class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: dt.datetime
    endsAt: dt.datetime | None = None
    fingerprint: str = ""


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[AlertmanagerAlert] = Field(max_length=10_000)


class AlertmanagerResult(BaseModel):
    fired: int
    resolved: int
    duplicates: int
    unrouted: int


class MetricOut(BaseModel):
    """One entry of the metric catalogue (``gaia.monitor.metrics.catalogue``, docs/metrics.md)."""

    name: str
    type: str
    unit: str
    labels: list[str]
    area: str
    help: str


class SeriesOut(BaseModel):
    metric: str
    labels: dict[str, str]
    points: list[tuple[float, float]]
