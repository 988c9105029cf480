"""Bodies of P2P image distribution (docs/p2p.md): the agents' calls and the users' views.

The agent-facing bodies are the wire contract of docs/p2p.md, bounded at the edge: digests are
``sha256:<64 hex>``, repositories follow the OCI distribution spec's name grammar, sizes are at
most 64 GiB, ``want`` at most 16, ``wait_s`` at most 10 s, report and blob lists at most 256.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gaia.api.schemas.base import Strict

MAX_BLOB_BYTES = 64 << 30
MAX_PIECES = 4096  # 64 GiB in pieces of 16 MiB
MAX_LIST = 256

DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
HEX_SHA256_PATTERN = r"^[0-9a-f]{64}$"
# the OCI distribution spec's <name>: path components of lower-case alphanumerics joined by
# one '.', one or two '_', or any number of '-', separated by '/'
REPOSITORY_PATTERN = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$"
# a tag (the spec's grammar) or a digest
REFERENCE_PATTERN = r"^([a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|sha256:[0-9a-f]{64})$"
REGISTRY_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$"
NODE_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ZONE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$"
ADDRESS_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$"
MEDIA_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$"
REASON_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"

Digest = Annotated[str, Field(pattern=DIGEST_PATTERN, max_length=71)]
HexSha256 = Annotated[str, Field(pattern=HEX_SHA256_PATTERN, max_length=64)]
NodeName = Annotated[str, Field(min_length=1, max_length=253, pattern=NODE_PATTERN)]
Registry = Annotated[str, Field(min_length=1, max_length=255, pattern=REGISTRY_PATTERN)]
Repository = Annotated[str, Field(min_length=1, max_length=255, pattern=REPOSITORY_PATTERN)]
Reference = Annotated[str, Field(min_length=1, max_length=128, pattern=REFERENCE_PATTERN)]
BlobSize = Annotated[int, Field(ge=0, le=MAX_BLOB_BYTES)]
PieceIndex = Annotated[int, Field(ge=0, lt=MAX_PIECES)]
PieceList = Annotated[list[PieceIndex], Field(max_length=MAX_PIECES)]


# ---------------------------------------------------------------- agent → coordinator


class AgentIn(Strict):
    node: NodeName
    zone: str = Field(default="", max_length=63, pattern=ZONE_PATTERN)
    address: str = Field(max_length=261, pattern=ADDRESS_PATTERN, description="peer host:port")
    upload_slots: int = Field(ge=0, le=256)
    pieces_held: dict[Digest, PieceList] | None = Field(
        default=None, max_length=MAX_LIST, description="blob -> pieces held"
    )
    tickets: int = Field(
        default=1,
        ge=1,
        le=2,
        description="the tickets this node's peer server checks: 2, the piece a ticket names "
        "too (tickets for it then open one piece); 1 (agents before that): the blob only",
    )


class PrewarmJobOut(Strict):
    id: str
    image: str


class AgentRegistryOut(Strict):
    url: str
    username: str
    password: str
    ca_pem: str | None = Field(
        default=None, description="the private CA that signs the registry's certificate"
    )


class AgentOut(Strict):
    ticket_key: str = Field(
        description="hex of this node's own 32-byte ticket key: its peer server verifies the "
        "tickets other nodes show with it (no other node knows it)"
    )
    heartbeat_s: float
    prewarm: list[PrewarmJobOut]
    tickets: int = Field(
        default=1,
        description="the tickets minted for this node's peer server: 2 piece-bound (it "
        "announced it checks them, and may then refuse the others), 1 whole-blob",
    )
    registries: dict[str, AgentRegistryOut] = Field(
        default_factory=dict,
        description="host[:port] -> how this node reaches the platform's registry, with the "
        "node's own account (pulls what the businesses with an instance on the node may pull)",
    )


class TaskIn(Strict):
    node: NodeName
    registry: Registry
    repository: Repository
    digest: Digest
    size: BlobSize


class TaskOut(Strict):
    digest: str
    size: int
    piece_size: int
    pieces: int
    hashes: dict[int, str] = Field(description="piece -> SHA-256 hex, as far as known")


class AssignmentOut(Strict):
    piece: int
    source: Literal["peer", "registry"]
    parent: str | None
    address: str | None
    ticket: str = Field(
        default="",
        description="what to show this parent's peer server (X-Gaia-Ticket): MACed with the "
        "parent's own key; empty for the registry",
    )
    lease: int = Field(
        default=0,
        description="the assignment's id: its report echoes it, so a report sent twice (a "
        "call repeated when its answer was lost) counts once",
    )


class ScheduleOut(Strict):
    assignments: list[AssignmentOut]
    hashes: dict[int, str]
    ticket: str = Field(
        description="wire 1 (deprecated): the first peer assignment's ticket; agents of wire 1 "
        "get one assignment per call, so it is that parent's"
    )
    ticket_expires: int = Field(description="unix seconds")
    complete: bool


class PieceReportIn(Strict):
    piece: PieceIndex
    ok: bool
    sha256: HexSha256 | None = None
    parent: NodeName | None = Field(default=None, description="null: the registry")
    bytes: int = Field(default=0, ge=0, le=16 << 20)
    reason: str | None = Field(default=None, pattern=REASON_PATTERN, max_length=64)
    lease: int | None = Field(
        default=None,
        ge=0,
        le=(1 << 53) - 1,
        description="the assignment's lease, as the schedule answer gave it: the same report "
        "again changes nothing; null (older agents): counted every time",
    )


class ReportsIn(Strict):
    node: NodeName
    reports: list[PieceReportIn] = Field(max_length=MAX_LIST)


class ScheduleIn(Strict):
    node: NodeName
    wire: int = Field(
        default=1,
        ge=1,
        le=2,
        description="2: the agent shows each assignment's own ticket; 1 (agents before tickets "
        "per parent): one ticket per answer, so at most one assignment per call",
    )
    want: int = Field(ge=1, le=16)
    wait_s: float = Field(default=0, ge=0, le=10)
    reports: list[PieceReportIn] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="pieces finished since the last call, counted before scheduling (as a "
        "``reports`` call would): one round trip per piece instead of two",
    )


class DoneIn(Strict):
    node: NodeName
    ok: bool
    reason: str | None = Field(default=None, pattern=REASON_PATTERN, max_length=64)
    evicted: bool = False


class BlobIn(Strict):
    digest: Digest
    size: BlobSize


class ManifestIn(Strict):
    node: NodeName
    registry: Registry
    repository: Repository
    reference: Reference
    digest: Digest
    media_type: str = Field(max_length=255, pattern=MEDIA_TYPE_PATTERN)
    blobs: list[BlobIn] = Field(default_factory=list, max_length=MAX_LIST)


class EmptyOut(Strict):
    pass


# ---------------------------------------------------------------- users


class AgentTokenOut(Strict):
    token: str = Field(
        description="for the agents' Secret: the node's own token when a node was asked for, "
        "else the cluster-wide token (it speaks for any node)"
    )
    node: str | None = Field(default=None, description="the node the token proves; null: any")


class P2PImageOut(Strict):
    registry: str
    repository: str
    reference: str
    digest: str
    nodes_complete: int = Field(description="nodes holding every blob of the image")
    bytes_from_peers: int
    bytes_from_registry: int


class P2PNodeOut(Strict):
    name: str
    zone: str
    address: str
    upload_slots: int
    last_heartbeat: float = Field(description="unix seconds")
    pieces_held: int
    bytes_up: int
    bytes_down: int


class PrewarmIn(Strict):
    image: str = Field(
        min_length=3,
        max_length=512,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$",
        description="registry/repository:tag or registry/repository@sha256:...",
    )
    nodes: list[NodeName] = Field(min_length=1, max_length=1000)


class PrewarmCreatedOut(Strict):
    id: str


class PrewarmNodeOut(Strict):
    node: str
    state: Literal["pending", "pulling", "done"]
    blobs_done: int
    blobs_total: int


class PrewarmOut(Strict):
    id: str
    image: str
    nodes: list[PrewarmNodeOut]
