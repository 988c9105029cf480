"""Resource vectors and quota arithmetic: the one place that decides whether a request fits.

A business holds a quota per cluster on eight dimensions. Amounts are kept as
integers in the smallest unit each dimension is managed in, so that sums never drift:

=================  ==============  =============================
dimension          internal unit   API unit
=================  ==============  =============================
cpu                millicores      cores (0.001 steps)
memory             MiB             MiB
local_disk         GiB             GiB
cloud_disk         GiB             GiB (normal cloud disk)
shared_disk        GiB             GiB (shared cloud disk)
bandwidth          Mbit/s          Mbit/s (egress)
gpu                1/100 card      cards (0.01 steps: 1, 0.5, 0.3, 0.25, 0.2 ...)
gpu_memory         MiB             MiB
=================  ==============  =============================

``check_fits`` is pure: the store calls it while holding the quota row's lock, and the answer
names each dimension that overflows with what was asked, what is used and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from gaia.domain.errors import InvalidRequest, QuotaExceeded

# (name, internal scale from API unit, API unit label, human label)
DIMENSIONS: tuple[tuple[str, int, str, str], ...] = (
    ("cpu", 1000, "cores", "CPU"),
    ("memory", 1, "MiB", "memory"),
    ("local_disk", 1, "GiB", "local disk"),
    ("cloud_disk", 1, "GiB", "cloud disk"),
    ("shared_disk", 1, "GiB", "shared cloud disk"),
    ("bandwidth", 1, "Mbit/s", "egress bandwidth"),
    ("gpu", 100, "cards", "GPU"),
    ("gpu_memory", 1, "MiB", "GPU memory"),
)
DIMENSION_NAMES = tuple(d[0] for d in DIMENSIONS)
_SCALE = {d[0]: d[1] for d in DIMENSIONS}
_UNIT = {d[0]: d[2] for d in DIMENSIONS}
_LABEL = {d[0]: d[3] for d in DIMENSIONS}

# No single dimension may exceed this many internal units; it keeps every sum far inside a
# signed 64-bit column on any database (about 9.2e18).
MAX_AMOUNT = 10**15


@dataclass(frozen=True, slots=True)
class ResourceVector:
    """An amount on every quota dimension, in internal units (see the module docstring)."""

    cpu: int = 0
    memory: int = 0
    local_disk: int = 0
    cloud_disk: int = 0
    shared_disk: int = 0
    bandwidth: int = 0
    gpu: int = 0
    gpu_memory: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequest(f"{f.name} must be an integer amount, got {value!r}")
            if value < 0:
                raise InvalidRequest(f"{_LABEL[f.name]} must not be negative")
            if value > MAX_AMOUNT:
                raise InvalidRequest(f"{_LABEL[f.name]} is larger than the platform allows")

    def __add__(self, other: ResourceVector) -> ResourceVector:
        return ResourceVector(**{n: getattr(self, n) + getattr(other, n) for n in DIMENSION_NAMES})

    def minus(self, other: ResourceVector) -> ResourceVector:
        """Subtract, flooring at zero (releasing more than is used never goes negative)."""
        return ResourceVector(
            **{n: max(0, getattr(self, n) - getattr(other, n)) for n in DIMENSION_NAMES}
        )

    def covering(self, other: ResourceVector) -> ResourceVector:
        """The larger amount on each dimension: what holds both (an upgrade admits the larger of
        the app's demand before and after, so neither end of the upgrade can be refused)."""
        return ResourceVector(
            **{n: max(getattr(self, n), getattr(other, n)) for n in DIMENSION_NAMES}
        )

    def scaled(self, factor: int) -> ResourceVector:
        if factor < 0:
            raise InvalidRequest("a resource multiplier must not be negative")
        return ResourceVector(**{n: getattr(self, n) * factor for n in DIMENSION_NAMES})

    def is_zero(self) -> bool:
        return all(getattr(self, n) == 0 for n in DIMENSION_NAMES)

    def as_internal(self) -> dict[str, int]:
        return {n: getattr(self, n) for n in DIMENSION_NAMES}

    def to_api(self) -> dict[str, float | int]:
        """Amounts in API units: integers where the scale is 1, decimals otherwise."""
        out: dict[str, float | int] = {}
        for n in DIMENSION_NAMES:
            out[n] = to_api_amount(n, getattr(self, n))
        return out

    @classmethod
    def from_api(cls, amounts: dict[str, Any]) -> ResourceVector:
        """Build from API units; rejects unknown dimensions and amounts finer than the unit step."""
        unknown = set(amounts) - set(DIMENSION_NAMES)
        if unknown:
            raise InvalidRequest(
                f"unknown resource dimension(s): {', '.join(sorted(unknown))}",
                details={"allowed": list(DIMENSION_NAMES)},
            )
        values = {}
        for name, raw in amounts.items():
            if raw is None:
                continue
            values[name] = from_api_amount(name, raw)
        return cls(**values)


def from_api_amount(dimension: str, raw: Any) -> int:
    """Convert an API amount (cores, cards, MiB, ...) to internal units, exactly."""
    if isinstance(raw, bool):
        raise InvalidRequest(f"{_LABEL[dimension]} must be a number")
    try:
        amount = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidRequest(f"{_LABEL[dimension]} must be a number, got {raw!r}") from None
    if not amount.is_finite():
        raise InvalidRequest(f"{_LABEL[dimension]} must be a finite number")
    if amount < 0:
        raise InvalidRequest(f"{_LABEL[dimension]} must not be negative")
    scaled = amount * _SCALE[dimension]
    if scaled != scaled.to_integral_value():
        step = Decimal(1) / _SCALE[dimension]
        raise InvalidRequest(
            f"{_LABEL[dimension]} is given in steps of {step} {_UNIT[dimension]}, got {raw}"
        )
    value = int(scaled)
    if value > MAX_AMOUNT:
        raise InvalidRequest(f"{_LABEL[dimension]} is larger than the platform allows")
    return value


def to_api_amount(dimension: str, value: int) -> float | int:
    scale = _SCALE[dimension]
    if value % scale == 0:
        return value // scale
    return value / scale


def describe(dimension: str, value: int) -> str:
    """A human amount with its unit, as the console and error messages show it."""
    return f"{to_api_amount(dimension, value)} {_UNIT[dimension]}"


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    dimension: str
    requested: int
    used: int
    allowed: int

    def to_details(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "unit": _UNIT[self.dimension],
            "requested": to_api_amount(self.dimension, self.requested),
            "used": to_api_amount(self.dimension, self.used),
            "allowed": to_api_amount(self.dimension, self.allowed),
        }

    def sentence(self) -> str:
        return (
            f"{_LABEL[self.dimension]}: asked {describe(self.dimension, self.requested)}, "
            f"{describe(self.dimension, self.used)} used of "
            f"{describe(self.dimension, self.allowed)} allowed"
        )


def check_fits(
    *, requested: ResourceVector, used: ResourceVector, hard: ResourceVector
) -> list[QuotaViolation]:
    """Every dimension on which ``used + requested`` would exceed ``hard``.

    A dimension the request does not touch never blocks it, even when an administrator has
    lowered the quota below what is already in use: shrinking a quota stops growth, it does not
    make unrelated requests fail.
    """
    violations = []
    for name in DIMENSION_NAMES:
        ask = getattr(requested, name)
        if ask == 0:
            continue
        in_use = getattr(used, name)
        limit = getattr(hard, name)
        if in_use + ask > limit:
            violations.append(QuotaViolation(name, ask, in_use, limit))
    return violations


def quota_exceeded(
    *, business: str, cluster: str, violations: list[QuotaViolation]
) -> QuotaExceeded:
    parts = "; ".join(v.sentence() for v in violations)
    return QuotaExceeded(
        f"quota of business '{business}' in cluster '{cluster}' exceeded: {parts}. "
        "Ask a platform administrator to raise the quota, or free resources first.",
        details={
            "business": business,
            "cluster": cluster,
            "violations": [v.to_details() for v in violations],
        },
    )
