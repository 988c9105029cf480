"""Let a test's fakes on 127.0.0.1 through the egress guard, explicitly.

The guard (``gaia.egress``) refuses loopback by default, as production must. Tests whose far
side is a local fake (``tests.support.http_fakes``, ``tests.support.smtp``) allow-list loopback
the way a platform admin allows a range (``GAIA_EGRESS_ALLOW_CIDRS``): by giving the guard a
policy whose allowed ranges hold 127.0.0.0/8 and ::1. Import the fixture into a module or a
conftest (``from tests.support.egress import allow_loopback_egress``); it is autouse there.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gaia.egress import EgressPolicy, parse_cidrs, policy_override

LOOPBACK_CIDRS = "127.0.0.0/8,::1/128"


@pytest.fixture(autouse=True)
def allow_loopback_egress() -> Iterator[EgressPolicy]:
    with policy_override(EgressPolicy(parse_cidrs(LOOPBACK_CIDRS))) as policy:
        yield policy
