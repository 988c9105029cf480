"""``AgentAuthenticator``: the bearer token of a P2P agent call, as the node it proves.

```
Authorization: Bearer <token> ──┬─ gaia-p2pn-<mac>.<node> ─> node-token: the MAC under the
                                │                            cluster's key for that node
                                ├─ gaia-p2p-<hex> ─────────> cluster-token: any node, where the
                                │                            shared-token policy allows it
                                └─ a JWT ──> TokenReview ──> service-account: the bound pod's
                                   (cache)   of the cluster   node (gaia.domain.agent_identity)
```

The route asks ``identify`` for every agent call (``gaia.api.routes.p2p``) and then checks that
the body's node is the identity's. An agent calls several times a second while it downloads,
so a TokenReview's positive answer is kept for ``review_cache_s`` (30 s by default, keyed by the
token's SHA-256, at most ``max_cached`` tokens): a pod deleted within that window keeps its
token's identity until the entry expires. Refusals are not kept: the next call asks again.
``identify`` answers None for a token that is none of the three forms (a user's API token, for
the route's 403), and raises ``Unauthenticated``/``Forbidden`` for one that is but fails.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from gaia.clock import Clock
from gaia.controllers.swarm import AGENT_TOKEN_PREFIX, ClusterKey, SwarmCoordinator
from gaia.domain.agent_identity import (
    AGENT_AUDIENCE,
    AgentIdentity,
    identity_from_review,
    looks_like_jwt,
)
from gaia.domain.errors import Forbidden, Unauthenticated
from gaia.providers.port import TokenReviewer
from gaia.security import SecretBox

NODE_TOKEN_PREFIX = "gaia-p2pn-"  # noqa: S105 (a prefix, not a secret)
SharedTokenPolicy = Literal["sim", "all", "none"]


@dataclass(frozen=True)
class AgentCluster:
    """The cluster an agent call is for: its key, its kind (``sim``, ``kubernetes``) and, for a
    real cluster, what reviews its tokens."""

    key: ClusterKey
    kind: str
    reviewer: TokenReviewer | None


class AgentAuthenticator:
    def __init__(
        self,
        *,
        secrets: SecretBox,
        coordinator: SwarmCoordinator,
        clock: Clock,
        service_account: str,
        shared_token_where: SharedTokenPolicy = "sim",  # noqa: S107 (a policy)
        audience: str = AGENT_AUDIENCE,
        review_cache_s: float = 30.0,
        max_cached: int = 4096,
    ) -> None:
        self.secrets = secrets
        self.coordinator = coordinator
        self.clock = clock
        self.service_account = service_account
        self.shared_token_where = shared_token_where
        self.audience = audience
        self.review_cache_s = review_cache_s
        self.max_cached = max_cached
        # (the cluster's key material, sha256 of the token) -> (until, identity)
        self._reviews: OrderedDict[tuple[str, str], tuple[float, AgentIdentity]] = OrderedDict()

    # ---- Gaia's own tokens

    def node_token(self, key: ClusterKey, node: str) -> str:
        """The token that proves ``node`` of this cluster (``gaia-p2pn-<64 hex>.<node>``)."""
        mac = self.secrets.derive_key(f"p2p node token\0{key.material}\0{node}").hex()
        return f"{NODE_TOKEN_PREFIX}{mac}.{node}"

    def shared_token_allowed(self, kind: str) -> bool:
        where = self.shared_token_where
        return where == "all" or (where == "sim" and kind == "sim")

    # ---- identify

    async def identify(self, cluster: AgentCluster, token: str) -> AgentIdentity | None:
        if token.startswith(NODE_TOKEN_PREFIX):
            node = token[len(NODE_TOKEN_PREFIX) :].partition(".")[2]
            if node and hmac.compare_digest(
                token.encode(), self.node_token(cluster.key, node).encode()
            ):
                return AgentIdentity(proof="node-token", node=node)
            raise Unauthenticated("the P2P node token is not valid for this cluster")
        if token.startswith(AGENT_TOKEN_PREFIX):
            if not self.coordinator.is_agent_token(cluster.key, token):
                raise Unauthenticated("the P2P agent token is not valid for this cluster")
            if not self.shared_token_allowed(cluster.kind):
                raise Forbidden(
                    f"cluster {cluster.key.name}'s agents must prove their node: a projected "
                    f"ServiceAccount token (audience {self.audience!r}) or the node's own token "
                    "(GET .../p2p/agent-token?node=<node>); the cluster-wide token is refused "
                    "here (GAIA_P2P_SHARED_AGENT_TOKEN)"
                )
            return AgentIdentity(proof="cluster-token", node=None)
        if not looks_like_jwt(token):
            return None
        if cluster.reviewer is None:
            raise Unauthenticated(
                f"cluster {cluster.key.name} cannot review ServiceAccount tokens ({cluster.kind}):"
                " give its agents their node tokens"
            )
        return await self._reviewed(cluster, token)

    async def _reviewed(self, cluster: AgentCluster, token: str) -> AgentIdentity:
        assert cluster.reviewer is not None
        cache_key = (cluster.key.material, hashlib.sha256(token.encode()).hexdigest())
        now = self.clock.now().timestamp()
        known = self._reviews.get(cache_key)
        if known is not None and known[0] > now:
            return known[1]
        review = await cluster.reviewer.review_token(token, audience=self.audience)
        identity = identity_from_review(
            review, service_account=self.service_account, audience=self.audience
        )
        if self.review_cache_s > 0:
            self._reviews[cache_key] = (now + self.review_cache_s, identity)
            self._reviews.move_to_end(cache_key)
            while len(self._reviews) > self.max_cached:
                self._reviews.popitem(last=False)
        return identity
