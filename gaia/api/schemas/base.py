"""The shared vocabulary of the API's bodies: names, free text, labels, amounts, pages, errors.

The bodies themselves live by resource beside this module (``identity``, ``tenancy``,
``instance_configs``, ``clusters``, ``records``, ``overview``, ``configs``, ``apps``, ``alerts``),
all built from the types here. Validation happens at the edge: names are DNS labels, free text
has a length limit and no control characters (PostgreSQL refuses NUL bytes, which would otherwise
surface as a 500), every number has bounds. Whatever passes is safe to hand to the domain and the
store. See docs/architecture.md, "api".
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from gaia.domain.resources import MAX_AMOUNT, ResourceVector

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
ShortText = Annotated[str, Field(max_length=63), AfterValidator(_no_control_chars)]
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


class ErrorOut(BaseModel):
    code: str
    message: str
    details: Any = None
