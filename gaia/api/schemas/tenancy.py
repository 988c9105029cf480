"""Bodies of businesses, their members and their quotas (``gaia.api.routes.businesses``,
``.quotas`` and ``.gpu_models``), with the admission check's question and answer.

Amounts travel as ``ResourceAmounts`` in API units (cores, MiB, GiB, cards); a quota answers both
the amounts and one ``QuotaDimension`` line per dimension, ready to display.
See docs/architecture.md, "api".
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from gaia.api.schemas.base import (
    Cards,
    Description,
    DisplayName,
    Name,
    ResourceAmounts,
    Strict,
    Username,
)
from gaia.domain.rbac import Permission, Role
from gaia.domain.registry import RESERVED_NAMESPACES


class BusinessCreate(Strict):
    name: Name
    display_name: DisplayName = ""
    description: Description = ""
    admins: list[Username] = Field(
        default_factory=list, max_length=50, description="usernames made business-admin"
    )

    @field_validator("name")
    @classmethod
    def _not_a_registry_namespace(cls, value: str) -> str:
        # a business's name is its registry namespace; these two name the other kinds
        if value in RESERVED_NAMESPACES:
            raise ValueError(
                f"'{value}' is reserved: the image registry's personal (u/<user>) and public "
                "namespaces use it"
            )
        return value


class BusinessUpdate(Strict):
    display_name: DisplayName | None = None
    description: Description | None = None


class BusinessOut(BaseModel):
    name: str
    display_name: str
    description: str
    created_at: dt.datetime
    role: Role | None = Field(description="the caller's role here; platform-admin sees all")
    permissions: list[Permission] = Field(
        default_factory=list,
        description="what the caller may do here (from the role, or all for a platform admin): "
        "clients show an action only to whom may take it",
    )


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


class GpuModelLimitIn(Strict):
    cards: Cards = Field(description="cards of this model the business may hold")


class GpuModelLimitOut(Strict):
    model: str
    cards: Cards
