"""Kubernetes quantities (``500m``, ``2Gi``, ``1e3``) as exact decimals, and Gaia's roundings.

What flows in is a quantity as the API server writes it in a ``ResourceList`` (a string, or a JSON
number: ``Quantity.UnmarshalJSON`` takes both); what flows out is an exact ``Decimal`` in the
resource's base unit (cores, bytes, cards), never a float, so that ``31500m`` is 31.5 and not
31.499999. ``ceil_amount`` / ``floor_amount`` turn it into Gaia's integer units: requests round up
(a pod never gets less than it asked for), capacities round down (a node never promises more than
it has); ``clamp_amount`` keeps a result within what a ``ResourceVector`` holds.

The grammar is upstream's (``k8s.io/apimachinery/pkg/api/resource``); the scheduler extender's
tests check it against the upstream parser itself.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext

from gaia.domain.resources import MAX_AMOUNT
from gaia.kube.errors import UnreadableObject

# A signed decimal and a binary-SI suffix, a decimal-SI suffix (n u m "" k M G T P E) or a decimal
# exponent (e3, E-2).
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_BINARY_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_SUFFIX = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_QUANTITY_MAX = Decimal(2**63 - 1)
_NANO = Decimal("1e-9")
_EXACT = Context(prec=80)

MIB = 2**20
GIB = 2**30


def parse_quantity(raw: object) -> Decimal:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``, ``1.5``) as an exact ``Decimal``.

    As upstream (``k8s.io/apimachinery`` ``ParseQuantity``): the same grammar, numbers accepted
    as well as strings (``Quantity.UnmarshalJSON`` does), values finer than 1n rounded up (away
    from zero) to 1n. Unlike upstream, a magnitude above 2^63-1 is refused instead of capped or
    kept: no resource comes near it, and refusing keeps the arithmetic bounded.
    """
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise UnreadableObject(f"{raw!r} is not a quantity")
    text = str(raw).strip()
    match = _QUANTITY.match(text)
    if match is None:
        raise UnreadableObject(
            f"{text!r} is not a quantity (a number with an optional suffix: 500m, 2Gi, 1e3)"
        )
    suffix = match["suffix"] or ""
    too_large = UnreadableObject(f"{text!r} is larger than a quantity can be (2^63-1)")
    with localcontext(_EXACT):
        number = Decimal(match["number"])
        if suffix in _BINARY_SUFFIX:
            exponent, base = _BINARY_SUFFIX[suffix], 2
        elif suffix in _DECIMAL_SUFFIX:
            exponent, base = _DECIMAL_SUFFIX[suffix], 10
        else:
            exponent, base = int(suffix[1:]), 10
        # Bound the work before doing it: an estimate of the decimal magnitude.
        magnitude = number.adjusted() + (exponent if base == 10 else exponent * 3 // 10)
        if number and magnitude > 25:
            raise too_large
        if number and magnitude < -30:
            return _NANO.copy_sign(number)  # anything that small rounds up to 1n
        try:
            value = number * 2**exponent if base == 2 else number.scaleb(exponent)
            if value:
                rounding = ROUND_CEILING if value > 0 else ROUND_FLOOR
                value = value.quantize(_NANO, rounding=rounding)
        except ArithmeticError:  # decimal.InvalidOperation: more digits than 80
            raise too_large from None
    if abs(value) > _QUANTITY_MAX:
        raise too_large
    return value.normalize(_EXACT) if value else Decimal(0)


def ceil_amount(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def floor_amount(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


def clamp_amount(value: int) -> int:
    """An amount within 0..MAX_AMOUNT (what a ResourceVector accepts)."""
    return max(0, min(value, MAX_AMOUNT))
