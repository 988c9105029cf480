"""Pure rules of P2P image distribution (issue 17; docs/p2p.md): the piece geometry and the
coordinator's swarm state.

The agent and the coordinator share the geometry (``piece_size``, ``piece_count``,
``piece_range``), so both cut a blob the same way. ``SwarmCluster`` is the coordinator's state
of one cluster: the agents, one ``Swarm`` per blob (holders per piece, leases, registry fetches
in flight, demotions, piece hashes), and the one decision that matters, ``schedule``: which
piece a node fetches from which parent, or from the registry only when no node holds the piece
and no node is fetching it from the registry. No I/O: every call takes ``now`` and, where it
chooses, a ``random.Random``; ``gaia.controllers.swarm`` wraps it with long-polls, tickets and
figures.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from gaia.domain.errors import Conflict, InvalidRequest, NotFound

MIN_PIECE = 1 << 20  # 1 MiB
MAX_PIECE = 16 << 20  # 16 MiB
TARGET_PIECES = 128


def piece_size(size: int) -> int:
    """The smallest power of two at least ``size / TARGET_PIECES``, within [1 MiB, 16 MiB]."""
    if size < 0:
        raise ValueError(f"a blob size cannot be negative: {size}")
    wanted = -(-size // TARGET_PIECES)  # ceil
    piece = MIN_PIECE
    while piece < wanted and piece < MAX_PIECE:
        piece <<= 1
    return piece


def piece_count(size: int, piece: int) -> int:
    """Pieces of a blob of ``size`` bytes; an empty blob still has one (empty) piece."""
    return max(1, -(-size // piece))


def piece_range(index: int, size: int, piece: int) -> tuple[int, int]:
    """Bytes ``[start, end)`` of piece ``index``."""
    if not 0 <= index < piece_count(size, piece):
        raise ValueError(f"piece {index} is outside a blob of {size} bytes in pieces of {piece}")
    start = index * piece
    return start, min(start + piece, size)


# ---------------------------------------------------------------- the coordinator's swarm state
#
# One ``SwarmCluster`` per cluster: the agents (nodes) it knows and one ``Swarm`` per blob. It is
# pure: every call takes ``now`` (seconds, any monotonic-enough clock) and, where it chooses, a
# ``random.Random``, so a test replays it exactly. The controller (gaia.controllers.swarm) owns
# one per cluster, calls it from one event loop (no locks: nothing here awaits), and wakes
# long-polls after a change.
#
# Upload slots are node-wide (a parent's bandwidth serves every blob), so they are counted here,
# across the cluster's swarms, from the peer leases in flight.

LEASE_S = 30.0  # an assignment unreported for this long is cancelled
# registry pieces one node fetches at once for one blob: the rest of the blob's pieces are left
# to other nodes, so the registry's uplink is shared among many downlinks from the start
# instead of one node taking the whole blob (and everyone else waiting for it)
SOURCE_SLOTS = 2
# registry pieces in flight for the whole cluster (every blob): the registry's uplink is shared
# by every fetch at once, so more of them do not bring the bytes sooner, they only make each
# piece slower. Without a bound, 32 nodes opening 5 blobs took all 196 pieces at once; at
# 50 Mbit/s each then took ~33 s, past LEASE_S, and 28 were fetched twice (bench/p2p.py,
# 2026-12-06). 16 pieces of 1 MiB finish within LEASE_S down to about 5 Mbit/s, and a piece
# that arrives early is passed on between peers while the rest come in.
REGISTRY_SLOTS = 16
DEMOTION_S = 60.0  # a parent that failed a node is chosen last for it for this long
FORGET_HEARTBEATS = 3  # a node whose heartbeat lapses this many periods is forgotten
REGISTRY = None  # a lease's or report's parent when the source is the registry


@dataclass
class AgentNode:
    name: str
    zone: str
    address: str  # host:port of its peer server
    upload_slots: int
    last_seen: float


@dataclass(frozen=True, slots=True)
class Lease:
    node: str
    piece: int
    parent: str | None  # None: the registry
    expires: float
    id: int = 0  # unique in its cluster: a report names the lease it ends


@dataclass(frozen=True, slots=True)
class Grant:
    """One assignment: fetch ``piece`` from ``parent`` (at ``address``) or from the registry;
    ``lease`` is the id its report echoes."""

    piece: int
    parent: str | None
    address: str | None
    lease: int = 0

    @property
    def source(self) -> str:
        return "registry" if self.parent is None else "peer"


@dataclass
class SwarmFigures:
    """What one blob's swarm has moved; kept after the swarm's details are dropped."""

    pieces_from_peers: int = 0
    pieces_from_registry: int = 0
    bytes_from_peers: int = 0
    bytes_from_registry: int = 0
    registry_assignments: int = 0  # registry leases granted (more than pieces: a refetch)
    registry_pieces: int = 0  # distinct pieces ever assigned to the registry
    corrupt_reports: int = 0
    hash_conflicts: int = 0


@dataclass(frozen=True, slots=True)
class ClusterP2PFigures:
    """One cluster's totals, for the platform's /metrics."""

    cluster: str
    figures: SwarmFigures
    swarms: int
    agents: int

    @property
    def registry_fetches_per_piece(self) -> float:
        """Registry assignments per piece ever assigned to the registry: 1.0 is exactly once."""
        f = self.figures
        return f.registry_assignments / f.registry_pieces if f.registry_pieces else 0.0


@dataclass
class Swarm:
    """One blob: who holds which piece, who fetches which from whom, the pieces' hashes."""

    digest: str
    size: int
    piece_size: int
    pieces: int
    holders: list[set[str]]
    hashes: dict[int, str] = field(default_factory=dict)
    leases: dict[tuple[str, int], Lease] = field(default_factory=dict)  # (node, piece)
    registry_inflight: dict[int, str] = field(default_factory=dict)  # piece -> node fetching it
    demoted: dict[tuple[str, str], float] = field(default_factory=dict)  # (node, parent) -> until
    ever_from_registry: set[int] = field(default_factory=set)
    complete: set[str] = field(default_factory=set)  # nodes that reported the blob verified
    # (node, piece) -> the lease its last report named: the same report again (an agent that
    # sends a call again when the answer was lost) is recognised and changes nothing
    reported: dict[tuple[str, int], int] = field(default_factory=dict)
    figures: SwarmFigures = field(default_factory=SwarmFigures)
    last_active: float = 0.0

    @classmethod
    def new(cls, *, digest: str, size: int, now: float) -> Swarm:
        piece = piece_size(size)
        count = piece_count(size, piece)
        return cls(
            digest=digest,
            size=size,
            piece_size=piece,
            pieces=count,
            holders=[set() for _ in range(count)],
            last_active=now,
        )

    def held_by(self, node: str) -> int:
        return sum(1 for h in self.holders if node in h)

    def holds_all(self, node: str) -> bool:
        return all(node in h for h in self.holders)

    def check_piece(self, piece: int) -> None:
        if not 0 <= piece < self.pieces:
            raise InvalidRequest(
                f"piece {piece} is outside blob {self.digest} ({self.pieces} pieces)"
            )


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    accepted: bool  # False: a registry hash that contradicts the first one (refused)
    new_holder: bool
    repeated: bool = False  # the report of a lease already reported: nothing changed


class SwarmCluster:
    """The swarms of one cluster and the agents that take part in them."""

    def __init__(
        self, *, lease_s: float = LEASE_S, demotion_s: float = DEMOTION_S, first_lease: int = 1
    ) -> None:
        self.lease_s = lease_s
        self.demotion_s = demotion_s
        # lease ids: the coordinator starts them at a random number, so a report sent to a
        # process before its restart does not name a lease of the new one
        self._lease_ids = itertools.count(first_lease)
        self.nodes: dict[str, AgentNode] = {}
        self.swarms: dict[str, Swarm] = {}
        self.uploads: dict[str, int] = {}  # parent -> peer leases in flight, across swarms

    # ---- nodes

    def heartbeat(
        self, *, name: str, zone: str, address: str, upload_slots: int, now: float
    ) -> AgentNode:
        node = self.nodes.get(name)
        if node is None:
            node = AgentNode(name, zone, address, upload_slots, now)
            self.nodes[name] = node
        else:
            node.zone, node.address, node.upload_slots, node.last_seen = (
                zone,
                address,
                upload_slots,
                now,
            )
        return node

    def declare_held(self, *, node: str, digest: str, pieces: Iterable[int]) -> None:
        """A registering agent's pieces of a blob the coordinator already knows (a blob it does
        not know is skipped: its size, and so its pieces, are not known yet)."""
        swarm = self.swarms.get(digest)
        if swarm is None or node not in self.nodes:
            return
        for piece in pieces:
            if 0 <= piece < swarm.pieces:
                swarm.holders[piece].add(node)

    def forget(self, name: str) -> None:
        """The node is gone: its pieces, its leases and the leases others had from it."""
        self.nodes.pop(name, None)
        for swarm in self.swarms.values():
            for holders in swarm.holders:
                holders.discard(name)
            swarm.complete.discard(name)
            for key, lease in list(swarm.leases.items()):
                if lease.node == name or lease.parent == name:
                    self._end_lease(swarm, key)
            for pair in [p for p in swarm.demoted if name in p]:
                del swarm.demoted[pair]
        self.uploads.pop(name, None)

    def lapsed(self, *, now: float, heartbeat_s: float) -> list[str]:
        """Nodes whose heartbeat lapsed for ``FORGET_HEARTBEATS`` periods."""
        limit = now - FORGET_HEARTBEATS * heartbeat_s
        return [n.name for n in self.nodes.values() if n.last_seen < limit]

    def known_node(self, name: str) -> AgentNode:
        node = self.nodes.get(name)
        if node is None:
            raise NotFound(f"node '{name}' is not registered: POST agents first")
        return node

    # ---- swarms

    def open(self, *, digest: str, size: int, now: float) -> Swarm:
        swarm = self.swarms.get(digest)
        if swarm is None:
            swarm = Swarm.new(digest=digest, size=size, now=now)
            self.swarms[digest] = swarm
        elif swarm.size != size:
            raise Conflict(
                f"blob {digest} is known with size {swarm.size}, not {size}: a digest names "
                "one content"
            )
        swarm.last_active = now
        return swarm

    def swarm(self, digest: str) -> Swarm:
        swarm = self.swarms.get(digest)
        if swarm is None:
            raise NotFound(f"blob {digest} has no swarm: POST tasks first")
        return swarm

    def drop(self, digest: str) -> Swarm | None:
        swarm = self.swarms.pop(digest, None)
        if swarm is not None:
            for key in list(swarm.leases):
                self._end_lease(swarm, key)
        return swarm

    # ---- leases

    def free_slots(self, parent: str) -> int:
        node = self.nodes.get(parent)
        if node is None:
            return 0
        return node.upload_slots - self.uploads.get(parent, 0)

    def schedule(
        self, *, node: str, digest: str, want: int, now: float, rng: random.Random
    ) -> list[Grant]:
        """Up to ``want`` new leases for ``node`` on blob ``digest``, rarest pieces first.

        A piece goes to a parent that holds it and has a free upload slot (chosen by: not
        demoted for this node, same zone, least loaded for its slots, most pieces of the blob);
        to the registry only when no node holds it and no registry fetch of it is in flight,
        at most ``SOURCE_SLOTS`` registry fetches of this blob per node and ``REGISTRY_SLOTS``
        for the whole cluster at a time; otherwise it waits (a holder will free a slot, or the
        registry fetch will end)."""
        me = self.known_node(node)
        # a node that asks is alive: an overloaded coordinator that answers heartbeats late
        # must not forget a node in the middle of its downloads (it would answer 404, and the
        # node's blob would go to the registry)
        me.last_seen = max(me.last_seen, now)
        swarm = self.swarm(digest)
        swarm.last_active = now
        wanted = [
            p
            for p in range(swarm.pieces)
            if node not in swarm.holders[p] and (node, p) not in swarm.leases
        ]
        # rarest first, random among equals (the random key is drawn in piece order, so a
        # seeded Random replays the same choice)
        keys = {p: (len(swarm.holders[p]), rng.random()) for p in wanted}
        wanted.sort(key=keys.__getitem__)
        grants: list[Grant] = []
        from_registry = sum(len(s.registry_inflight) for s in self.swarms.values())
        for piece in wanted:
            if len(grants) >= want:
                break
            holders = swarm.holders[piece]
            if holders:
                parent = self._choose_parent(swarm, me, holders, now)
                if parent is None:
                    continue  # every holder is busy: wait for a slot
                lease = self._grant(swarm, node, piece, parent.name, now)
                grants.append(Grant(piece, parent.name, parent.address, lease))
            elif (
                piece not in swarm.registry_inflight
                and from_registry < REGISTRY_SLOTS
                and sum(1 for n in swarm.registry_inflight.values() if n == node) < SOURCE_SLOTS
            ):
                lease = self._grant(swarm, node, piece, REGISTRY, now)
                grants.append(Grant(piece, None, None, lease))
                from_registry += 1
        return grants

    def _choose_parent(
        self, swarm: Swarm, me: AgentNode, holders: set[str], now: float
    ) -> AgentNode | None:
        best: tuple[tuple[bool, bool, float, int, str], AgentNode] | None = None
        for name in holders:
            parent = self.nodes.get(name)
            if parent is None or name == me.name or self.free_slots(name) <= 0:
                continue
            demoted = swarm.demoted.get((me.name, name), 0.0) > now
            load = self.uploads.get(name, 0) / max(parent.upload_slots, 1)
            key = (demoted, parent.zone != me.zone, load, -swarm.held_by(name), name)
            if best is None or key < best[0]:
                best = (key, parent)
        return None if best is None else best[1]

    def _grant(self, swarm: Swarm, node: str, piece: int, parent: str | None, now: float) -> int:
        lease = next(self._lease_ids)
        swarm.leases[(node, piece)] = Lease(node, piece, parent, now + self.lease_s, lease)
        if parent is None:
            swarm.registry_inflight[piece] = node
            swarm.figures.registry_assignments += 1
            if piece not in swarm.ever_from_registry:
                swarm.ever_from_registry.add(piece)
                swarm.figures.registry_pieces += 1
        else:
            self.uploads[parent] = self.uploads.get(parent, 0) + 1
        return lease

    def _end_lease(self, swarm: Swarm, key: tuple[str, int]) -> Lease | None:
        lease = swarm.leases.pop(key, None)
        if lease is None:
            return None
        if lease.parent is None:
            if swarm.registry_inflight.get(lease.piece) == lease.node:
                del swarm.registry_inflight[lease.piece]
        else:
            left = self.uploads.get(lease.parent, 0) - 1
            if left > 0:
                self.uploads[lease.parent] = left
            else:
                self.uploads.pop(lease.parent, None)
        return lease

    def expire(self, now: float) -> int:
        """Cancel leases past their time and demotions past theirs; how many leases ended."""
        ended = 0
        for swarm in self.swarms.values():
            for key, lease in list(swarm.leases.items()):
                if lease.expires <= now:
                    self._end_lease(swarm, key)
                    ended += 1
            for pair, until in list(swarm.demoted.items()):
                if until <= now:
                    del swarm.demoted[pair]
        return ended

    # ---- reports

    def report(
        self,
        *,
        node: str,
        digest: str,
        piece: int,
        ok: bool,
        sha256: str | None,
        parent: str | None,
        size: int,
        reason: str | None,
        now: float,
        lease: int | None = None,
    ) -> ReportOutcome:
        """One piece's outcome: the lease ends; on success the node holds the piece.

        ``lease`` (the grant's id, which agents since 2026-12-06 echo) makes a report idempotent:
        the report of a lease already reported changes nothing (no bytes, no piece counted
        twice, no hash, no demotion). An agent sends a ``schedule`` call again when its answer
        did not arrive in time, though the coordinator took its reports. Why not "the node
        already holds the piece": agents declare the pieces of their downloads in every
        heartbeat (``pieces_held``), so a heartbeat may land between a piece's arrival and its
        report, and the first report would not count. A failed report ends the node's lease
        of the piece only if it names it (or names none): a newer lease of the same piece is
        another attempt. Reports without ``lease`` (older agents) count every time."""
        swarm = self.swarm(digest)
        swarm.check_piece(piece)
        swarm.last_active = now
        key = (node, piece)
        if lease is not None:
            if swarm.reported.get(key) == lease:
                return ReportOutcome(accepted=True, new_holder=False, repeated=True)
            swarm.reported[key] = lease
        current = swarm.leases.get(key)
        if ok or lease is None or (current is not None and current.id == lease):
            self._end_lease(swarm, key)
        figures = swarm.figures
        if not ok:
            if parent is not None:
                swarm.demoted[(node, parent)] = now + self.demotion_s
                if reason == "corrupt":
                    figures.corrupt_reports += 1
                if reason in ("corrupt", "missing"):
                    # its copy is bad or gone: it no longer counts as holding the piece
                    swarm.holders[piece].discard(parent)
                elif reason == "unreachable":
                    # nothing answers at its address: its pieces of this blob are not to be had
                    # until it announces them again (its next heartbeat, if it is alive)
                    for holders in swarm.holders:
                        holders.discard(parent)
            return ReportOutcome(accepted=True, new_holder=False)
        if parent is None:
            known = swarm.hashes.get(piece)
            if known is None and sha256:
                swarm.hashes[piece] = sha256
            elif known is not None and sha256 != known:
                # first registry report wins: a second, different one is refused
                figures.hash_conflicts += 1
                return ReportOutcome(accepted=False, new_holder=False)
            figures.pieces_from_registry += 1
            figures.bytes_from_registry += size
        else:
            figures.pieces_from_peers += 1
            figures.bytes_from_peers += size
        new = node not in swarm.holders[piece]
        if node in self.nodes:
            swarm.holders[piece].add(node)
        return ReportOutcome(accepted=True, new_holder=new)

    def done(self, *, node: str, digest: str, ok: bool, evicted: bool, now: float) -> None:
        """The node verified the whole blob (``ok``), or dropped it (not ok, or ``evicted``)."""
        swarm = self.swarm(digest)
        swarm.last_active = now
        if ok and not evicted:
            if node in self.nodes:
                for holders in swarm.holders:
                    holders.add(node)
                swarm.complete.add(node)
            return
        for holders in swarm.holders:
            holders.discard(node)
        swarm.complete.discard(node)
        for key in [k for k in swarm.leases if k[0] == node]:
            self._end_lease(swarm, key)
