"""The agent's side of the coordinator's wire contract (docs/p2p.md), as Python types.

``Coordinator`` is what the agent's downloader needs; ``gaia.node.p2p.client.HttpCoordinator``
speaks it over HTTP to Gaia. Tests of the agent run the real coordinator behind the same
protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class AgentInfo:
    node: str
    zone: str
    address: str  # host:port of this agent's peer server
    upload_slots: int


@dataclass(frozen=True)
class Registration:
    ticket_key: bytes  # this node's own: its peer server verifies tickets with it alone
    heartbeat_s: float
    prewarm: Sequence[tuple[str, str]] = ()  # (prewarm id, image reference)
    # host[:port] -> (url, username, password): the platform's registry, with this node's account
    registries: Mapping[str, tuple[str, str, str]] = field(default_factory=dict, repr=False)
    # host[:port] -> the PEM bundle of the private CA that signs that registry's certificate
    registry_cas: Mapping[str, str] = field(default_factory=dict, repr=False)
    # the tickets the coordinator mints for this node's peer server: 2 piece-bound (it heard
    # this agent announce it checks them), 1 whole-blob (a Gaia from before piece tickets)
    tickets: int = 1


@dataclass(frozen=True)
class BlobRef:
    registry: str  # host[:port], as containerd's ns= names it
    repository: str
    digest: str  # sha256:<64 hex>
    size: int


@dataclass(frozen=True)
class Task:
    digest: str
    size: int
    piece_size: int
    pieces: int
    hashes: Mapping[int, str]  # piece -> sha256 hex, as far as known


@dataclass(frozen=True)
class Assignment:
    piece: int
    source: Literal["peer", "registry"]
    parent: str | None = None
    address: str | None = None
    ticket: str = ""  # for the parent's peer server, MACed with that parent's key
    lease: int | None = None  # the assignment's id (None from a Gaia that sends none)


@dataclass(frozen=True)
class Schedule:
    assignments: Sequence[Assignment]
    hashes: Mapping[int, str]
    ticket: str  # wire 1's one ticket per answer (the assignments' own tickets since wire 2)
    ticket_expires: float
    complete: bool  # the coordinator already counts this node as holding every piece


@dataclass(frozen=True)
class PieceReport:
    piece: int
    ok: bool
    sha256: str | None = None
    parent: str | None = None  # None: fetched from the registry
    bytes: int = 0
    reason: str | None = None  # "corrupt", "unreachable", "refused", "timeout", ...
    lease: int | None = None  # the assignment's lease, echoed: a report sent twice counts once


@dataclass(frozen=True)
class ManifestSeen:
    registry: str
    repository: str
    reference: str
    digest: str
    media_type: str
    blobs: Sequence[tuple[str, int]] = field(default_factory=tuple)  # (digest, size)


class CoordinatorUnavailable(Exception):
    """The coordinator cannot be reached or answered 5xx: the agent falls back to the registry.
    ``overloaded``: it is there but slow or busy (a timeout, 5xx, 429), so the agent waits for
    it a while (``Downloader.coordinator_patience_s``) before falling back; unreachable (refused,
    reset) it falls back at once."""

    def __init__(self, message: str, *, overloaded: bool = False) -> None:
        super().__init__(message)
        self.overloaded = overloaded


class Coordinator(Protocol):
    async def register(
        self, agent: AgentInfo, held: Mapping[str, Sequence[int]] | None = None
    ) -> Registration: ...

    async def open_task(self, node: str, blob: BlobRef) -> Task: ...

    async def schedule(
        self,
        node: str,
        digest: str,
        *,
        want: int,
        wait_s: float,
        reports: Sequence[PieceReport] = (),
    ) -> Schedule:
        """Up to ``want`` assignments; ``reports`` (pieces finished since the last call) are
        counted first, so "done, next" is one round trip."""
        ...

    async def report(self, node: str, digest: str, reports: Sequence[PieceReport]) -> None: ...

    async def done(
        self, node: str, digest: str, *, ok: bool, reason: str | None = None, evicted: bool = False
    ) -> None: ...

    async def manifest(self, node: str, seen: ManifestSeen) -> None: ...
