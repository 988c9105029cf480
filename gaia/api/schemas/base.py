"""Request and response bodies of the HTTP API (pydantic), separate from the ORM models.

Validation happens here, at the edge: names are DNS labels, free text has a length limit and no
control characters (PostgreSQL refuses NUL bytes, which would otherwise surface as a 500), every
number has bounds. Whatever passes is safe to hand to the domain and the store.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from gaia.domain.rbac import Role
from gaia.domain.resources import MAX_AMOUNT, ResourceVector

if TYPE_CHECKING:
    from gaia.store.models import User

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
USERNAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=63)]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, min_length=1, max_length=63)]
DisplayName = Annotated[str, Field(max_length=200), AfterValidator(_no_control_chars)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(_no_control_chars)]
Password = Annotated[str, Field(min_length=8, max_length=256), AfterValidator(_no_control_chars)]
Language = Literal["en", "zh-CN"]
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
Labels = dict[
    Annotated[str, Field(pattern=LABEL_KEY, max_length=317)],
    Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)],
]

# API units: cores and cards may be fractional; the rest are whole units.
_MAX = MAX_AMOUNT // 1000
Cores = Annotated[
    Decimal,
    Field(ge=0, le=_MAX, allow_inf_nan=False, max_digits=20),
    PlainSerializer(float, return_type=float, when_used="json"),
]
Cards = Cores
Whole = Annotated[int, Field(ge=0, le=_MAX)]


T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceAmounts(Strict):
    """Amounts on the eight quota dimensions, in API units."""

    cpu: Cores = Field(default=Decimal(0), description="CPU cores, in steps of 0.001")
    memory: Whole = Field(default=0, description="memory, MiB")
    local_disk: Whole = Field(default=0, description="local disk, GiB")
    cloud_disk: Whole = Field(default=0, description="normal cloud disk, GiB")
    shared_disk: Whole = Field(default=0, description="shared cloud disk, GiB")
    bandwidth: Whole = Field(default=0, description="egress bandwidth, Mbit/s")
    gpu: Cards = Field(default=Decimal(0), description="GPU cards, in steps of 0.01")
    gpu_memory: Whole = Field(default=0, description="GPU memory, MiB")

    def to_vector(self) -> ResourceVector:
        return ResourceVector.from_api(self.model_dump())

    @classmethod
    def from_vector(cls, vector: ResourceVector) -> ResourceAmounts:
        return cls.model_validate(
            {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in vector.to_api().items()}
        )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )


# --- auth, users, tokens -------------------------------------------------------------------


class LoginRequest(Strict):
    username: Annotated[str, Field(min_length=1, max_length=63)]
    password: Annotated[str, Field(min_length=1, max_length=256)]


class UserOut(BaseModel):
    username: str
    display_name: str
    platform_admin: bool
    disabled: bool
    language: str
    created_at: dt.datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            username=user.username,
            display_name=user.display_name,
            platform_admin=user.is_platform_admin,
            disabled=user.disabled,
            language=user.language,
            created_at=user.created_at,
        )


class LoginResponse(BaseModel):
    token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_at: dt.datetime
    user: UserOut


class UserCreate(Strict):
    username: Username
    password: Password
    display_name: DisplayName = ""
    platform_admin: bool = False
    language: Language = "en"


class UserUpdate(Strict):
    display_name: DisplayName | None = None
    language: Language | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="required when changing your own password"
    )
    platform_admin: bool | None = Field(default=None, description="platform admins only")
    disabled: bool | None = Field(default=None, description="platform admins only")


class MembershipOut(BaseModel):
    business: str
    role: Role


class MeOut(UserOut):
    memberships: list[MembershipOut]


class TokenCreate(Strict):
    name: Name
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="omit for a token that lasts until revoked"
    )


class TokenOut(BaseModel):
    id: int
    name: str
    kind: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; store it now")


# --- businesses, members, quotas, instance configurations --------------------------------


class BusinessCreate(Strict):
    name: Name
    display_name: DisplayName = ""
    description: Description = ""
    admins: list[Username] = Field(
        default_factory=list, max_length=50, description="usernames made business-admin"
    )


class BusinessUpdate(Strict):
    display_name: DisplayName | None = None
    description: Description | None = None


class BusinessOut(BaseModel):
    name: str
    display_name: str
    description: str
    created_at: dt.datetime
    role: Role | None = Field(description="the caller's role here; platform-admin sees all")


class MemberPut(Strict):
    role: Literal["business-admin", "developer", "viewer"]


class MemberOut(BaseModel):
    username: str
    display_name: str
    role: Role
    since: dt.datetime


class QuotaPut(Strict):
    hard: ResourceAmounts


class QuotaDimension(BaseModel):
    dimension: str
    unit: str
    used: float | int
    pending: float | int = Field(description="held by reservations not yet confirmed")
    total: float | int
    display: str = Field(description='e.g. "0.3/1 cores"')


class QuotaOut(BaseModel):
    business: str
    cluster: str
    hard: ResourceAmounts
    used: ResourceAmounts
    dimensions: list[QuotaDimension]
    updated_at: dt.datetime


class AdmissionCheck(Strict):
    request: ResourceAmounts
    replicas: Annotated[int, Field(ge=1, le=100000)] = 1
    instance_config: Name | None = Field(
        default=None, description="use a named shape (business or platform) instead of request"
    )


class AdmissionViolation(BaseModel):
    dimension: str
    unit: str
    requested: float | int
    used: float | int
    allowed: float | int


class AdmissionResult(BaseModel):
    admitted: bool
    message: str
    violations: list[AdmissionViolation]


class InstanceConfigIn(Strict):
    name: Name
    description: Description = ""
    resources: ResourceAmounts


class InstanceConfigUpdate(Strict):
    description: Description | None = None
    resources: ResourceAmounts | None = None


class InstanceConfigOut(BaseModel):
    name: str
    scope: Literal["platform", "business"]
    business: str | None
    description: str
    resources: ResourceAmounts
    summary: str = Field(description='e.g. "4 cores, 10240 MiB memory, 2 GPU"')
    created_at: dt.datetime


# --- clusters ------------------------------------------------------------------------------


class SimSpec(Strict):
    nodes: Annotated[int, Field(ge=0, le=5000)] = 4
    cpu: Annotated[int, Field(ge=0, le=1024)] = 32
    memory_mib: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = 128 * 1024
    gpus: Annotated[int, Field(ge=0, le=16)] = 8
    zone: Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)] = ""
    local_disk_gib: Annotated[int, Field(ge=0, le=1024 * 1024)] = 500
    bandwidth_mbps: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    gpu_model: Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)] = "Tesla P40"
    gpu_memory_mib: Annotated[int, Field(ge=0, le=1024 * 1024)] = 24 * 1024
    gpu_topology: (
        Annotated[str, Field(max_length=32)]
        | list[Annotated[list[Annotated[str, Field(max_length=8)]], Field(max_length=16)]]
    ) = Field(
        default="pcie-2socket",
        description='"pcie-2socket", "nvlink", or an nvidia-smi topo -m style matrix',
    )
    labels: Labels = Field(default_factory=dict, max_length=64)


class ClusterCreate(Strict):
    name: Name
    kind: Literal["sim", "kubernetes"]
    region: Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)] = ""
    zone: Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)] = ""
    labels: Labels = Field(default_factory=dict, max_length=64)
    description: Description = ""
    kubeconfig: Annotated[str, Field(max_length=1_000_000)] | None = Field(
        default=None,
        description="kind=kubernetes only; stored encrypted and never returned",
        json_schema_extra={"writeOnly": True},
    )
    sim: SimSpec | None = Field(default=None, description="kind=sim only")


class ClusterUpdate(Strict):
    region: Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)] | None = None
    zone: Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)] | None = None
    labels: Labels | None = Field(default=None, max_length=64)
    description: Description | None = None
    kubeconfig: Annotated[str, Field(max_length=1_000_000)] | None = Field(
        default=None, json_schema_extra={"writeOnly": True}
    )


class ClusterOut(BaseModel):
    name: str
    kind: str
    region: str
    zone: str
    labels: dict[str, str]
    description: str
    has_kubeconfig: bool
    sim: dict[str, Any] | None
    health: str
    health_message: str
    health_checked_at: dt.datetime | None
    health_changed_at: dt.datetime | None
    node_count: int | None
    ready_node_count: int | None
    created_at: dt.datetime


# --- records, events, overview -------------------------------------------------------------


class RecordOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    business: str
    cluster: str
    action: str
    method: str
    path: str
    target: str
    summary: str
    result: Literal["success", "failure"]
    status_code: int
    error: str


class EventOut(BaseModel):
    id: int
    business: str
    cluster: str
    object_kind: str
    object_name: str
    reason: str
    message: str
    type: Literal["Normal", "Warning"]
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    user: str


class UsageLine(BaseModel):
    dimension: str
    unit: str
    used: float | int
    total: float | int


class ClusterOverview(BaseModel):
    name: str
    kind: str
    region: str
    zone: str
    health: str
    node_count: int | None
    ready_node_count: int | None
    businesses: int = Field(description="businesses holding a quota here (visible to you)")
    usage: list[UsageLine] = Field(description="quota used vs allocated, summed over businesses")


class BusinessOverview(BaseModel):
    name: str
    display_name: str
    members: int
    clusters: int
    usage: list[UsageLine] = Field(description="used vs quota, summed over clusters")


class OverviewOut(BaseModel):
    totals: dict[str, int]
    clusters: list[ClusterOverview]
    businesses: list[BusinessOverview]


class ErrorOut(BaseModel):
    code: str
    message: str
    details: Any = None
