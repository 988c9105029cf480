"""``SwarmCoordinator``: the coordinator of P2P image distribution (issue 17; docs/p2p.md).

```
agent ─ POST agents ────────────> register / heartbeat ─> SwarmCluster.heartbeat (+ prewarm jobs)
agent ─ POST tasks ─────────────> open ────────────────> SwarmCluster.open (a Swarm per blob)
agent ─ POST .../schedule ──────> schedule ─┬─> SwarmCluster.schedule: leases now, or
                                            └─> wait (≤ wait_s) until a change wakes it
agent ─ POST .../reports|done ──> report / done ────────> holders, hashes, figures; wake waiters
SwarmSweep (LoopService) ───────> sweep ───────────────> expire leases, forget lapsed nodes,
                                                         retire idle swarms; wake waiters
```

The decisions are the pure ``gaia.domain.swarm.SwarmCluster`` (one per cluster); this room adds
what needs a clock, a key or an event loop: long-polls (one ``asyncio.Event`` per cluster,
replaced on every change, so a waiter wakes once per change and asks the state again), tickets,
the agent token and the ticket keys (derived from the platform's secret key, so replicas agree),
open tasks, per-image and per-node figures, and prewarm jobs: asked for through the API, or
declared by an owner (``declare_prewarm``, one job per owner, replaced or withdrawn by its next
wish: the gray upgrades' pre-pull on a real cluster, through ``SwarmPrewarms``).

Tickets (docs/p2p.md, "Threat model"): every parent node has its own ticket key,
``derive(cluster, parent)``, handed to that node alone (its ``POST agents`` answer); its peer
server verifies tickets with it and nothing else. Each peer assignment of a ``schedule`` answer
carries its own ticket, ``"{requester}.{digest}.{piece}.{expires}.{mac}"`` MACed under the
*parent's* key (without ``{piece}``, opening the whole blob, for parents whose agents did not
announce ``tickets: 2``: older peer servers refuse a fifth field). Each assignment also carries
its lease id, which the agent's report echoes: a report sent twice counts once. So a node's
root, which knows only its own key, can mint tickets for its own peer server
and no other; and the coordinator hands out tickets only for blobs a node has an open task for
(``open_task``, which the API calls only after the node's access check passed).

Everything is in memory, in this process, and touched only from its event loop (no call here
awaits in the middle of a change, so no locks). A restart forgets the swarms: agents re-register
with what they hold, and the registry is asked again for pieces nobody declared. Several replicas
do not share swarms (HA is a later issue).

Memory is bounded: at most ``max_swarms`` swarms per cluster (the least recently active idle one
is retired to make room); a swarm idle for ``idle_s`` is retired: its leases and holders go, its
figures, hashes and the nodes that hold the whole blob are kept as a ``RetiredBlob`` (at most
``max_retired`` per cluster), from which a later ``open`` revives it. Images seen and prewarms are
capped alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import re
import uuid
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gaia.clock import Clock
from gaia.domain.clusters import cluster_key_material
from gaia.domain.errors import InvalidRequest, NotFound, TooManyRequests
from gaia.domain.swarm import (
    ClusterP2PFigures,
    Swarm,
    SwarmCluster,
    SwarmFigures,
    piece_count,
    piece_size,
)
from gaia.loop import LoopService
from gaia.security import SecretBox

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_REPOSITORY = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
AGENT_TOKEN_PREFIX = "gaia-p2p-"  # noqa: S105 (a prefix, not a secret)
# the ticket version of peer servers that check the piece a ticket names (``tickets`` in their
# registration); older ones check node, blob and expiry, and refuse a ticket with a fifth field
PIECE_TICKETS = 2
_LEASE_START = random.SystemRandom()  # not the seeded rng: tests replay its draws
MAX_LEAF_DEPTH = 3  # an index of manifests of blobs, and one level to spare


@dataclass(frozen=True, slots=True)
class ClusterKey:
    """A cluster as the coordinator keys it: id and salt make a re-registered cluster of the
    same name a new one (new tokens, new keys, a fresh swarm state), the name labels figures.

    The salt (``clusters.key_salt``, migration 0016) is random per registration, because
    SQLite gives a deleted cluster's id to the next one; it is empty for clusters registered
    before it, so their derived keys did not change."""

    id: int
    name: str
    salt: str = ""

    @property
    def material(self) -> str:
        """What every key and token of this cluster is derived from, beside its purpose."""
        return cluster_key_material(id=self.id, name=self.name, salt=self.salt)


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str
    repository: str
    reference: str  # a tag, or a digest

    def __str__(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.registry}/{self.repository}{sep}{self.reference}"

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """``registry/repository:tag`` or ``registry/repository@sha256:...``, as containerd
        names images: no registry host (no ``.`` or ``:`` in the first part, and not
        ``localhost``) is Docker Hub, ``docker.io``, with ``library/`` for a one-part name;
        no tag is ``latest``."""
        rest, at, digest = image.partition("@")
        if at:
            if not _DIGEST.fullmatch(digest):
                raise InvalidRequest(f"'{digest}' is not a sha256 digest", details={"image": image})
            reference = digest
        else:
            slash = rest.rfind("/")
            colon = rest.rfind(":")
            if colon > slash:
                rest, reference = rest[:colon], rest[colon + 1 :]
            else:
                reference = "latest"
            if not _TAG.fullmatch(reference):
                raise InvalidRequest(f"'{reference}' is not a tag", details={"image": image})
        first, slash_, remainder = rest.partition("/")
        if slash_ and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, remainder
        else:
            registry = "docker.io"
            repository = rest if "/" in rest else f"library/{rest}"
        if not _REPOSITORY.fullmatch(repository) or len(repository) > 255:
            raise InvalidRequest(
                f"'{repository}' is not a repository name (lower-case path components)",
                details={"image": image},
            )
        return cls(registry=registry, repository=repository, reference=reference)


@dataclass(frozen=True, slots=True)
class PieceOutcome:
    piece: int
    ok: bool
    sha256: str | None
    parent: str | None
    bytes: int
    reason: str | None
    lease: int | None = None  # the assignment's lease, as its answer gave it (wire 2 agents)


@dataclass(frozen=True, slots=True)
class TicketedGrant:
    """A grant with the ticket its parent's peer server takes ("" for the registry) and the
    lease id its report echoes."""

    piece: int
    parent: str | None
    address: str | None
    ticket: str
    lease: int = 0

    @property
    def source(self) -> str:
        return "registry" if self.parent is None else "peer"


@dataclass(frozen=True, slots=True)
class ScheduleAnswer:
    grants: Sequence[TicketedGrant]
    hashes: Mapping[int, str]
    ticket: str
    ticket_expires: int
    complete: bool


@dataclass(frozen=True, slots=True)
class TaskAnswer:
    digest: str
    size: int
    piece_size: int
    pieces: int
    hashes: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class RegistrationAnswer:
    ticket_key: bytes
    heartbeat_s: float
    prewarm: Sequence[tuple[str, str]]  # (id, image)
    tickets: int = 1  # the tickets minted for this node's peer server: 2 piece-bound


@dataclass
class RetiredBlob:
    """What is kept of a swarm whose details were dropped."""

    size: int
    hashes: dict[int, str]
    complete: set[str]
    figures: SwarmFigures


@dataclass
class ManifestRecord:
    digest: str
    media_type: str
    blobs: list[tuple[str, int]]
    nodes: set[str] = field(default_factory=set)  # nodes that served it
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class ImageFigures:
    image: ImageRef
    digest: str
    nodes_complete: int
    bytes_from_peers: int
    bytes_from_registry: int


@dataclass(frozen=True, slots=True)
class NodeFigures:
    name: str
    zone: str
    address: str
    upload_slots: int
    last_heartbeat: float  # unix seconds
    pieces_held: int
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True, slots=True)
class PrewarmNodeProgress:
    node: str
    state: Literal["pending", "pulling", "done"]  # pending: the manifest not served yet
    blobs_done: int
    blobs_total: int


@dataclass
class Prewarm:
    id: str
    image: ImageRef
    nodes: list[str]
    created: float
    # who declared it (``declare_prewarm``: one job per owner, replaced by the next wish);
    # None: asked for through the API (``POST .../p2p/prewarms``), kept until its TTL
    owner: str | None = None


@dataclass
class _Cluster:
    key: ClusterKey
    state: SwarmCluster
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    retired: OrderedDict[str, RetiredBlob] = field(default_factory=OrderedDict)
    retired_figures: SwarmFigures = field(default_factory=SwarmFigures)
    manifests: OrderedDict[tuple[str, str, str], ManifestRecord] = field(
        default_factory=OrderedDict
    )
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)
    prewarms: OrderedDict[str, Prewarm] = field(default_factory=OrderedDict)
    # pieces agents declared for blobs without a swarm: digest -> node -> pieces
    declared: OrderedDict[str, dict[str, list[int]]] = field(default_factory=OrderedDict)
    # open tasks: digest -> the nodes that opened one (after their access check) and have not
    # called ``done`` yet; only they are scheduled, and so given tickets, for that blob
    tasks: dict[str, set[str]] = field(default_factory=dict)
    # nodes whose peer server checks the piece a ticket names (their last registration said
    # ``tickets: 2``): their tickets open one piece; the others' open the whole blob
    piece_tickets: set[str] = field(default_factory=set)

    def wake(self) -> None:
        """Wake every long-poll waiting now; later ones wait for the next change."""
        self.changed.set()
        self.changed = asyncio.Event()


def _add(total: SwarmFigures, more: SwarmFigures) -> None:
    for name in SwarmFigures.__dataclass_fields__:
        setattr(total, name, getattr(total, name) + getattr(more, name))


class SwarmCoordinator:
    """The swarms of every cluster of this process. See the module docstring."""

    def __init__(
        self,
        *,
        secrets: SecretBox,
        clock: Clock,
        heartbeat_s: float = 10.0,
        lease_s: float = 30.0,
        idle_s: float = 600.0,
        max_swarms: int = 1024,
        max_retired: int = 4096,
        max_manifests: int = 1024,
        max_prewarms: int = 256,
        prewarm_ttl_s: float = 86400.0,
        rng: random.Random | None = None,
    ) -> None:
        self.secrets = secrets
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.idle_s = idle_s
        self.max_swarms = max_swarms
        self.max_retired = max_retired
        self.max_manifests = max_manifests
        self.max_prewarms = max_prewarms
        self.prewarm_ttl_s = prewarm_ttl_s
        # parent and piece order only, no secret: a seeded Random replays a test
        self.rng = rng or random.Random()  # noqa: S311
        self._clusters: dict[int, _Cluster] = {}
        # cluster id -> owner -> a wish declared while no agent of the cluster was registered
        # here (after a restart the controller declares before the agents' next heartbeat):
        # made a job when the first agent registers, oldest dropped past ``max_prewarms``
        self._waiting: dict[int, OrderedDict[str, tuple[ClusterKey, str, list[str]]]] = {}

    # ---- keys

    def agent_token(self, key: ClusterKey) -> str:
        raw = self.secrets.derive_key(f"p2p agent token\0{key.material}")
        return AGENT_TOKEN_PREFIX + raw.hex()

    def is_agent_token(self, key: ClusterKey, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.agent_token(key).encode())

    def ticket_key(self, key: ClusterKey, parent: str) -> bytes:
        """The key of ``parent``'s peer server: it verifies tickets with it, and only the
        coordinator and that node know it (one node's root cannot mint for another's server)."""
        return self.secrets.derive_key(f"p2p ticket key\0{key.material}\0{parent}")

    def ticket(
        self,
        key: ClusterKey,
        *,
        parent: str,
        node: str,
        digest: str,
        expires: int,
        piece: int | None = None,
    ) -> str:
        """What ``node`` shows ``parent``'s peer server to fetch piece ``piece`` of ``digest``
        (``{node}.{digest}.{piece}.{expires}.{mac}``), or with ``piece`` None any piece of it
        (``{node}.{digest}.{expires}.{mac}``: for peer servers that did not announce
        ``tickets: 2``, which refuse a fifth field)."""
        body = (
            f"{node}.{digest}.{expires}" if piece is None else f"{node}.{digest}.{piece}.{expires}"
        )
        mac = hmac.new(self.ticket_key(key, parent), body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    # ---- time

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _cluster(self, key: ClusterKey) -> _Cluster:
        c = self._clusters.get(key.id)
        if c is None or c.key != key:
            # lease ids from a random start: a report sent to the process before a restart
            # names no lease of this one
            state = SwarmCluster(lease_s=self.lease_s, first_lease=_LEASE_START.getrandbits(48))
            c = _Cluster(key=key, state=state)
            self._clusters[key.id] = c
        return c

    # ---- agent calls

    def register(
        self,
        key: ClusterKey,
        *,
        node: str,
        zone: str,
        address: str,
        upload_slots: int,
        held: Mapping[str, Sequence[int]] | None = None,
        tickets: int = 1,
    ) -> RegistrationAnswer:
        """Register or heartbeat. ``tickets``: the ticket version the node's peer server
        checks (2: the piece too); each heartbeat says it again, so an agent rolled back to
        one that does not gets whole-blob tickets from its next heartbeat on."""
        c = self._cluster(key)
        now = self._now()
        c.state.heartbeat(name=node, zone=zone, address=address, upload_slots=upload_slots, now=now)
        waiting = self._waiting.pop(key.id, None)
        for owner, (wished_key, image, nodes) in (waiting or {}).items():
            if wished_key == key:
                self.declare_prewarm(key, owner=owner, image=image, nodes=nodes)
        if tickets >= PIECE_TICKETS:
            c.piece_tickets.add(node)
        else:
            c.piece_tickets.discard(node)
        if held:
            for digest, pieces in held.items():
                if digest not in c.state.swarms and digest in c.retired:
                    self._revive(c, digest, now)
                if digest in c.state.swarms:
                    c.state.declare_held(node=node, digest=digest, pieces=pieces)
                else:
                    # no swarm yet (a coordinator that restarted): applied when one opens
                    c.declared.setdefault(digest, {})[node] = list(pieces)
                    c.declared.move_to_end(digest)
                    while len(c.declared) > self.max_retired:
                        c.declared.popitem(last=False)
            c.wake()
        jobs = [
            (p.id, str(p.image))
            for p in c.prewarms.values()
            if node in p.nodes and self._progress(c, p, node).state != "done"
        ]
        return RegistrationAnswer(
            ticket_key=self.ticket_key(key, node),
            heartbeat_s=self.heartbeat_s,
            prewarm=jobs,
            tickets=PIECE_TICKETS if node in c.piece_tickets else 1,
        )

    def open_task(self, key: ClusterKey, *, node: str, digest: str, size: int) -> TaskAnswer:
        """Open (or join) ``node``'s task for blob ``digest``. The caller has checked that the
        node may read the blob (``gaia.api.routes.p2p``): this is what lets ``schedule`` hand
        the node tickets for it."""
        c = self._cluster(key)
        c.state.known_node(node)
        now = self._now()
        if digest not in c.state.swarms:
            if digest in c.retired:
                self._revive(c, digest, now)
            else:
                self._make_room(c)
        swarm = c.state.open(digest=digest, size=size, now=now)
        for holder, pieces in c.declared.pop(digest, {}).items():
            c.state.declare_held(node=holder, digest=digest, pieces=pieces)
        c.tasks.setdefault(digest, set()).add(node)
        return TaskAnswer(
            digest=swarm.digest,
            size=swarm.size,
            piece_size=swarm.piece_size,
            pieces=swarm.pieces,
            hashes=dict(swarm.hashes),
        )

    async def schedule(
        self,
        key: ClusterKey,
        *,
        node: str,
        digest: str,
        want: int,
        wait_s: float,
        reports: Sequence[PieceOutcome] = (),
    ) -> ScheduleAnswer:
        """Leases for ``node`` now, or after waiting up to ``wait_s`` for a change. ``reports``
        (pieces the node finished since its last call) count first, as ``report`` would count
        them: the agent's usual call is "this piece is done, give me the next", one round trip.
        Only a node with an open task for the blob is scheduled (404 otherwise): a ticket is
        never handed out for a blob whose access check the node did not pass."""
        self._require_task(key, node=node, digest=digest)
        if reports:
            self.report(key, node=node, digest=digest, reports=reports)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            c = self._cluster(key)
            now = self._now()
            swarm = c.state.swarms.get(digest)
            if swarm is None and digest in c.retired:
                swarm = self._revive(c, digest, now)
            grants = c.state.schedule(node=node, digest=digest, want=want, now=now, rng=self.rng)
            swarm = c.state.swarm(digest)
            complete = swarm.holds_all(node)
            remaining = deadline - loop.time()
            if grants or complete or remaining <= 0:
                expires = int(now + 2 * self.lease_s)
                ticketed = [
                    TicketedGrant(
                        piece=g.piece,
                        parent=g.parent,
                        address=g.address,
                        ticket=""
                        if g.parent is None
                        else self.ticket(
                            key,
                            parent=g.parent,
                            node=node,
                            digest=digest,
                            expires=expires,
                            # a parent that checks pieces gets a ticket for this piece alone
                            piece=g.piece if g.parent in c.piece_tickets else None,
                        ),
                        lease=g.lease,
                    )
                    for g in grants
                ]
                return ScheduleAnswer(
                    grants=ticketed,
                    hashes=dict(swarm.hashes),
                    # agents of wire 1 show one ticket to every parent: the first peer's
                    # (the API asks for one assignment at a time for them)
                    ticket=next((g.ticket for g in ticketed if g.ticket), ""),
                    ticket_expires=expires,
                    complete=complete,
                )
            event = c.changed
            # on a timeout: one more look, then answer with what there is
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=remaining)

    def _require_task(self, key: ClusterKey, *, node: str, digest: str) -> None:
        c = self._cluster(key)
        c.state.known_node(node)
        if node not in c.tasks.get(digest, ()):
            raise NotFound(
                f"node '{node}' has no open task for blob {digest}: POST tasks first (it checks "
                "that the node may read the blob)"
            )

    def report(
        self, key: ClusterKey, *, node: str, digest: str, reports: Sequence[PieceOutcome]
    ) -> None:
        """Count ``node``'s piece outcomes (its open task for the blob required: a node that
        may not read a blob must not set its piece hashes)."""
        self._require_task(key, node=node, digest=digest)
        c = self._cluster(key)
        now = self._now()
        if digest not in c.state.swarms and digest in c.retired:
            self._revive(c, digest, now)
        swarm = c.state.swarm(digest)
        # the whole list is checked before any of it counts: a refused call changes nothing
        for r in reports:
            swarm.check_piece(r.piece)
            if r.ok and r.parent is None and not r.sha256:
                raise InvalidRequest(
                    f"piece {r.piece} from the registry: an ok report carries its sha256"
                )
        for r in reports:
            outcome = c.state.report(
                node=node,
                digest=digest,
                piece=r.piece,
                ok=r.ok,
                sha256=r.sha256,
                parent=r.parent,
                size=r.bytes,
                reason=r.reason,
                now=now,
                lease=r.lease,
            )
            if not outcome.accepted:
                log.warning(
                    "p2p %s: node %s reported piece %d of %s from the registry with a hash "
                    "that differs from the first report; refused",
                    key.name,
                    node,
                    r.piece,
                    digest,
                )
            if r.ok and outcome.accepted and not outcome.repeated:
                c.bytes_down[node] = c.bytes_down.get(node, 0) + r.bytes
                if r.parent is not None:
                    c.bytes_up[r.parent] = c.bytes_up.get(r.parent, 0) + r.bytes
        c.wake()

    def done(
        self, key: ClusterKey, *, node: str, digest: str, ok: bool, evicted: bool = False
    ) -> None:
        """The node's task for the blob ends: verified (``ok``; the open task required), or
        dropped or evicted (always taken: it only removes what the node holds)."""
        if ok and not evicted:
            self._require_task(key, node=node, digest=digest)
        c = self._cluster(key)
        now = self._now()
        opened = c.tasks.get(digest)
        if opened is not None:
            opened.discard(node)
            if not opened:
                del c.tasks[digest]
        if digest not in c.state.swarms:
            retired = c.retired.get(digest)
            if retired is None:
                raise NotFound(f"blob {digest} has no swarm: POST tasks first")
            if not ok or evicted:
                retired.complete.discard(node)
                return
            self._revive(c, digest, now)
        c.state.done(node=node, digest=digest, ok=ok, evicted=evicted, now=now)
        c.wake()

    def manifest(
        self,
        key: ClusterKey,
        *,
        node: str,
        image: ImageRef,
        digest: str,
        media_type: str,
        blobs: Sequence[tuple[str, int]],
    ) -> None:
        c = self._cluster(key)
        c.state.known_node(node)
        ident = (image.registry, image.repository, image.reference)
        record = c.manifests.get(ident)
        if record is None or record.digest != digest:
            record = ManifestRecord(digest=digest, media_type=media_type, blobs=list(blobs))
            c.manifests[ident] = record
        record.nodes.add(node)
        record.last_seen = self._now()
        c.manifests.move_to_end(ident)
        while len(c.manifests) > self.max_manifests:
            c.manifests.popitem(last=False)

    # ---- the sweep

    def sweep(self) -> None:
        """Expire leases and demotions, forget lapsed nodes, retire idle swarms, drop old
        prewarms; wake the long-polls of every cluster where something ended."""
        now = self._now()
        for c in self._clusters.values():
            changed = c.state.expire(now) > 0
            for name in c.state.lapsed(now=now, heartbeat_s=self.heartbeat_s):
                log.info("p2p %s: node %s missed its heartbeats; forgotten", c.key.name, name)
                self._forget(c, name)
                changed = True
            for digest, swarm in list(c.state.swarms.items()):
                if not swarm.leases and now - swarm.last_active >= self.idle_s:
                    self._retire(c, digest)
            for pid, p in list(c.prewarms.items()):
                if now - p.created > self.prewarm_ttl_s:
                    del c.prewarms[pid]
            if changed:
                c.wake()

    def _forget(self, c: _Cluster, name: str) -> None:
        c.state.forget(name)
        c.piece_tickets.discard(name)
        for nodes in c.declared.values():
            nodes.pop(name, None)
        for digest, opened in list(c.tasks.items()):
            opened.discard(name)
            if not opened:
                del c.tasks[digest]
        for retired in c.retired.values():
            retired.complete.discard(name)
        c.bytes_up.pop(name, None)
        c.bytes_down.pop(name, None)

    def _make_room(self, c: _Cluster) -> None:
        if len(c.state.swarms) < self.max_swarms:
            return
        idle = [s for s in c.state.swarms.values() if not s.leases]
        if not idle:
            raise TooManyRequests(
                f"cluster '{c.key.name}' has {self.max_swarms} swarms fetching now; "
                "fetch this blob from the registry"
            )
        self._retire(c, min(idle, key=lambda s: s.last_active).digest)

    def _retire(self, c: _Cluster, digest: str) -> None:
        swarm = c.state.drop(digest)
        if swarm is None:
            return
        complete = {n for n in swarm.complete if swarm.holds_all(n)}
        c.retired[digest] = RetiredBlob(
            size=swarm.size, hashes=dict(swarm.hashes), complete=complete, figures=swarm.figures
        )
        c.retired.move_to_end(digest)
        while len(c.retired) > self.max_retired:
            gone_digest, gone = c.retired.popitem(last=False)
            _add(c.retired_figures, gone.figures)
            c.tasks.pop(gone_digest, None)  # bounded with the blobs the coordinator knows

    def _revive(self, c: _Cluster, digest: str, now: float) -> Swarm:
        retired = c.retired.pop(digest)
        self._make_room(c)
        swarm = c.state.open(digest=digest, size=retired.size, now=now)
        swarm.hashes.update(retired.hashes)
        swarm.figures = retired.figures
        for name in retired.complete:
            if name in c.state.nodes:
                swarm.complete.add(name)
                for holders in swarm.holders:
                    holders.add(name)
        return swarm

    # ---- prewarms

    def create_prewarm(self, key: ClusterKey, *, image: ImageRef, nodes: Sequence[str]) -> str:
        c = self._cluster(key)
        if len(c.prewarms) >= self.max_prewarms:
            c.prewarms.popitem(last=False)
        pid = "pw-" + uuid.uuid4().hex[:16]
        c.prewarms[pid] = Prewarm(id=pid, image=image, nodes=list(nodes), created=self._now())
        return pid

    def cancel_prewarm(self, key: ClusterKey, pid: str) -> bool:
        """Call a prewarm off: heartbeats stop naming it. An agent already pulling it finishes
        that pull (its cache keeps what it fetched); one that was not told yet never starts.
        False when there was no such job."""
        c = self._clusters.get(key.id)
        if c is None or c.key != key:
            return False
        return c.prewarms.pop(pid, None) is not None

    def declare_prewarm(
        self, key: ClusterKey, *, owner: str, image: str, nodes: Collection[str]
    ) -> str | None:
        """``owner``'s whole prewarm wish (the port's ``ImagePrewarmer``, as the kubernetes
        adapter passes it on; ``SwarmPrewarms``): at most one job per owner. A wish for the
        image of the job in force keeps the job (same id: agents pulling it are not told of a
        new one) and takes the wish's nodes (a node left out is no longer named, one added is
        named from its next heartbeat), and the job's day (``prewarm_ttl_s``) starts again:
        a wish that stands is said again within the day (the app controller repeats it every
        ``PREWARM_REPEAT``), one that is not lapses; another image cancels it
        and creates another; no nodes withdraws it. Where no agent of the cluster is
        registered here, the wish waits for the first one to register (the controller
        declares a wish once, and after a restart it may do so before the agents' next
        heartbeat); until then the instances pull for themselves. An image that is no valid
        reference withdraws the job and is logged, not raised: a prewarm is best effort. The
        job's id, or None."""
        wanted = sorted(set(nodes))
        c = self._clusters.get(key.id)
        waiting = self._waiting.setdefault(key.id, OrderedDict())
        waiting.pop(owner, None)
        if c is None or c.key != key or not c.state.nodes:
            if wanted and image:
                waiting[owner] = (key, image, wanted)
                while len(waiting) > self.max_prewarms:
                    waiting.popitem(last=False)
            if not waiting:
                del self._waiting[key.id]
            if c is not None and c.key == key:
                for p in [p for p in c.prewarms.values() if p.owner == owner]:
                    del c.prewarms[p.id]
            return None
        if not waiting:
            del self._waiting[key.id]
        old = next((p for p in c.prewarms.values() if p.owner == owner), None)
        ref = None
        if wanted:
            try:
                ref = ImageRef.parse(image)
            except InvalidRequest as exc:
                log.warning("p2p %s: no prewarm for %s: %s", key.name, owner, exc)
        if old is not None and ref == old.image:
            old.nodes = wanted
            old.created = self._now()  # said again: its day starts again
            return old.id
        if old is not None:
            del c.prewarms[old.id]
        if ref is None:
            return None
        pid = self.create_prewarm(key, image=ref, nodes=wanted)
        c.prewarms[pid].owner = owner
        return pid

    def prewarm(self, key: ClusterKey, pid: str) -> tuple[Prewarm, list[PrewarmNodeProgress]]:
        c = self._cluster(key)
        p = c.prewarms.get(pid)
        if p is None:
            raise NotFound(f"prewarm '{pid}' not found")
        return p, [self._progress(c, p, node) for node in p.nodes]

    def _progress(self, c: _Cluster, p: Prewarm, node: str) -> PrewarmNodeProgress:
        """A node's progress on a prewarm: ``pending`` until it served the image's manifest
        (``manifests`` call with this registry, repository and reference), then the leaf blobs
        (a manifest's blobs, an index's manifests expanded by the manifests it also served)
        it reported ``done`` ok; ``done`` when all are."""
        ident = (p.image.registry, p.image.repository, p.image.reference)
        record = c.manifests.get(ident)
        if record is None or node not in record.nodes:
            return PrewarmNodeProgress(node, "pending", 0, 0)
        leaves = self._leaves(c, p.image, record, node, depth=0)
        if leaves is None:
            return PrewarmNodeProgress(node, "pulling", 0, 0)
        done = sum(1 for digest in leaves if self._holds_blob(c, node, digest))
        if done == len(leaves):
            return PrewarmNodeProgress(node, "done", done, done)
        return PrewarmNodeProgress(node, "pulling", done, len(leaves))

    def _leaves(
        self, c: _Cluster, image: ImageRef, record: ManifestRecord, node: str, *, depth: int
    ) -> list[str] | None:
        """The blobs under ``record`` (None while a child manifest was not served yet)."""
        out: list[str] = []
        for digest, _size in record.blobs:
            child = c.manifests.get((image.registry, image.repository, digest))
            if child is None and _is_manifest_list(record.media_type):
                return None  # an index: its child manifest not served by this node yet
            if child is not None and depth < MAX_LEAF_DEPTH:
                if node not in child.nodes:
                    return None
                more = self._leaves(c, image, child, node, depth=depth + 1)
                if more is None:
                    return None
                out += more
            else:
                out.append(digest)
        return out

    def _holds_blob(self, c: _Cluster, node: str, digest: str) -> bool:
        swarm = c.state.swarms.get(digest)
        if swarm is not None:
            return node in swarm.complete
        retired = c.retired.get(digest)
        return retired is not None and node in retired.complete

    # ---- figures

    def _blob_figures(self, c: _Cluster, digest: str) -> tuple[set[str], SwarmFigures] | None:
        swarm = c.state.swarms.get(digest)
        if swarm is not None:
            return swarm.complete, swarm.figures
        retired = c.retired.get(digest)
        if retired is not None:
            return retired.complete, retired.figures
        return None

    def images(self, key: ClusterKey) -> list[ImageFigures]:
        """Every image served in the cluster (as ``manifests`` calls named it), by name."""
        c = self._cluster(key)
        out: list[ImageFigures] = []
        for (registry, repository, reference), record in c.manifests.items():
            image = ImageRef(registry, repository, reference)
            holders: set[str] | None = None
            peers = registry_bytes = 0
            for digest in self._all_blobs(c, image, record, depth=0):
                found = self._blob_figures(c, digest)
                complete, figures = found if found else (set(), SwarmFigures())
                holders = set(complete) if holders is None else holders & complete
                peers += figures.bytes_from_peers
                registry_bytes += figures.bytes_from_registry
            out.append(
                ImageFigures(
                    image=image,
                    digest=record.digest,
                    nodes_complete=len(holders or ()),
                    bytes_from_peers=peers,
                    bytes_from_registry=registry_bytes,
                )
            )
        return sorted(out, key=lambda i: str(i.image))

    def _all_blobs(
        self, c: _Cluster, image: ImageRef, record: ManifestRecord, *, depth: int
    ) -> list[str]:
        out: list[str] = []
        for digest, _size in record.blobs:
            child = c.manifests.get((image.registry, image.repository, digest))
            if child is not None and depth < MAX_LEAF_DEPTH:
                out += self._all_blobs(c, image, child, depth=depth + 1)
            else:
                out.append(digest)
        return out

    def nodes(self, key: ClusterKey) -> list[NodeFigures]:
        c = self._cluster(key)
        out = []
        for n in c.state.nodes.values():
            held = sum(s.held_by(n.name) for s in c.state.swarms.values())
            held += sum(_pieces_of(r.size) for r in c.retired.values() if n.name in r.complete)
            out.append(
                NodeFigures(
                    name=n.name,
                    zone=n.zone,
                    address=n.address,
                    upload_slots=n.upload_slots,
                    last_heartbeat=n.last_seen,
                    pieces_held=held,
                    bytes_up=c.bytes_up.get(n.name, 0),
                    bytes_down=c.bytes_down.get(n.name, 0),
                )
            )
        return sorted(out, key=lambda n: n.name)

    def figures(self) -> Iterable[ClusterP2PFigures]:
        for c in self._clusters.values():
            total = SwarmFigures()
            _add(total, c.retired_figures)
            for r in c.retired.values():
                _add(total, r.figures)
            for s in c.state.swarms.values():
                _add(total, s.figures)
            yield ClusterP2PFigures(
                cluster=c.key.name,
                figures=total,
                swarms=len(c.state.swarms),
                agents=len(c.state.nodes),
            )


def _pieces_of(size: int) -> int:
    return piece_count(size, piece_size(size))


def _is_manifest_list(media_type: str) -> bool:
    return media_type in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )


@dataclass(frozen=True, slots=True)
class SwarmPrewarms:
    """One cluster's prewarm jobs as the kubernetes adapter's ``PrewarmSink``
    (``gaia.providers.port``): how a real cluster pre-pulls, the platform wiring it
    (``ProviderRegistry.send_prewarms_to``) since the adapter may not import controllers."""

    coordinator: SwarmCoordinator
    key: ClusterKey

    def declare_prewarm(self, *, owner: str, image: str, nodes: Collection[str]) -> None:
        self.coordinator.declare_prewarm(self.key, owner=owner, image=image, nodes=nodes)


class SwarmSweep(LoopService):
    """Every ``interval`` seconds: ``SwarmCoordinator.sweep``."""

    name = "p2p-sweep"

    def __init__(self, *, coordinator: SwarmCoordinator, interval: float = 5.0) -> None:
        super().__init__(interval=interval)
        self.coordinator = coordinator

    async def run_once(self) -> None:
        self.coordinator.sweep()
