"""``HttpCoordinator``: the agent's ``Coordinator`` (wire.py) over HTTP, to Gaia's API.

Every call is one JSON ``POST`` under ``{origin}/api/v1/clusters/{cluster}/p2p/`` with the
cluster's agent token (docs/p2p.md, "Wire contract: agent → coordinator"). Failures come in two
kinds, because the agent answers them differently:

- ``CoordinatorUnavailable`` (wire.py): the coordinator could not be reached (after
  ``RETRY_PAUSES_S``: a connection the server closed as the request went out is tried again),
  timed out, answered 5xx or 429 (too many swarms): the agent fetches from the registry as if
  there were no P2P.
- ``CoordinatorRefused``: a 4xx that says the request itself is wrong (401: the token; 404: the
  node is not registered or the blob has no swarm, so register or open the task again; 422: a
  field out of bounds). Retrying the same request will not help.

``schedule`` is a long poll: its read timeout is ``wait_s`` plus ``timeout``.

The token proves the agent's node (docs/p2p.md, "Threat model"): the pod's projected
ServiceAccount token, which the kubelet rewrites well before it expires (``TokenFile`` reads the
file again when it changed, so a long-lived agent never sends an expired one), the node's own
token, or the cluster-wide one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from gaia.node.p2p.wire import (
    AgentInfo,
    Assignment,
    BlobRef,
    CoordinatorUnavailable,
    ManifestSeen,
    PieceReport,
    Registration,
    Schedule,
    Task,
)

MAX_REPORTS = 256
# the tickets this agent's peer server checks (docs/p2p.md, "Wire versions"): the piece too
PIECE_TICKETS = 2
# pauses between the tries of a request that got no answer at all (connection refused, reset or
# closed before the response); a timeout is not retried
RETRY_PAUSES_S = (0.2, 1.0)
# idle connections are dropped by the client after this, before a server's keep-alive timeout
# (uvicorn's default is 5 s) can close one under a request
KEEPALIVE_S = 2.0


class TokenFile:
    """A token kept in a file that may be rewritten (a projected ServiceAccount token):
    ``token()`` reads it again when its modification time or size changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._token = ""

    def __call__(self) -> str:
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size)
            if seen != self._seen:
                self._token = self.path.read_text().strip()
                self._seen = seen
        except OSError as exc:
            # the kubelet swaps the file through a symlink: a read between its steps fails once
            if not self._token:
                raise CoordinatorUnavailable(f"cannot read the agent's token: {exc}") from exc
        return self._token


class CoordinatorRefused(Exception):
    """The coordinator refused the request (4xx): ``status``, ``code`` and its ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"the coordinator refused the request ({status} {code}): {message}")
        self.status = status
        self.code = code
        self.message = message


class HttpCoordinator:
    def __init__(
        self,
        *,
        origin: str,
        cluster: str,
        token: str | Callable[[], str],
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base = f"{origin.rstrip('/')}/api/v1/clusters/{cluster}/p2p"
        self.timeout = timeout
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=16, keepalive_expiry=KEEPALIVE_S
            ),
        )
        self._token = token
        # announce piece tickets (``tickets``) until a Gaia from before them refuses the field
        # (422); a Gaia that answers with ``tickets`` knows it, so it is announced again
        self.announce_tickets = True

    def _headers(self) -> dict[str, str]:
        token = self._token if isinstance(self._token, str) else self._token()
        return {"Authorization": f"Bearer {token}"}

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpCoordinator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, path: str, body: dict[str, Any], *, read_s: float | None = None) -> Any:
        timeout = httpx.Timeout(self.timeout, read=read_s or self.timeout)
        for attempt, pause in enumerate((*RETRY_PAUSES_S, None)):
            try:
                r = await self._client.post(
                    f"{self.base}/{path}", json=body, headers=self._headers(), timeout=timeout
                )
                break
            except httpx.TimeoutException as exc:  # it may have been served: no retry here
                raise CoordinatorUnavailable(
                    f"the coordinator did not answer in time: {exc!r}", overloaded=True
                ) from exc
            except httpx.TransportError as exc:
                # refused, reset, or a kept-alive connection the server closed as the request
                # went out ("Server disconnected without sending a response"): the request was
                # not answered, and a blip must not send a whole blob to the registry
                if pause is None:
                    raise CoordinatorUnavailable(
                        f"the coordinator did not answer ({attempt + 1} tries): {exc!r}"
                    ) from exc
                await asyncio.sleep(pause)
        if r.status_code >= 500 or r.status_code == 429:
            raise CoordinatorUnavailable(
                f"the coordinator answered {r.status_code}: {r.text[:200]}", overloaded=True
            )
        if r.status_code >= 400:
            try:
                err = r.json()
                code, message = str(err.get("code", "")), str(err.get("message", r.text[:200]))
            except ValueError:
                code, message = "", r.text[:200]
            raise CoordinatorRefused(r.status_code, code, message)
        try:
            return r.json()
        except ValueError as exc:
            raise CoordinatorUnavailable("the coordinator answered something not JSON") from exc

    async def register(
        self, agent: AgentInfo, held: Mapping[str, Sequence[int]] | None = None
    ) -> Registration:
        body: dict[str, Any] = {
            "node": agent.node,
            "zone": agent.zone,
            "address": agent.address,
            "upload_slots": agent.upload_slots,
        }
        if held:
            body["pieces_held"] = {digest: list(pieces) for digest, pieces in held.items()}
        if self.announce_tickets:
            body["tickets"] = PIECE_TICKETS
        try:
            out = await self._post("agents", body)
        except CoordinatorRefused as exc:
            if exc.status != 422 or "tickets" not in body:
                raise
            # a Gaia from before piece tickets (its bodies take no unknown field): register
            # as the agents it knows; it mints whole-blob tickets, which the peer server takes
            self.announce_tickets = False
            del body["tickets"]
            out = await self._post("agents", body)
        if "tickets" in out:
            self.announce_tickets = True
        return Registration(
            ticket_key=bytes.fromhex(out["ticket_key"]),
            heartbeat_s=float(out["heartbeat_s"]),
            prewarm=tuple((job["id"], job["image"]) for job in out["prewarm"]),
            registries={
                host: (str(r["url"]), str(r["username"]), str(r["password"]))
                for host, r in (out.get("registries") or {}).items()
            },
            registry_cas={
                host: str(r["ca_pem"])
                for host, r in (out.get("registries") or {}).items()
                if r.get("ca_pem")
            },
            tickets=int(out.get("tickets") or 1),
        )

    async def open_task(self, node: str, blob: BlobRef) -> Task:
        out = await self._post(
            "tasks",
            {
                "node": node,
                "registry": blob.registry,
                "repository": blob.repository,
                "digest": blob.digest,
                "size": blob.size,
            },
        )
        return Task(
            digest=out["digest"],
            size=int(out["size"]),
            piece_size=int(out["piece_size"]),
            pieces=int(out["pieces"]),
            hashes=_hashes(out["hashes"]),
        )

    async def schedule(
        self,
        node: str,
        digest: str,
        *,
        want: int,
        wait_s: float,
        reports: Sequence[PieceReport] = (),
    ) -> Schedule:
        if len(reports) > MAX_REPORTS:  # the API takes 256 at a time: the rest on their own
            await self.report(node, digest, reports[MAX_REPORTS:])
            reports = reports[:MAX_REPORTS]
        # wire 2: each assignment carries its own ticket, for its own parent
        body: dict[str, Any] = {"node": node, "wire": 2, "want": want, "wait_s": wait_s}
        if reports:
            body["reports"] = [_report_body(r) for r in reports]
        out = await self._post(f"tasks/{digest}/schedule", body, read_s=wait_s + self.timeout)
        return Schedule(
            assignments=tuple(
                Assignment(
                    piece=int(a["piece"]),
                    source=a["source"],
                    parent=a["parent"],
                    address=a["address"],
                    ticket=str(a.get("ticket") or ""),
                    lease=a.get("lease"),
                )
                for a in out["assignments"]
            ),
            hashes=_hashes(out["hashes"]),
            ticket=out["ticket"],
            ticket_expires=float(out["ticket_expires"]),
            complete=bool(out["complete"]),
        )

    async def report(self, node: str, digest: str, reports: Sequence[PieceReport]) -> None:
        for start in range(0, len(reports), MAX_REPORTS):  # the API takes 256 at a time
            await self._report(node, digest, reports[start : start + MAX_REPORTS])

    async def _report(self, node: str, digest: str, reports: Sequence[PieceReport]) -> None:
        await self._post(
            f"tasks/{digest}/reports",
            {"node": node, "reports": [_report_body(r) for r in reports]},
        )

    async def done(
        self, node: str, digest: str, *, ok: bool, reason: str | None = None, evicted: bool = False
    ) -> None:
        await self._post(
            f"tasks/{digest}/done", {"node": node, "ok": ok, "reason": reason, "evicted": evicted}
        )

    async def manifest(self, node: str, seen: ManifestSeen) -> None:
        await self._post(
            "manifests",
            {
                "node": node,
                "registry": seen.registry,
                "repository": seen.repository,
                "reference": seen.reference,
                "digest": seen.digest,
                "media_type": seen.media_type,
                "blobs": [{"digest": d, "size": s} for d, s in seen.blobs],
            },
        )


def _hashes(raw: Mapping[str, str]) -> dict[int, str]:
    return {int(piece): sha for piece, sha in raw.items()}


def _report_body(r: PieceReport) -> dict[str, Any]:
    body = {
        "piece": r.piece,
        "ok": r.ok,
        "sha256": r.sha256,
        "parent": r.parent,
        "bytes": r.bytes,
        "reason": r.reason,
    }
    if r.lease is not None:  # only what the answer gave: a Gaia that sent none takes none
        body["lease"] = r.lease
    return body
