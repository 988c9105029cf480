"""The rules that read a TokenReview's answer as a P2P agent's node (gaia.domain.agent_identity);
the real API server's answers are in tests/api/test_p2p_identity.py."""

from __future__ import annotations

import pytest

from gaia.domain.agent_identity import (
    NODE_NAME_KEY,
    POD_NAME_KEY,
    AgentIdentity,
    ReviewedToken,
    identity_from_review,
    looks_like_jwt,
)
from gaia.domain.errors import Forbidden, Unauthenticated

ACCOUNT = "gaia-system:gaia-p2p-agent"


def review(**changes: object) -> ReviewedToken:
    base: dict[str, object] = {
        "authenticated": True,
        "username": "system:serviceaccount:gaia-system:gaia-p2p-agent",
        "audiences": ("gaia-p2p",),
        "extra": {POD_NAME_KEY: ("agent-x",), NODE_NAME_KEY: ("node-a",)},
        "node": "node-a",
    }
    return ReviewedToken(**{**base, **changes})  # type: ignore[arg-type]


def test_a_pod_bound_token_of_the_agents_account_proves_its_node() -> None:
    identity = identity_from_review(review(), service_account=ACCOUNT)
    assert identity == AgentIdentity(proof="service-account", node="node-a", pod="agent-x")
    identity.require("node-a")
    with pytest.raises(Forbidden, match="node-a"):
        identity.require("node-b")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"authenticated": False, "error": "token has expired"}, "token has expired"),
        ({"audiences": ("https://kubernetes.default.svc",)}, "audience"),
        ({"username": "system:serviceaccount:alpha:default"}, "not the P2P agents'"),
        ({"extra": {}, "node": ""}, "not bound to a pod"),
        ({"extra": {POD_NAME_KEY: ("agent-x",)}, "node": ""}, "runs on no node"),
    ],
)
def test_what_does_not_prove_a_node(changes: dict[str, object], why: str) -> None:
    with pytest.raises(Unauthenticated, match=why):
        identity_from_review(review(**changes), service_account=ACCOUNT)


def test_the_cluster_wide_token_speaks_for_any_node() -> None:
    AgentIdentity(proof="cluster-token", node=None).require("any-node")


def test_only_a_compact_jws_is_taken_for_a_service_account_token() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    for token in ("gaia_abc", "gaia-p2p-" + "0" * 64, "eyJ.a", "eyJa..c", "abc.def.ghi"):
        assert not looks_like_jwt(token)
