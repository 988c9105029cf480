"""Which node a P2P agent speaks for (issue 17; docs/p2p.md, "Threat model").

Every P2P agent call names a node in its body; what the platform answers depends on that name
(the node's own registry account, the node's pieces, the parents chosen for it). So the name must
be proven, not declared. Three proofs, strongest first:

- ``service-account``: a projected ServiceAccount token bound to the agent's pod (audience
  ``gaia-p2p``), which Gaia sends to the cluster's own TokenReview. The API server answers with
  the pod the token is bound to and, since Kubernetes 1.30 (``ServiceAccountTokenPodNodeInfo``),
  the node that pod runs on, in the review's ``user.extra``::

      authentication.kubernetes.io/pod-name  [agent-x7k2p]
      authentication.kubernetes.io/pod-uid   [...]
      authentication.kubernetes.io/node-name [worker-2]

  A token of a deleted pod, an expired one, or one made for another audience is not
  authenticated. The username must be the agents' own ServiceAccount: any pod may mint a token
  for its own account with any audience, and a business's pod on node B must not pass for B's
  agent.
- ``node-token``: ``gaia-p2pn-<64 hex>.<node>``, derived by Gaia from its secret key, the
  cluster and the node: for agents not run in pods, and clusters without TokenReview (sim). A
  platform admin reads it per node.
- ``cluster-token``: the cluster's shared agent token speaks for *any* node. Weaker: whoever
  holds it may ask for any node's registry account and pose as any node to the coordinator. It
  is accepted only where the platform allows it (``GAIA_P2P_SHARED_AGENT_TOKEN``; sim clusters by
  default).

This module holds the rules only (no I/O): reading a TokenReview's answer as an identity, and
checking that a call's node is the identity's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gaia.domain.errors import Forbidden, Unauthenticated

AGENT_AUDIENCE = "gaia-p2p"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

Proof = Literal["service-account", "node-token", "cluster-token"]


@dataclass(frozen=True)
class ReviewedToken:
    """A TokenReview's answer (``authentication.k8s.io/v1``), as the provider read it.

    ``node`` is the bound node: ``extra[node-name]`` or, from an API server older than 1.30, the
    ``spec.nodeName`` of the bound pod when its uid still matches (the provider looks it up);
    empty when neither says."""

    authenticated: bool
    username: str = ""
    audiences: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    node: str = ""
    error: str = ""


@dataclass(frozen=True)
class AgentIdentity:
    """Who is calling: ``node`` is None for the cluster-wide token (it speaks for any node)."""

    proof: Proof
    node: str | None
    pod: str = ""

    def require(self, node: str) -> None:
        """Refuse a call about ``node`` from an agent proven to be another node's."""
        if self.node is not None and self.node != node:
            raise Forbidden(
                f"this agent is node {self.node!r}'s ({self.proof}); it may not act for {node!r}"
            )


def identity_from_review(
    review: ReviewedToken, *, service_account: str, audience: str = AGENT_AUDIENCE
) -> AgentIdentity:
    """The identity a TokenReview proves, or Unauthenticated saying what is wrong.

    ``service_account`` is ``namespace:name`` of the agents' ServiceAccount (the DaemonSet's)."""
    if not review.authenticated:
        raise Unauthenticated(
            "the cluster did not accept the agent's ServiceAccount token"
            + (f": {review.error}" if review.error else "")
            + f" (a projected token for audience {audience!r}, of a pod that still runs)"
        )
    if review.audiences and audience not in review.audiences:
        raise Unauthenticated(f"the agent's token is not for audience {audience!r}")
    expected = SERVICE_ACCOUNT_PREFIX + service_account
    if review.username != expected:
        raise Unauthenticated(
            f"the token is {review.username!r}'s, not the P2P agents' ServiceAccount {expected!r}"
        )
    pods = review.extra.get(POD_NAME_KEY, ())
    if not pods:
        raise Unauthenticated(
            "the agent's token is not bound to a pod: mount a projected serviceAccountToken "
            "(deploy/p2p-agent/daemonset.yaml)"
        )
    if not review.node:
        raise Unauthenticated(
            f"the token is bound to pod {pods[0]!r}, which runs on no node the cluster names"
        )
    return AgentIdentity(proof="service-account", node=review.node, pod=pods[0])


def looks_like_jwt(token: str) -> bool:
    """A ServiceAccount token is a JWS in compact form: three base64url parts, the header
    starting with ``{"`` (``eyJ``). Gaia's own tokens never look like one."""
    parts = token.split(".")
    return len(parts) == 3 and token.startswith("eyJ") and all(parts)
