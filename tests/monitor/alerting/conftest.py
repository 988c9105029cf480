"""The channels here talk to fakes on 127.0.0.1: loopback is allow-listed for the egress guard
(``tests.support.egress``), exactly as an admin would with ``GAIA_EGRESS_ALLOW_CIDRS``."""

from tests.support.egress import allow_loopback_egress

__all__ = ["allow_loopback_egress"]
