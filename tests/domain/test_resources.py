"""Quota arithmetic (gaia.domain.resources): units, steps, and what a rejection says."""

from __future__ import annotations

import pytest

from gaia.domain.errors import InvalidRequest
from gaia.domain.resources import ResourceVector, check_fits, quota_exceeded


def test_fractional_gpu_and_cpu_convert_exactly() -> None:
    v = ResourceVector.from_api({"cpu": 0.3, "gpu": 0.25, "memory": 384})
    assert (v.cpu, v.gpu, v.memory) == (300, 25, 384)
    assert v.to_api()["cpu"] == 0.3
    assert v.to_api()["gpu"] == 0.25
    assert ResourceVector.from_api({"gpu": 2}).to_api()["gpu"] == 2


@pytest.mark.parametrize(
    ("amounts", "fragment"),
    [
        ({"gpu": 0.333}, "steps of 0.01"),
        ({"cpu": 0.0001}, "steps of 0.001"),
        ({"memory": 1.5}, "steps of 1"),
        ({"memory": -1}, "must not be negative"),
        ({"disk": 1}, "unknown resource dimension"),
        ({"cpu": "lots"}, "must be a number"),
        ({"cpu": 10**30}, "larger than the platform allows"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(amounts: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        ResourceVector.from_api(amounts)


def test_check_fits_names_every_overflowing_dimension() -> None:
    hard = ResourceVector.from_api({"cpu": 1, "memory": 1000, "gpu": 1})
    used = ResourceVector.from_api({"cpu": 0.3, "memory": 384})
    ask = ResourceVector.from_api({"cpu": 1, "memory": 100, "gpu": 0.5})
    violations = check_fits(requested=ask, used=used, hard=hard)
    assert [v.dimension for v in violations] == ["cpu"]
    error = quota_exceeded(business="ocr", cluster="bj-1", violations=violations)
    assert "CPU: asked 1 cores, 0.3 cores used of 1 cores allowed" in error.message
    assert error.details["violations"][0] == {
        "dimension": "cpu",
        "unit": "cores",
        "requested": 1,
        "used": 0.3,
        "allowed": 1,
    }


def test_untouched_dimension_does_not_block_after_quota_is_lowered() -> None:
    hard = ResourceVector.from_api({"cpu": 1, "memory": 100})
    used = ResourceVector.from_api({"cpu": 0.5, "memory": 500})  # memory quota lowered below use
    assert check_fits(requested=ResourceVector.from_api({"cpu": 0.5}), used=used, hard=hard) == []
    assert check_fits(requested=ResourceVector.from_api({"memory": 1}), used=used, hard=hard)


def test_release_never_goes_negative() -> None:
    a = ResourceVector.from_api({"cpu": 1})
    assert a.minus(ResourceVector.from_api({"cpu": 2})).cpu == 0


def test_covering_takes_the_larger_amount_on_each_dimension() -> None:
    before = ResourceVector.from_api({"cpu": 2, "gpu": 0.5})
    after = ResourceVector.from_api({"cpu": 1, "gpu": 1, "memory": 64})
    both = ResourceVector.from_api({"cpu": 2, "gpu": 1, "memory": 64})
    assert before.covering(after) == both == after.covering(before)
